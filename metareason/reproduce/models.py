"""The trained lab models the probe experiments (E1-E5, E12) share: one two-mode SFT run per seed.

`lab_model(budget, seed)` is the `Unit` (key "lab-model/seed-S") that trains it; its raw result is
{"run": "<run folder>"}. Every probe experiment lists it among its units and reads the folder from
its inputs, so the model is trained once per seed for all of them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping

from metareason.reproduce.base import Budget, Unit
from metareason.tasks.lab import LabConfig
from metareason.train.sft import SFTConfig, train_sft
from metareason.train.state import OptimizerConfig

__all__ = ["LAB_MODEL_STEPS", "TWO_MODE_MIX", "CONFIRM_RATE", "SILENT_RATE", "two_mode_lab", "lab_model",
           "lab_model_config"]

TWO_MODE_MIX = (("summary", "think", 0.2), ("none", "no_think", 0.2))
"""60% long trajectories under /think, 20% summaries under /think (E12's summaries are in
training), 20% empty thinking under /no_think (E4's no-thinking mode)."""

CONFIRM_RATE = 0.15
"""Share of a long trajectory's slippable steps with an unconfirmed reflection (E5's control)."""
SILENT_RATE = 0.3
"""Share of planted slips corrected without a reflection word (E5's control)."""

LAB_MODEL_STEPS = 2400
"""SFT steps of the probe experiments' model at the "lab" budget, 7 x 288 packed tokens each.
The first lab run used 1000: its models were not shown above chance (sampled accuracy 0.087
[0.078, 0.098], below the 0.1 the verdict rule asks for), so E2, E3 and E5 could not come out
either way; its results are in git at commit f4d3b79. 2400 was chosen from the arith-long
preset's greedy learning curve (0.52 at 1700 steps, 0.88 at 2550, 0.97 at 3400; BENCHMARKS.md),
before any claim was measured with it: well above chance while the model still writes incorrect
samples of its own to probe (E3), at about 7 min a seed on 2 CPU cores."""


def two_mode_lab(seed: int) -> LabConfig:
    """The lab of the probe experiments' model: arith at difficulty 1-2, mode /think with
    `TWO_MODE_MIX`, long trajectories with planted, unconfirmed and silent reflections."""
    return LabConfig(families=("arith",), style="long", difficulty=(1, 2), train_size=20000, eval_size=100,
                     seed=seed, confirm_rate=CONFIRM_RATE, silent_rate=SILENT_RATE, mode="think", mix=TWO_MODE_MIX)


def lab_model_config(budget: Budget, seed: int, folder: Path) -> SFTConfig:
    """The SFT config of the probe experiments' lab model at `budget` and `seed`, written to `folder`."""
    lab = two_mode_lab(seed)
    return SFTConfig(out=folder, model="lab-fast", steps=budget.steps(LAB_MODEL_STEPS, 20), batch_size=7, seq_len=288,
                     optimizer=OptimizerConfig(lr=3e-3, final_lr_fraction=0.0), eval_every=0, eval_questions=50,
                     checkpoint_every=200, final_eval=False, seed=seed, lab=lab)


def _settings(cfg: SFTConfig) -> dict:
    return {k: v for k, v in cfg.to_json().items() if k not in ("out", "resume", "overwrite")}


def lab_model(budget: Budget, seed: int) -> Unit:
    """The unit that trains (or resumes) the probe experiments' model of `seed`; raw {"run": folder}."""
    def run(folder: Path, inputs: Mapping[str, dict]) -> dict:
        cfg = dataclasses.replace(lab_model_config(budget, seed, folder / "run"), resume=True)
        train_sft(cfg)
        return {"run": str(folder / "run")}

    return Unit(key=f"lab-model/seed-{seed}", settings=_settings(lab_model_config(budget, seed, Path("."))), run=run)
