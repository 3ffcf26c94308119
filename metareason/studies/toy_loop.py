"""The studies' training loop: a fixed number of in-memory steps with logging, a divergence check,
periodic evaluation, a progress bar and timing, shared by `sinusoid.train`, `icl_regression.train`
and `lab_meta` (`meta_train_lab` / `sft_train_lab`).

It is not the project's run loop (`metareason train` / `metareason rl`): a study trains a toy model
for seconds to minutes inside one call and returns the parameters, so it has no run folder, no
checkpoints and nothing to resume.
"""

from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from metareason.train import TrainingDiverged

__all__ = ["LoopResult", "toy_loop"]


class LoopResult(NamedTuple):
    """state: the state after the last step; history: one row per logged step, {"step": steps
    done, metric: value (float for a scalar, numpy array otherwise), "seconds": training time so
    far}; evals: one row per evaluation, {"step": steps done, **evaluate(state, steps done)};
    seconds: wall time of the timed steps (evaluations excluded); timed_steps: how many steps
    `seconds` covers (all, or all but the first when the first step's compilation is untimed)."""

    state: Any
    history: list
    evals: list
    seconds: float
    timed_steps: int


def _fetch(metrics: dict) -> dict:
    """Device metrics -> floats (scalars) and numpy arrays."""
    host = jax.device_get(metrics)
    return {k: float(v) if np.ndim(v) == 0 else np.asarray(v) for k, v in host.items()}


def toy_loop(step: Callable[[Any, int], tuple[Any, dict]], state: Any, steps: int, *, log_every: int = 1,
             evaluate: Callable[[Any, int], dict] | None = None, eval_every: int = 0, time_first_step: bool = True,
             desc: str = "train", progress: bool = False) -> LoopResult:
    """Runs `state, metrics = step(state, i)` for i = 0..steps-1.

    step: the i-th update (jitted inside); metrics: {name: array} (on device; fetched only when
    logged). After every `log_every`-th step and the last, the metrics are fetched, checked (any
    non-finite value raises `metareason.train.TrainingDiverged` naming the step) and logged.
    evaluate(state, steps done) -> {name: value}: at 0 steps and after every `eval_every`-th step
    and the last (eval_every 0: never), untimed. time_first_step False: the clock starts once the
    first step has finished (its compilation untimed; `LoopResult.timed_steps` = steps - 1)."""
    if steps < 1 or log_every < 1 or eval_every < 0:
        raise ValueError(f"steps and log_every must be >= 1 and eval_every >= 0, got {steps}, {log_every}, "
                         f"{eval_every}")
    from tqdm.auto import tqdm

    history: list[dict] = []
    evals: list[dict] = []
    if evaluate is not None and eval_every:
        evals.append({"step": 0, **evaluate(state, 0)})
    seconds, t0 = 0.0, time.perf_counter()
    bar = tqdm(range(steps), desc=desc, unit="step", disable=not progress, mininterval=2)
    for i in bar:
        state, metrics = step(state, i)
        done = i + 1
        if done == 1 and not time_first_step:
            jax.block_until_ready(state)
            t0 = time.perf_counter()
        if done % log_every == 0 or done == steps:
            row = {"step": done, **_fetch(metrics)}
            bad = [k for k, v in row.items() if not np.all(np.isfinite(v))]
            if bad:
                shown = ", ".join(f"{k} {row[k]}" for k in bad if np.ndim(row[k]) == 0) or ", ".join(bad)
                raise TrainingDiverged(f"{desc}: non-finite {', '.join(bad)} at step {done} ({shown}); "
                                       f"lower the learning rate(s)")
            seconds += time.perf_counter() - t0
            row["seconds"] = seconds
            history.append(row)
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if isinstance(v, float) and k != "seconds"})
            t0 = time.perf_counter()
        if evaluate is not None and eval_every and (done % eval_every == 0 or done == steps):
            jax.block_until_ready(state)
            seconds += time.perf_counter() - t0
            evals.append({"step": done, **evaluate(state, done)})
            t0 = time.perf_counter()
    bar.close()
    jax.block_until_ready(state)
    seconds += time.perf_counter() - t0
    return LoopResult(state, history, evals, seconds, steps if time_first_step else steps - 1)
