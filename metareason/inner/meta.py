"""The outer loop over tasks: a jit-compiled meta-training step (MAML family) for any model.

Tasks are stacked on a leading axis [T, ...] and mapped with `vmap`. Under a mesh
(`metareason.parallel.use_mesh`) the task axis is split over the mesh's batch axes
(`batch_vmap`): each device adapts its own tasks, and the compiler averages the meta-gradient
across devices.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from metareason.inner.loop import InnerLoopError, inner_loop
from metareason.parallel.rules import batch_vmap

__all__ = ["meta_loss", "make_meta_step"]


def meta_loss(params: Any, support: Any, query: Any, *, loss_fn: Callable, inner_optimizer: optax.GradientTransformation,
              steps: int, mode: str = "second_order", remat: str = "none", trainable: Any = None,
              query_loss_fn: Callable | None = None) -> tuple[jax.Array, dict]:
    """Mean over tasks of the query loss after `steps` inner steps on each task's support batch.

    support, query: pytrees with a leading task axis [T, ...] (each task's batch; examples of
    different lengths: `prepare_many`). loss_fn: the support (inner) loss; query_loss_fn: the
    query loss (default: loss_fn). trainable: as `inner_loop`. Returns
    (loss, {"inner_before": [T] support loss before adapting, "inner_after": [T] after, "query": [T]})."""
    query_loss_fn = query_loss_fn or loss_fn

    def one(s, q):
        res = inner_loop(loss_fn, params, s, inner_optimizer, steps=steps, mode=mode, remat=remat,
                         trainable=trainable)
        return query_loss_fn(res.params, q), res.losses[0], res.final_loss

    qloss, before, after = batch_vmap(one)(support, query)
    return jnp.mean(qloss), {"inner_before": before, "inner_after": after, "query": qloss}


def make_meta_step(support_loss: Callable, query_loss: Any = None, inner_optimizer: Any = None,
                   outer_optimizer: Any = None, *, steps: int, mode: str = "second_order", remat: str = "none",
                   trainable: Any = None) -> Callable:
    """`step(params, opt_state, support, query) -> (params, opt_state, metrics)`, jitted: one outer
    update with the meta-gradient of `meta_loss` averaged over the T tasks.

        step = make_meta_step(support_loss, query_loss, optax.sgd(1e-2), optax.adam(1e-3), steps=3)
        step = make_meta_step(loss_fn, optax.sgd(1e-2), optax.adam(1e-3), steps=3)   # query = support

    Args:
      support_loss: (params, batch) -> scalar, the inner loop's loss on a task's support batch.
      query_loss: (params, batch) -> scalar on the query batch at the adapted params (e.g. the
        paper's Eq 8: support = `trajectory_loss`, query = `answer_loss`). Omitted (the optimizers
        move up one place), the support loss serves both.
      inner_optimizer, outer_optimizer: optax `GradientTransformation`s.
      steps, mode, remat: as `inner_loop`; trainable: as `inner_loop` (a bool pytree, a subset
        name such as "mlp", or a predicate; see `trainable_mask`).

    metrics: "loss", "grad_norm", and per task [T] "inner_before", "inner_after", "query".
    """
    if isinstance(query_loss, optax.GradientTransformation):  # the single-loss form
        if outer_optimizer is not None:
            raise InnerLoopError("make_meta_step(loss_fn, inner_optimizer, outer_optimizer) got a fourth positional "
                                 "argument; pass make_meta_step(support_loss, query_loss, inner, outer, ...)")
        query_loss, inner_optimizer, outer_optimizer = None, query_loss, inner_optimizer
    for name, opt in (("inner_optimizer", inner_optimizer), ("outer_optimizer", outer_optimizer)):
        if not isinstance(opt, optax.GradientTransformation):
            raise InnerLoopError(f"{name} must be an optax GradientTransformation, got {type(opt).__name__}")
    if query_loss is not None and not callable(query_loss):
        raise InnerLoopError(f"query_loss must be a function (params, batch) -> scalar, "
                             f"got {type(query_loss).__name__}")

    def loss(p, s, q):
        return meta_loss(p, s, q, loss_fn=support_loss, inner_optimizer=inner_optimizer, steps=steps, mode=mode,
                         remat=remat, trainable=trainable, query_loss_fn=query_loss)

    @jax.jit
    def step(params, opt_state, support, query):
        (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(params, support, query)
        updates, opt_state = outer_optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, dict(aux, loss=value,
                                                                    grad_norm=optax.tree.norm(grads))

    return step
