"""The sinusoid regression benchmark of the MAML paper (Finn et al. 2017, section 5.1).

Tasks y = A sin(x + phase), A ~ U[0.1, 5], phase ~ U[0, pi], x ~ U[-5, 5]; K support and K query
points per task; an MLP 1-40-40-1 with ReLU; inner SGD step 0.01; meta-optimiser Adam 1e-3 over
25 tasks per meta-batch. The published result: mean squared error about 0.4 on new tasks after one
inner step with K = 10 (read off the paper's figure).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metareason.inner import inner_loop, make_meta_step
from metareason.studies.toy_loop import toy_loop

__all__ = ["SinusoidConfig", "sample_tasks", "init_mlp", "mlp", "mse", "evaluate", "train"]


@dataclasses.dataclass(frozen=True)
class SinusoidConfig:
    iterations: int = 70000
    tasks_per_batch: int = 25
    k: int = 10
    inner_lr: float = 0.01
    inner_steps: int = 1
    outer_lr: float = 1e-3
    hidden: tuple[int, ...] = (40, 40)
    mode: str = "second_order"
    test_tasks: int = 600
    seed: int = 0


def sample_tasks(key: jax.Array, n: int, k: int) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    """(support (x, y), query (x, y)), each [n, k, 1]."""
    ka, kp, ks, kq = jax.random.split(key, 4)
    amp = jax.random.uniform(ka, (n, 1, 1), minval=0.1, maxval=5.0)
    phase = jax.random.uniform(kp, (n, 1, 1), minval=0.0, maxval=jnp.pi)
    xs = jax.random.uniform(ks, (n, k, 1), minval=-5.0, maxval=5.0)
    xq = jax.random.uniform(kq, (n, k, 1), minval=-5.0, maxval=5.0)
    return (xs, amp * jnp.sin(xs + phase)), (xq, amp * jnp.sin(xq + phase))


def init_mlp(key: jax.Array, sizes=(1, 40, 40, 1)) -> list[dict]:
    """He-normal weights, zero biases."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [{"w": jax.random.normal(k, (a, b)) * np.sqrt(2.0 / a), "b": jnp.zeros(b)}
            for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def mlp(params: list[dict], x: jax.Array) -> jax.Array:
    for i, layer in enumerate(params):
        x = x @ layer["w"] + layer["b"]
        if i < len(params) - 1:
            x = jax.nn.relu(x)
    return x


def mse(params: list[dict], batch: tuple[jax.Array, jax.Array]) -> jax.Array:
    x, y = batch
    return jnp.mean((mlp(params, x) - y) ** 2)


def evaluate(params: Any, config: SinusoidConfig, key: jax.Array, steps: int = 1) -> dict:
    """Query MSE over `config.test_tasks` new tasks before and after `steps` inner steps (K support points)."""
    support, query = sample_tasks(key, config.test_tasks, config.k)

    @jax.jit
    def one(s, q):
        adapted = inner_loop(mse, params, s, optax.sgd(config.inner_lr), steps=steps).params
        return mse(params, q), mse(adapted, q)

    before, after = jax.vmap(one)(support, query)
    return {"before": float(before.mean()), "after": float(after.mean()),
            "after_sem": float(after.std() / np.sqrt(after.size)), "steps": steps}


def train(config: SinusoidConfig, *, progress: bool = False) -> dict:
    """Meta-trains and evaluates; returns {"params", "eval": {steps: ...}, "seconds", "steps_per_s",
    "losses": [(steps done, meta-batch query loss) every 1000 steps and at the end]}.

    The loop is `toy_loop` (seconds to minutes in memory: no checkpoints, nothing to resume, so not
    the run loop of `metareason train`); the first step (compilation) is untimed; a non-finite loss
    raises `metareason.train.TrainingDiverged`."""
    key = jax.random.key(config.seed)
    k_init, k_train, k_eval = jax.random.split(key, 3)
    params = init_mlp(k_init, (1, *config.hidden, 1))
    outer = optax.adam(config.outer_lr)
    meta_step = make_meta_step(mse, optax.sgd(config.inner_lr), outer, steps=config.inner_steps, mode=config.mode)

    def step(state, i):
        support, query = sample_tasks(jax.random.fold_in(k_train, i), config.tasks_per_batch, config.k)
        params, opt_state, m = meta_step(*state, support, query)
        return (params, opt_state), {"loss": m["loss"]}

    run = toy_loop(step, (params, outer.init(params)), config.iterations, log_every=1000, time_first_step=False,
                   desc="maml", progress=progress)
    params = run.state[0]
    evals = {s: evaluate(params, config, k_eval, steps=s) for s in (1, 10)}
    return {"params": params, "eval": evals, "seconds": run.seconds,
            "steps_per_s": run.timed_steps / max(run.seconds, 1e-9),
            "losses": [(h["step"], h["loss"]) for h in run.history]}
