"""Named run presets for the lab: `metareason train --preset NAME` and `metareason rl --preset NAME`.
(The model presets they name are `metareason.model.presets`, re-exported here.)"""

from __future__ import annotations

from pathlib import Path

from metareason.model.presets import MODEL_PRESETS, model_preset
from metareason.tasks.lab import LabConfig
from metareason.train.rl import ARITH, GRPOConfig
from metareason.train.sft import SFTConfig
from metareason.train.state import OptimizerConfig

__all__ = ["MODEL_PRESETS", "model_preset", "train_presets", "rl_presets"]


def train_presets() -> dict:
    """Named `SFTConfig`s for `metareason train --preset NAME` (flags after it override)."""
    # 20,000 distinct questions: with 4,000 the 3400 steps (about 11.7 packed examples each) pass over
    # each question about 10 times and held-out accuracy varied from 0.86 to 0.95 with the seed; with
    # 20,000 (2 passes), 0.90 to 0.99 over three seeds, 0.958 in all (BENCHMARKS.md). The first 4,000
    # are the GRPO preset's questions (`rl.ARITH`).
    arith = dict(families=("arith",), difficulty=(1, 2), train_size=20000, eval_size=100)
    out = {
        "lab": SFTConfig(out=Path("runs/sft-lab"), lab=LabConfig(style="long", train_size=1500)),
        "tiny": SFTConfig(out=Path("runs/sft-tiny"), model="lab-tiny", steps=30, batch_size=4, seq_len=256,
                          lab=LabConfig(families=("arith", "pointer"), difficulty=(1,), train_size=100,
                                        eval_size=8),
                          optimizer=OptimizerConfig(lr=3e-3, warmup_steps=5), log_every=5, checkpoint_every=10,
                          eval_questions=8),
    }
    for style in ("long", "short", "none", "summary"):
        # the measured CPU budget (BENCHMARKS.md): 3400 steps of 7 x 288 packed tokens with lab-fast
        # (layers unrolled), cosine to 0, about 10 minutes of training on 2 CPU cores. 7 x 288 costs
        # what 8 x 256 does per step, and packs long trajectories (mean 141 tokens) 85% full, not 79%
        out[f"arith-{style}"] = SFTConfig(out=Path(f"runs/sft-arith-{style}"), model="lab-fast", steps=3400,
                                          batch_size=7, seq_len=288,
                                          optimizer=OptimizerConfig(lr=3e-3, final_lr_fraction=0.0),
                                          eval_every=850,
                                          lab=LabConfig(style=style, **arith))
    return out


def rl_presets() -> dict:
    """Named `GRPOConfig`s for `metareason rl --preset NAME` (flags after it override)."""
    return {
        # GRPO on the arith questions of the arith-* SFT presets. Pass --init RUN_DIR: a fresh model
        # never answers right, so every group's rewards are equal and every advantage is 0. The
        # optimizer settings are the ones measured to raise the reward on the lab (EXPERIMENTS.md, E6/E7).
        "arith": GRPOConfig(out=Path("runs/grpo-arith"), lab=ARITH, model="lab-fast"),
        "tiny": GRPOConfig(out=Path("runs/grpo-tiny"), model="lab-tiny", steps=6, questions_per_step=2,
                           group_size=4, max_new_tokens=48, checkpoint_every=2, eval_questions=4,
                           lab=LabConfig(families=("arith", "pointer"), difficulty=(1,), train_size=100,
                                         eval_size=8)),
    }
