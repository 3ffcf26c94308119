"""The tiny interface of `metareason reproduce`: budgets, units of work, experiments and claims.

An experiment (E1..E12 of PAPER.md) is data: a name, the paper's claims, a function that lists
the units of work a budget needs, and a function that turns the units' raw results into one
`ClaimResult` per claim. A unit is one resumable piece of work (one training arm at one seed, one
evaluation, one probe) with a globally unique key and JSON settings; the runner
(`metareason.reproduce.runner`) runs each unit once, stores its raw result under the key, skips
it when it is already there with the same settings, and refuses it when the settings changed.
Units shared by several experiments (the base model, the long-SFT arm) share a key, so they run
once.

The verdict rule of every claim is written here, in code, before any run: `verdict` below.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from metareason.stats import Interval

__all__ = ["BUDGETS", "Budget", "Unit", "Claim", "ClaimResult", "Experiment", "VERDICTS", "verdict", "get_budget"]

VERDICTS = ("supported", "contradicted", "inconclusive")


@dataclasses.dataclass(frozen=True)
class Budget:
    """What one `--budget` spends. Experiments read these and scale their own steps by `scale`.

    name: "smoke" (the whole path in minutes, numbers meaningless), "lab" (the real run on 2 CPU
    cores), "full" (the paper's scale: commands only where no model is present).
    seeds: training seeds of every arm; samples: answers sampled per question (temperature 1);
    ks: the k of Pass@k / mG-Pass@k; questions: test questions per family; probe_questions:
    trajectories probed per group (E1-E5); scale: multiplier of every experiment's lab step counts."""

    name: str
    seeds: tuple[int, ...]
    samples: int
    ks: tuple[int, ...]
    questions: int
    probe_questions: int
    scale: float

    def steps(self, lab_steps: int, minimum: int = 2) -> int:
        """An experiment's step count at this budget (its `lab` count times `scale`)."""
        return max(minimum, int(round(lab_steps * self.scale)))


BUDGETS = {
    "smoke": Budget("smoke", seeds=(0, 1), samples=4, ks=(1, 4), questions=6, probe_questions=4, scale=0.04),
    "lab": Budget("lab", seeds=(0, 1, 2), samples=32, ks=(1, 4, 8, 16), questions=32, probe_questions=32,
                  scale=1.0),
    "full": Budget("full", seeds=(0, 1, 2), samples=32, ks=(1, 4, 8, 16), questions=0, probe_questions=0,
                   scale=0.0),
}


def get_budget(name: str) -> Budget:
    if name not in BUDGETS:
        raise ValueError(f"unknown budget {name!r} (known: {', '.join(BUDGETS)})")
    return BUDGETS[name]


@dataclasses.dataclass(frozen=True)
class Unit:
    """One resumable piece of work.

    key: globally unique, path-like ("sft-long/seed-1", "eval/sft-long/seed-1"); the runner gives
    it the folder WORK/<key> and stores its result as RAW/<key>.json.
    settings: JSON-able; everything its result depends on (a changed value is refused on resume).
    run(folder, inputs) -> raw: does the work in `folder` (the unit may resume there after an
    interruption) and returns a JSON-able dict; `inputs` maps each key of `needs` to that unit's
    raw result (e.g. {"run": "<path of the trained model>"})."""

    key: str
    settings: Mapping[str, Any]
    run: Callable[[Path, Mapping[str, dict]], dict]
    needs: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of the paper, with the rule that decides it (fixed before any run).

    id: "E7a"; paper: the statement; paper_number: the paper's number(s) as text; measure: what
    we measure for it, in words (e.g. "Pass@8 of SFT->GRPO minus zero-RL GRPO, paired over
    questions, two-level bootstrap over seeds x questions"); direction: +1 when the paper's claim
    says the measured difference is positive, -1 negative."""

    id: str
    paper: str
    paper_number: str
    measure: str
    direction: int = 1


@dataclasses.dataclass(frozen=True)
class ClaimResult:
    """A claim's measured outcome (one report row)."""

    claim: Claim
    measured: Interval | None
    """The measured difference (or statistic) with its interval; None when not measured."""
    verdict: str
    n: int = 0
    """Questions (or trajectories) per seed behind `measured`."""
    seeds: int = 0
    note: str = ""
    """Caveats: the likely reason of a disagreement, a model at chance, what was not measured."""
    figure: str = ""
    """Path of the figure, relative to the report folder ("" none)."""
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """More numbers for the report's detail section (JSON-able)."""

    def as_dict(self) -> dict:
        return {"id": self.claim.id, "paper": self.claim.paper, "paper_number": self.claim.paper_number,
                "measure": self.claim.measure, "direction": self.claim.direction,
                "measured": self.measured.as_dict() if self.measured is not None else None,
                "verdict": self.verdict, "n": self.n, "seeds": self.seeds, "note": self.note,
                "figure": self.figure, "extra": dict(self.extra)}


@dataclasses.dataclass(frozen=True)
class Experiment:
    """E1..E12: units(budget) lists the work; summarise(budget, raws, figures) -> one result per
    claim (raws: key -> raw result of every unit `units` listed; figures: a folder to write PNGs in)."""

    name: str
    title: str
    claims: tuple[Claim, ...]
    units: Callable[[Budget], Sequence[Unit]]
    summarise: Callable[[Budget, Mapping[str, dict], Path], Sequence[ClaimResult]]


def verdict(measured: Interval | None, direction: int, *, at_chance: bool = False) -> str:
    """The rule, fixed before any run: "supported" when the 95% interval of the measured difference
    lies entirely on the paper's side of 0, "contradicted" when it lies entirely on the other side,
    else "inconclusive". A measurement on a model at chance (`at_chance`) cannot support a claim
    (it is "inconclusive" unless it contradicts it); no interval (fewer than 2 values, NaN) is
    "inconclusive"."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    if measured is None or not (math.isfinite(measured.low) and math.isfinite(measured.high)):
        return "inconclusive"
    low, high = (measured.low, measured.high) if direction == 1 else (-measured.high, -measured.low)
    if low > 0:
        return "inconclusive" if at_chance else "supported"
    if high < 0:
        return "contradicted"
    return "inconclusive"
