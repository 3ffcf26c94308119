"""True gradient steps on one question, to set beside the trajectory's pseudo-gradient steps.

`descend` is steepest descent with a line search on a grid: at every step the gradient g of the
objective is taken once, the objective is evaluated at params - lr * g for every lr of the grid
(lr = 0 included, so a step never raises the objective), and the best is kept. `question_descent`
applies it to one question twice, from the same weights W:

- "answer": k steps on the question-only answer loss itself (the best a true optimiser can do
  with the answer known: the reference the trajectory's k tokens are measured against);
- "trajectory": k steps on the trajectory's SFT loss (the trajectory as an explicit support set,
  the inner loop of the meta-learning view), with the question-only answer loss measured along.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from metareason.inner.masks import SUBSETS, as_trainable
from metareason.inner.objectives import ExampleError, answer_loss, prepare, trajectory_loss
from metareason.model import ModelConfig
from metareason.model.protocol import CausalLM

__all__ = ["DEFAULT_LRS", "SUBSETS", "Descent", "descend", "question_descent"]

#: Default line-search grid: 0 and 16 rates from 1e-4 to 10 (log-spaced).
DEFAULT_LRS = (0.0,) + tuple(float(x) for x in np.geomspace(1e-4, 10.0, 16))


class Descent(NamedTuple):
    """params: after the last step; objective: float32[steps + 1] the objective before each step
    and after the last; measure: float32[steps + 1] the `measure` function likewise (NaN when
    none); lr: float32[steps] the rate the line search chose at each step."""

    params: Any
    objective: jax.Array
    measure: jax.Array
    lr: jax.Array


def descend(objective: Callable[[Any], jax.Array], params: Any, *, steps: int,
            lrs: Sequence[float] = DEFAULT_LRS, measure: Callable[[Any], jax.Array] | None = None,
            subset: Any = "all") -> Descent:
    """`steps` steepest-descent steps on `objective` (params -> scalar) with a grid line search.

    The grid is evaluated with `lax.map` (one extra forward per rate, memory of one). Pure and
    jit-compatible. `subset`: which weights move, a name in `SUBSETS` ("all"; "mlp": only the MLP
    kernels), a predicate (path, leaf) -> bool or a bool pytree (see `trainable_mask`)."""
    if steps < 1:
        raise ExampleError(f"steps must be >= 1, got {steps}")
    lrs = jnp.asarray(lrs, jnp.float32)
    if lrs.ndim != 1 or lrs.shape[0] < 1:
        raise ExampleError("lrs must be a non-empty 1-D grid of learning rates")
    mask = as_trainable(params, subset, error=ExampleError)
    measure_fn = measure or (lambda p: jnp.float32(jnp.nan))

    def moved(p, g, lr):
        return jax.tree.map(lambda x, d, m: x - lr * d.astype(x.dtype) if m else x, p, g, mask)

    def step(p, _):
        value, g = jax.value_and_grad(objective)(p)
        trial = lax.map(lambda lr: objective(moved(p, g, lr)), lrs)
        trial = jnp.where(jnp.isfinite(trial), trial, jnp.inf)
        best = jnp.argmin(trial)
        return moved(p, g, lrs[best]), (value, measure_fn(p), lrs[best])

    final, (values, measured, chosen) = lax.scan(step, params, None, length=steps)
    objective_all = jnp.concatenate([values, objective(final)[None]])
    measure_all = jnp.concatenate([measured, measure_fn(final)[None]])
    return Descent(final, objective_all, measure_all, chosen)


@functools.partial(jax.jit, static_argnames=("config", "steps", "subset"))
def _question_jit(params, ex, lrs, *, config, steps, subset):
    def ans(p):
        return answer_loss(p, ex, 0, config=config)

    def traj(p):
        return trajectory_loss(p, ex, config=config)

    a = descend(ans, params, steps=steps, lrs=lrs, subset=subset)
    t = descend(traj, params, steps=steps, lrs=lrs, measure=ans, subset=subset)
    return a.objective, a.lr, t.measure, t.objective, t.lr


def question_descent(params: Any, example, *, config: ModelConfig | CausalLM, steps: int = 16,
                     lrs: Sequence[float] = DEFAULT_LRS, subset: str = "all") -> dict[str, np.ndarray]:
    """True gradient steps on one question (a `metareason.probe.Example`), from W, both ways.
    config: our `ModelConfig` or any `CausalLM`; subset: a name in `SUBSETS` or a predicate.

    Returns numpy arrays over k = 0..steps: "answer_gd" the question-only answer loss after k
    line-searched steps on itself; "answer_sft" the same loss after k line-searched steps on the
    trajectory's SFT loss; "sft_loss" that SFT loss; and "lr_gd", "lr_sft" [steps] the chosen rates."""
    ex = prepare(example, config)
    a, lr_a, t_ans, t_obj, lr_t = _question_jit(params, ex, jnp.asarray(lrs, jnp.float32), config=config,
                                                steps=steps, subset=subset)
    return {"k": np.arange(steps + 1), "answer_gd": np.asarray(a), "answer_sft": np.asarray(t_ans),
            "sft_loss": np.asarray(t_obj), "lr_gd": np.asarray(lr_a), "lr_sft": np.asarray(lr_t)}
