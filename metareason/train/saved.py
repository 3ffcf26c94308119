"""A training run read back with its trainer config (`SFTConfig` or `GRPOConfig`). To load just the
model, use `metareason.load`, which needs no trainer config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metareason.model import ModelConfig
from metareason.runs import load, run_kind
from metareason.train.rl import GRPOConfig, grpo_config_from_json
from metareason.train.sft import SFTConfig, sft_config_from_json

__all__ = ["load_run", "load_grpo_run"]


def load_run(run_dir: str | Path, step: int | None = None) -> tuple[SFTConfig | GRPOConfig, ModelConfig, Any, int]:
    """(run config, model config, params, step) of a `metareason train` or `metareason rl` run
    folder: its `SFTConfig` or `GRPOConfig`, and `metareason.load`'s model and params (the newest
    intact checkpoint, or `step`). Raises FileNotFoundError naming what is missing."""
    m = load(run_dir, step)
    if m.run_config is None:
        raise FileNotFoundError(f"{Path(run_dir).absolute()} is not a training run (no checkpoints/)")
    from_json = grpo_config_from_json if run_kind(m.run_config) == "grpo" else sft_config_from_json
    return from_json(m.run_config), m.config, m.params, m.step


def load_grpo_run(run_dir: str | Path, step: int | None = None) -> tuple[GRPOConfig, ModelConfig, Any, int]:
    """`load_run` of a `metareason rl` run folder (a FileNotFoundError for any other)."""
    got = load_run(run_dir, step)
    if not isinstance(got[0], GRPOConfig):
        raise FileNotFoundError(f"{Path(run_dir).absolute()} is not a GRPO run (an SFT run)")
    return got
