"""The train state and its optimizer."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from metareason.errors import check_float, check_int, flag_name

__all__ = ["TrainState", "OptimizerConfig", "make_optimizer", "init_state"]


class TrainState(NamedTuple):
    """step: int32[]; params; opt_state; rng: uint32[2] raw key data (checkpoint-friendly)."""

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW with linear warm-up, cosine decay to `final_lr_fraction`, global-norm clipping."""

    lr: float = 1e-3
    """Peak learning rate."""
    warmup_steps: int = 50
    final_lr_fraction: float = 0.1
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.98
    clip_norm: float = 1.0

    def validate(self, prefix: str = "--optimizer.") -> None:
        """`ConfigError` naming the flag (`prefix` + field) of the first setting out of range."""
        check_float(flag_name(prefix, "lr"), self.lr, 0, lo_open=True)
        check_int(flag_name(prefix, "warmup_steps"), self.warmup_steps, 0)
        check_float(flag_name(prefix, "final_lr_fraction"), self.final_lr_fraction, 0, 1)
        check_float(flag_name(prefix, "weight_decay"), self.weight_decay, 0)
        check_float(flag_name(prefix, "b1"), self.b1, 0, 1, hi_open=True)
        check_float(flag_name(prefix, "b2"), self.b2, 0, 1, hi_open=True)
        check_float(flag_name(prefix, "clip_norm"), self.clip_norm, 0, lo_open=True)

    def schedule(self, total_steps: int) -> optax.Schedule:
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=self.lr, warmup_steps=max(self.warmup_steps, 1),
            decay_steps=max(total_steps, self.warmup_steps + 1), end_value=self.lr * self.final_lr_fraction)


def make_optimizer(config: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
    """Clipping, then AdamW on the warm-up + cosine schedule over `total_steps`."""
    return optax.chain(
        optax.clip_by_global_norm(config.clip_norm),
        optax.adamw(config.schedule(total_steps), b1=config.b1, b2=config.b2, weight_decay=config.weight_decay),
    )


def init_state(params: Any, optimizer: optax.GradientTransformation, seed: int) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                      rng=jax.random.key_data(jax.random.key(seed)))
