"""E4 and E12 between the two modes of ONE lab model (/think and /no_think, Qwen3's switches).

The probe experiments' lab model (`metareason.reproduce.models.lab_model`, key "lab-model/seed-S")
is trained on `two_mode_lab(seed)`: long trajectories under /think, a share of summaries under
/think and a share of empty thinking blocks under /no_think. Per seed one unit probes it
("e4/seed-S", "e12/seed-S", `metareason.probe.efficiency.mode_efficiency`) and returns per-question
raw numbers; `summarise` pools them as float[seeds, questions] and decides each claim with the
two-level bootstrap (`metareason.stats.bootstrap_interval`) and `base.verdict`.

Claims (direction and measure fixed here, before any run):
- E4a "no-thinking stalls higher": answer NLL of /no_think (answer forced at once) minus /think
  (after the model's full own thinking), paired over questions; direction +1.
- E4b "the end-of-thinking delimiter causes a sharp drop": at the end of the own thinking, the
  answer NLL with `</think>` before the template minus without it, paired; direction -1.
- E12 "summaries beat no-thinking at equal token counts": accuracy of the summary under /think
  minus /no_think, paired over questions; direction +1 (the matched-token comparison with the
  model's own thinking cut at the summary's length and the budget forcing curve are reported).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from metareason.probe.analysis import delimiter_effect
from metareason.probe.figures import pyplot, save_figure
from metareason.probe.efficiency import mode_efficiency
from metareason.reproduce.base import Budget, Claim, ClaimResult, Experiment, Unit, verdict
from metareason.reproduce.models import TWO_MODE_MIX, lab_model, two_mode_lab
from metareason.runs import load
from metareason.stats import bootstrap_interval, rate_interval
from metareason.tasks.lab import lab_records

__all__ = ["TWO_MODE_MIX", "E12_BUDGETS", "two_mode_lab", "probe_unit", "E4", "E12", "summarise_e4", "summarise_e12"]

E12_BUDGETS = (4, 8, 16, 32, 64, 128)
"""Budget forcing's thinking budgets (tokens) of E12's curve."""

MAX_THINKING = 256
"""The most thinking tokens a probe unit lets the model write (the lab model trains at seq_len 288)."""

#: The mean /think accuracy below which a model counts as at chance (cannot support a claim).
AT_CHANCE = 0.1


def _questions(budget: Budget) -> int:
    return max(2, budget.questions)


def probe_unit(budget: Budget, seed: int, kind: str) -> Unit:
    """The unit "e4/seed-S" (kind "e4": no budgets, no summaries) or "e12/seed-S" (kind "e12":
    `E12_BUDGETS` and the lab's summaries) on the test questions of the model's own lab. Raw:
    `mode_efficiency`'s dict plus "ids" (the questions, in order)."""
    if kind not in ("e4", "e12"):
        raise ValueError(f"kind must be 'e4' or 'e12', got {kind!r}")
    model_key = f"lab-model/seed-{seed}"
    budgets = E12_BUDGETS if kind == "e12" else ()
    settings = {"questions": _questions(budget), "budgets": list(budgets), "summaries": kind == "e12",
                "max_thinking": MAX_THINKING, "model": model_key}

    def run(folder: Path, inputs: Mapping[str, dict]) -> dict:
        model = load(inputs[model_key]["run"])
        lab = model.lab
        records = []
        for r in lab_records(lab, "test", also_styles=("summary",) if kind == "e12" else ()):
            if len(records) == settings["questions"]:
                break
            records.append(r)
        summaries = [r["also"]["summary"] for r in records] if kind == "e12" else None
        raw = mode_efficiency(model.params, model.config, records, budgets=budgets, summaries=summaries,
                              fmt=model.format, max_thinking=MAX_THINKING)
        return {**raw, "ids": [r["id"] for r in records]}

    return Unit(key=f"{kind}/seed-{seed}", settings=settings, run=run, needs=(model_key,))


def _units(kind: str):
    def units(budget: Budget) -> list[Unit]:
        return [u for s in budget.seeds for u in (lab_model(budget, s), probe_unit(budget, s, kind))]
    return units


def _stack(raws: Mapping[str, dict], kind: str, seeds: Sequence[int], value) -> np.ndarray:
    """float[seeds, questions] of value(raw) per seed (questions cut to the fewest any seed has)."""
    rows = [np.asarray(value(raws[f"{kind}/seed-{s}"]), np.float64) for s in seeds]
    m = min(len(r) for r in rows)
    return np.stack([r[:m] for r in rows])


def _result(claim: Claim, values: np.ndarray, *, at_chance: bool, note: str = "", figure: str = "",
            extra: Mapping | None = None) -> ClaimResult:
    measured = bootstrap_interval(values)
    return ClaimResult(claim, measured, verdict(measured, claim.direction, at_chance=at_chance), n=values.shape[1],
                       seeds=values.shape[0], note=note, figure=figure, extra=dict(extra or {}))


E4_CLAIMS = (
    Claim("E4a", "No-thinking converges fast but stalls at a higher answer loss than thinking.", "Fig. 5",
          "answer NLL of /no_think (answer forced at once) minus /think (after the full own thinking) of one "
          "two-mode model at the end of training, paired over questions, two-level bootstrap over seeds x "
          "questions", 1),
    Claim("E4b", "The end-of-thinking delimiter causes a sharp drop of the answer loss.", "Fig. 5",
          "answer NLL at the end of the /think thinking with </think> before the template minus without it, "
          "paired over questions, two-level bootstrap over seeds x questions", -1),
)

E12_CLAIMS = (
    Claim("E12", "Summaries beat no-thinking at equal token counts.", "Figs. 10-11",
          "accuracy of the summary as /think thinking minus /no_think of one two-mode model, paired over "
          "questions, two-level bootstrap over seeds x questions (the own thinking cut at the summary's "
          "length is reported as the matched-token comparison)", 1),
)


def _accuracy(raws: Mapping[str, dict], kind: str, seeds: Sequence[int], row: str) -> float:
    return float(_stack(raws, kind, seeds, lambda r: r["rows"][row]["correct"]).mean())


def summarise_e4(budget: Budget, raws: Mapping[str, dict], figures: Path) -> list[ClaimResult]:
    """E4a and E4b from the "e4/seed-S" raws (see the module docstring)."""
    seeds = budget.seeds
    nll = {row: _stack(raws, "e4", seeds, lambda r, row=row: r["rows"][row]["nll"]) for row in ("no_think", "think")}
    no_delim = _stack(raws, "e4", seeds, lambda r: r["end_nll_no_delimiter"])
    acc_diff = (_stack(raws, "e4", seeds, lambda r: r["rows"]["no_think"]["correct"])
                - _stack(raws, "e4", seeds, lambda r: r["rows"]["think"]["correct"]))
    at_chance = _accuracy(raws, "e4", seeds, "think") < AT_CHANCE
    per_seed_delim = [{k: (v.as_dict() if hasattr(v, "as_dict") else v) for k, v in delimiter_effect(
        [{"loss": [x]} for x in no_delim[i]], [{"loss": [x]} for x in nll["think"][i]]).items()}
        for i in range(len(seeds))]
    figure = _e4_figure(nll, no_delim, Path(figures))
    extra = {"nll_mean": {k: float(v.mean()) for k, v in nll.items()}, "nll_end_no_delimiter": float(no_delim.mean()),
             "accuracy_no_think_minus_think": bootstrap_interval(acc_diff).as_dict(),
             "accuracy_think": _accuracy(raws, "e4", seeds, "think"),
             "accuracy_no_think": _accuracy(raws, "e4", seeds, "no_think")}
    note = "convergence speed over training is not measured (end of training only)"
    return [_result(E4_CLAIMS[0], nll["no_think"] - nll["think"], at_chance=at_chance, note=note, figure=figure,
                    extra=extra),
            _result(E4_CLAIMS[1], nll["think"] - no_delim, at_chance=at_chance, figure=figure,
                    extra={"delimiter_effect_per_seed": per_seed_delim})]


def summarise_e12(budget: Budget, raws: Mapping[str, dict], figures: Path) -> list[ClaimResult]:
    """E12 from the "e12/seed-S" raws: the claim's paired difference, the matched-token comparison
    and the budget forcing curve (pooled Wilson intervals per row) in `extra`."""
    seeds = budget.seeds
    first = raws[f"e12/seed-{seeds[0]}"]
    names = list(first["rows"])
    correct = {k: _stack(raws, "e12", seeds, lambda r, k=k: r["rows"][k]["correct"]) for k in names}
    tokens = {k: _stack(raws, "e12", seeds, lambda r, k=k: r["rows"][k]["tokens"]) for k in names}
    curve = [{"row": k, "mean_tokens": float(tokens[k].mean()),
              "accuracy": rate_interval(int(correct[k].sum()), correct[k].size).as_dict()} for k in names]
    matched = bootstrap_interval(correct["summary"] - correct["think@summary"]).as_dict()
    figure = _e12_figure(curve, Path(figures))
    extra = {"curve": curve, "summary_minus_think_at_summary_tokens": matched}
    return [_result(E12_CLAIMS[0], correct["summary"] - correct["no_think"],
                    at_chance=_accuracy(raws, "e12", seeds, "think") < AT_CHANCE, figure=figure, extra=extra,
                    note=f"summary {tokens['summary'].mean():.1f} tokens on average vs 0 for /no_think")]


def _e4_figure(nll: Mapping[str, np.ndarray], no_delim: np.ndarray, figures: Path) -> str:
    plt = pyplot()
    labels = ["/no_think", "/think, no </think>", "/think + </think>"]
    values = [nll["no_think"], no_delim, nll["think"]]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(labels, [v.mean() for v in values], yerr=[v.mean(axis=1).std() for v in values], capsize=4)
    ax.set_ylabel("answer NLL (mean over seeds x questions)")
    ax.set_title("E4: the two modes of one model")
    path = save_figure(fig, figures / "e4_modes.png")
    return str(path.relative_to(figures.parent))


def _e12_figure(curve: Sequence[dict], figures: Path) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    budget = [c for c in curve if c["row"].startswith("think@") and c["row"] != "think@summary"]
    xs = [c["mean_tokens"] for c in budget]
    ax.plot(xs, [c["accuracy"]["mean"] for c in budget], "o-", label="budget forcing (/think)")
    for c in curve:
        if c["row"] in ("no_think", "summary", "think@summary", "think"):
            ax.errorbar([c["mean_tokens"]], [c["accuracy"]["mean"]],
                        yerr=[[c["accuracy"]["mean"] - c["accuracy"]["low"]],
                              [c["accuracy"]["high"] - c["accuracy"]["mean"]]], fmt="s", capsize=3,
                        label=c["row"])
    ax.set_xlabel("thinking tokens before the forced answer")
    ax.set_ylabel("accuracy")
    ax.set_title("E12: efficiency at equal token counts")
    ax.legend(fontsize=7)
    path = save_figure(fig, figures / "e12_efficiency.png")
    return str(path.relative_to(figures.parent))


E4 = Experiment("E4", "The two modes of one model: no-thinking vs thinking, and the delimiter", E4_CLAIMS,
                _units("e4"), summarise_e4)
E12 = Experiment("E12", "Reasoning efficiency at equal token counts (one two-mode model)", E12_CLAIMS,
                 _units("e12"), summarise_e12)
