"""A jit-compiled SFT step with buffer donation that never commits a non-finite update."""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from metareason.model import ModelConfig
from metareason.parallel import constrain_state
from metareason.train.loss import sft_loss
from metareason.train.state import TrainState

__all__ = ["make_train_step", "make_eval_loss"]


def make_train_step(config: ModelConfig, optimizer: optax.GradientTransformation,
                    loss_fn: Callable = sft_loss) -> Callable:
    """Returns `step(state, batch) -> (state, metrics)`, jitted, donating `state`.

    `loss_fn(params, batch, *, config) -> (loss, metrics)`: the SFT loss by default (GRPO passes
    its policy loss).

    If the loss or the gradient norm is not finite, the returned state is the input state
    (nothing is committed) and metrics["finite"] is False, so the caller can stop with the
    last good state still in hand.

    On a mesh (called under `metareason.parallel.use_mesh`, with the state and batch sharded by
    `metareason.parallel`), the new state is pinned to the params' layout, so the step runs
    as FSDP / tensor / data parallel and its outputs alias its donated inputs."""

    @functools.partial(jax.jit, donate_argnums=0)
    def step(state: TrainState, batch):
        (loss, metrics), grads = jax.value_and_grad(
            functools.partial(loss_fn, config=config), has_aux=True)(state.params, batch)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        new = TrainState(state.step + 1, params, opt_state, state.rng)
        new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
        return constrain_state(new, config, optimizer), dict(metrics, grad_norm=grad_norm, finite=finite)

    return step


def make_eval_loss(config: ModelConfig) -> Callable:
    """`eval_loss(params, batch) -> metrics`, jitted."""
    return jax.jit(lambda params, batch: sft_loss(params, batch, config=config)[1])
