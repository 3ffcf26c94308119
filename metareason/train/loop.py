"""The one run loop of SFT and GRPO: resume, checkpoints, metrics, divergence, periodic
evaluation and progress, around a step function.

    ckpt = Checkpointer(out / "checkpoints", keep=3)
    start, state, extra = resume(ckpt, state, enabled=cfg.resume, out=out)
    metrics = MetricsWriter(out, start_step=start)
    state = run_loop(state, step_fn, batches, start_step=start, num_steps=cfg.steps, checkpointer=ckpt,
                     metrics=metrics, log_every=10, checkpoint_every=100, train_row=row)

`step_fn(state, batch) -> (state, metrics)`: one step of the run (SFT: one optimizer step on a
packed batch; GRPO: rollouts, then its minibatch updates). `metrics["finite"]` False means the
step was not committed (the returned state is the last good one, `make_train_step`'s guarantee),
and the loop stops with `TrainingDiverged`, naming the step and where (`where(step, metrics)`),
leaving the checkpoints on disk the last good ones. The loop also checks every step's updated
state (params and optimizer state: every floating leaf) is finite, so a finite loss with a
non-finite update (e.g. an infinite learning rate) stops the run the same way, before anything
of it is logged or saved. Everything a step draws at random must be a
function of (seed, step) or of the resumed data iterator, so a resumed run ends bitwise equal
to an uninterrupted one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
from tqdm import tqdm

from metareason.runs import Checkpointer, abstract_like
from metareason.train.metrics import MetricsWriter

__all__ = ["TrainingDiverged", "resume", "run_loop", "finish", "state_finite"]

StepFn = Callable[[Any, Any], tuple[Any, dict]]


class TrainingDiverged(RuntimeError):
    """A non-finite loss, gradient or updated state (names the step and the batch)."""

    @staticmethod
    def _good(ckpt: Checkpointer) -> str:
        last = max(ckpt.steps(), default=None)
        return f"step {last} in {ckpt.directory}" if last is not None else f"none yet ({ckpt.directory} is empty)"

    @classmethod
    def at(cls, metrics: dict, where: str, ckpt: Checkpointer) -> "TrainingDiverged":
        """The error for a step whose metrics are not finite; `where`: "step 7 (batch 6 ...)"."""
        return cls(f"non-finite loss ({float(metrics['loss'])}) or gradient norm ({float(metrics['grad_norm'])}) "
                   f"at {where}; nothing from it was committed, the last good checkpoint is {cls._good(ckpt)}")

    @classmethod
    def state_at(cls, where: str, ckpt: Checkpointer) -> "TrainingDiverged":
        """The error for a step whose updated params or optimizer state are not finite."""
        return cls(f"non-finite params or optimizer state after the update at {where} (loss and gradient norm "
                   f"were finite: check the learning rate); it was neither logged nor saved, the last good "
                   f"checkpoint is {cls._good(ckpt)}")


@jax.jit
def state_finite(state: Any) -> jax.Array:
    """bool[]: every floating leaf of `state` (params, optimizer state) is finite everywhere."""
    leaves = [jnp.isfinite(x).all() for x in jax.tree.leaves(state)
              if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def resume(ckpt: Checkpointer, state: Any, *, enabled: bool, out: Path) -> tuple[int, Any, dict]:
    """(start step, state, checkpoint extra): the newest intact checkpoint's when `enabled` and
    there is one (restored into `state`'s shapes, dtypes and shardings), else (0, state, {}).
    Refuses an unwritable checkpoint folder first (one line, before any step runs); damaged
    checkpoints newer than the one resumed are moved aside (`Checkpointer.restore_latest`)."""
    ckpt.check_writable()
    if enabled:
        restored = ckpt.restore_latest(abstract_like(state))
        if restored is not None:
            print(f"resumed from step {restored[0]} of {out}", flush=True)
            return restored
    return 0, state, {}


def run_loop(state: Any, step_fn: StepFn, batches: Iterable, *, start_step: int, num_steps: int,
             checkpointer: Checkpointer, metrics: MetricsWriter, log_every: int, checkpoint_every: int,
             train_row: Callable[[int, Any, list[dict], float], dict],
             checkpoint_extra: Callable[[int], dict] = lambda done: {},
             where: Callable[[int, dict], str] = lambda step, m: f"batch {step}",
             evaluate: Callable[[Any], dict] | None = None, eval_every: int = 0,
             desc: str = "train", postfix: tuple[str, ...] = ("loss",)) -> Any:
    """Runs steps `start_step` .. `num_steps` - 1 (0-based; step s is followed by "done" = s + 1)
    and returns the final state. Closes `checkpointer` (also on error).

    batches: the steps' inputs, the first one for step `start_step` (the loop ends early if they run out).
    After step s (done = s + 1):
      - a non-finite step (loss, gradient norm, or any floating leaf of the updated state) raises
        TrainingDiverged "at step {done} ({where(s, metrics)})";
      - every `log_every` and at the end, `train_row(done, state, window, seconds)` (window: the
        host metrics of the steps since the last row; seconds: wall time since the loop started) is
        written to `metrics` as split "train" and its `postfix` keys shown on the progress bar;
      - every `eval_every` (0: never) but the last, `evaluate(state)` is written as "validation";
      - every `checkpoint_every` and at the end, the state is saved with `checkpoint_extra(done)`."""
    for name, every in (("log_every", log_every), ("checkpoint_every", checkpoint_every)):
        if every < 1:
            raise ValueError(f"{name} must be at least 1, got {every}")
    window: list[dict] = []
    t0 = time.perf_counter()
    pbar = tqdm(range(start_step, num_steps), initial=start_step, total=num_steps, desc=desc, unit="step")
    try:
        for step, batch in zip(pbar, batches):
            state, m = step_fn(state, batch)
            done = step + 1
            if not bool(m["finite"]):
                raise TrainingDiverged.at(m, f"step {done} ({where(step, m)})", checkpointer)
            if not bool(state_finite(state)):
                raise TrainingDiverged.state_at(f"step {done} ({where(step, m)})", checkpointer)
            window.append(m)
            if done % log_every == 0 or done == num_steps:
                row = train_row(done, state, jax.device_get(window), time.perf_counter() - t0)
                metrics.write(done, "train", row)
                pbar.set_postfix({k: f"{row[k]:.3f}" for k in postfix})
                window = []
            if evaluate is not None and eval_every and done % eval_every == 0 and done != num_steps:
                metrics.write(done, "validation", evaluate(state))
            if done % checkpoint_every == 0 or done == num_steps:
                checkpointer.save(done, state, checkpoint_extra(done))
    finally:
        pbar.close()
        checkpointer.close()
    return state


def finish(out: Path, summary: dict, metrics: MetricsWriter) -> dict:
    """Closes the run's metrics and writes `summary` to out/summary.json; returns it."""
    metrics.close()
    (Path(out) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
