"""True inner loops: optax-style gradient steps on a loss, as one pure function over `lax.scan`.

    result = inner_loop(loss_fn, params, batch, optax.sgd(0.01), steps=5)            # second order
    meta_loss = lambda p: query_loss(inner_loop(loss_fn, p, batch, opt, steps=5).params)
    jax.grad(meta_loss)(params)                                                       # MAML

Modes: "second_order" differentiates through the unroll; "first_order" chains `first_order()`
before the optimizer (`optax.chain(first_order(), optimizer)`: the gradient of each inner
gradient is stopped, FOMAML: the meta-gradient is the query gradient at the adapted parameters);
"implicit" solves the proximal inner problem min_phi L(phi) + lam/2 |phi - theta|^2 with the
inner steps and differentiates it with `implicit_diff` (iMAML: a conjugate-gradient solve of
(H + lam I) u = v at phi), so memory does not grow with the number of steps. Which weights move:
`trainable=` takes a bool pytree, a subset name or a predicate (`trainable_mask`).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from metareason.inner.implicit_diff import implicit_diff, proximal_optimality, sq_distance
from metareason.inner.masks import as_trainable
from metareason.inner.transforms import first_order

__all__ = ["InnerResult", "InnerLoopError", "MODES", "REMAT", "inner_loop", "meta_sgd", "reptile_update"]

MODES = ("second_order", "first_order", "implicit")
REMAT = ("none", "step", "nested")


class InnerLoopError(ValueError):
    """Malformed inner-loop inputs (one line, names what is wrong)."""


class InnerResult(NamedTuple):
    """params: the adapted parameters (same pytree as the input); losses: float[steps], the inner
    loss before each step (the proximal term excluded); final_loss: the loss after the last step."""

    params: Any
    losses: jax.Array
    final_loss: jax.Array


def _check_structure(name: str, tree: Any, params: Any) -> None:
    if jax.tree.structure(tree) != jax.tree.structure(params):
        raise InnerLoopError(f"{name} must have the same pytree structure as params "
                             f"({jax.tree.structure(tree)} vs {jax.tree.structure(params)})")


def _scalar_loss(loss_fn: Callable, params: Any, batch: Any) -> None:
    out = jax.eval_shape(loss_fn, params, batch)
    if not hasattr(out, "shape") or out.shape != ():
        raise InnerLoopError(f"loss_fn must return a scalar, got {getattr(out, 'shape', type(out).__name__)}")


def meta_sgd(learning_rates: Any) -> optax.GradientTransformation:
    """SGD with one learning rate per parameter element (Meta-SGD, Li et al. 2017): updates are
    -learning_rates * grads. Build it inside the meta-loss from learnable rates so the
    meta-gradient reaches them."""

    def init(params):
        _check_structure("learning_rates", learning_rates, params)
        return optax.EmptyState()

    def update(grads, state, params=None):
        return jax.tree.map(lambda g, lr: -lr * g, grads, learning_rates), state

    return optax.GradientTransformation(init, update)


def reptile_update(params: Any, adapted: Any, epsilon: float) -> Any:
    """Reptile's outer step: theta + epsilon * (phi - theta) (phi: adapted params, or their mean over tasks)."""
    _check_structure("adapted", adapted, params)
    return jax.tree.map(lambda t, p: t + epsilon * (p - t), params, adapted)


def inner_loop(loss_fn: Callable[[Any, Any], jax.Array], params: Any, batches: Any,
               optimizer: optax.GradientTransformation, *, steps: int | None = None,
               mode: str = "second_order", remat: str = "none", trainable: Any = None,
               prox: float = 1.0, cg_iters: int = 20) -> InnerResult:
    """Runs `steps` optimizer steps on `loss_fn(params, batch)` starting from `params`.

    Args:
      loss_fn: (params, batch) -> scalar loss.
      params: the starting parameters (any pytree of float arrays).
      batches: one batch used at every step (with `steps`), or a pytree whose leaves have a
        leading axis [steps] (one batch per step; `steps` None).
      optimizer: an optax `GradientTransformation` (its state starts fresh).
      mode: "second_order", "first_order" or "implicit" (see the module docstring).
      remat: "none"; "step" (recompute each step's forward in the backward pass: memory flat in
        the steps, one extra forward per step); "nested" (checkpoint blocks of ~sqrt(steps) steps
        and the steps inside them: memory ~sqrt(steps)).
      trainable: None (adapt everything), a pytree of bools like `params` (False leaves stay
        fixed, e.g. ANIL: adapt the head only), or a subset name / predicate for
        `trainable_mask(params, trainable)` (e.g. "mlp").
      prox: lambda of the proximal term ("implicit" only).
      cg_iters: conjugate-gradient iterations of the implicit backward pass.

    Returns:
      `InnerResult(params, losses [steps], final_loss)`.
    """
    if mode not in MODES:
        raise InnerLoopError(f"unknown inner-loop mode {mode!r} (known: {', '.join(MODES)})")
    if remat not in REMAT:
        raise InnerLoopError(f"unknown remat {remat!r} (known: {', '.join(REMAT)})")
    if steps is None:
        lead = {x.shape[0] if getattr(x, "ndim", 0) else None for x in jax.tree.leaves(batches)}
        if len(lead) != 1 or None in lead:
            raise InnerLoopError("without steps=, every leaf of batches needs the same leading [steps] axis")
        steps, per_step = lead.pop(), True
    else:
        per_step = False
    if steps < 1:
        raise InnerLoopError(f"steps must be >= 1, got {steps}")
    if mode == "implicit" and prox <= 0:
        raise InnerLoopError(f"prox (lambda) must be > 0 for the implicit mode, got {prox}")
    trainable = as_trainable(params, trainable, error=InnerLoopError)
    if mode == "first_order":
        optimizer = optax.chain(first_order(), optimizer)
    first = jax.tree.map(lambda x: x[0], batches) if per_step else batches
    _scalar_loss(loss_fn, params, first)

    def batch_at(batches, i):
        return jax.tree.map(lambda x: x[i], batches) if per_step else batches

    def mask(tree):
        return jax.tree.map(lambda g, t: g if t else jnp.zeros_like(g), tree, trainable)

    def run(theta, batches, anchor=None):
        """The unrolled steps from theta (anchor: the proximal centre, implicit mode)."""

        def step(carry, i):
            p, opt_state = carry

            def objective(q):
                loss = loss_fn(q, batch_at(batches, i))
                if anchor is None:
                    return loss, loss
                return loss + 0.5 * prox * sq_distance(q, anchor), loss

            (_, loss), g = jax.value_and_grad(objective, has_aux=True)(p)
            g = mask(g)
            updates, opt_state = optimizer.update(g, opt_state, p)
            return (optax.apply_updates(p, mask(updates)), opt_state), loss

        if remat == "step":
            step = jax.checkpoint(step)
        carry = (theta, optimizer.init(theta))
        if remat == "nested":
            block = max(1, int(round(steps ** 0.5)))
            n_blocks, rest = divmod(steps, block)

            @jax.checkpoint
            def run_block(carry, idx):
                return lax.scan(jax.checkpoint(step), carry, idx)

            idx = jnp.arange(n_blocks * block).reshape(n_blocks, block)
            carry, losses = lax.scan(run_block, carry, idx)
            losses = losses.reshape(-1)
            if rest:
                carry, tail = lax.scan(jax.checkpoint(step), carry, jnp.arange(n_blocks * block, steps))
                losses = jnp.concatenate([losses, tail])
        else:
            carry, losses = lax.scan(step, carry, jnp.arange(steps))
        return carry[0], losses

    if mode == "implicit":
        adapted, losses = _implicit(run, params, batches, lambda p, b: loss_fn(p, batch_at(b, steps - 1)), prox,
                                    cg_iters, trainable)
    else:
        adapted, losses = run(params, batches)
    return InnerResult(adapted, losses, loss_fn(adapted, batch_at(batches, steps - 1)))


def _implicit(run, theta, batches, last_loss, prox, cg_iters, trainable):
    """phi*(theta) from the proximal unroll, differentiated with `implicit_diff` over the
    trainable leaves; the frozen ones (phi = theta there) enter the optimality condition as
    arguments, so their cotangent includes how they move the solution."""

    def split(tree):
        return (jax.tree.map(lambda x, t: x if t else None, tree, trainable),
                jax.tree.map(lambda x, t: None if t else x, tree, trainable))

    def merge(moving, frozen):
        return jax.tree.map(lambda t, a, b: a if t else b, trainable, moving, frozen)

    def inner_loss(moving, frozen, batches):  # the loss the unroll ends on (the last batch)
        return last_loss(merge(moving, frozen), batches)

    @implicit_diff(proximal_optimality(inner_loss, prox), solve="cg", cg_iters=cg_iters, has_aux=True)
    def solve(moving, frozen, batches):
        full = merge(moving, frozen)
        phi, losses = run(full, batches, anchor=full)
        return split(phi)[0], losses

    moving, frozen = split(theta)
    phi, losses = solve(moving, frozen, batches)
    return merge(phi, frozen), losses
