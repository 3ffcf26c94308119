"""Explicit meta-learning (MAML, PAPER.md Eq 8) of a lab language model, beside SFT on the same data.

The tasks (support = trajectory, query = answer; `metareason.studies.lab_tasks`): the meta arm
minimises L_q(theta - eta * grad L_s(theta)) (k SGD steps on the support loss, then the query loss:
the trajectory is absorbed into the weights, never in context), averaged over the questions of a
step; the SFT arm minimises the SFT loss of the full sequences of the very same questions. One
training loop (`_train`) serves both arms: same init, same question order, same outer optimizer,
same number of steps; only the loss differs (`meta_train_lab` / `sft_train_lab`). Evaluation and
the comparison table: `metareason.studies.lab_eval`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from metareason.inner import make_meta_step
from metareason.model import ModelConfig, init
from metareason.studies.lab_eval import CONDITIONS, evaluate_lab
from metareason.studies.lab_tasks import LabMetaError, LabTasks, masked_nll, select
from metareason.studies.toy_loop import toy_loop
from metareason.train.loss import sft_loss
from metareason.train.presets import model_preset
from metareason.train.state import OptimizerConfig, make_optimizer
from metareason.train.trajectories import question_schedule

__all__ = ["ARMS", "INNER_MODES", "LabMetaConfig", "LabTrainResult", "make_lab_step", "meta_train_lab",
           "sft_train_lab"]

ARMS = ("meta", "sft")
INNER_MODES = ("second_order", "first_order")


@dataclasses.dataclass(frozen=True)
class LabMetaConfig:
    """Training of either arm (both arms share every field; `inner_*` and `mode` are the meta arm's
    inner loop and the evaluation's adaptation)."""

    model: str = "lab-small"
    """Model preset (`metareason.train.presets`)."""
    steps: int = 200
    """Outer steps (the outer learning-rate schedule spans them)."""
    questions_per_step: int = 16
    """Questions (tasks) per outer step."""
    inner_steps: int = 1
    """SGD steps on the support loss per task."""
    inner_lr: float = 0.3
    """Inner SGD learning rate (0: no adaptation)."""
    mode: str = "second_order"
    """"second_order" (differentiate through the inner step) or "first_order" (FOMAML)."""
    optimizer: OptimizerConfig = OptimizerConfig(lr=3e-3, warmup_steps=20)
    """The outer optimizer (AdamW, warm-up + cosine, clipping), identical for both arms."""
    seed: int = 0
    """Model init and question order (identical for both arms)."""
    log_every: int = 10
    eval_every: int = 0
    """Evaluate `eval_tasks` every this many steps (0: never during training)."""
    eval_chunk: int = 32
    """Tasks per compiled evaluation call."""

    def __post_init__(self):
        model_preset(self.model)
        for name in ("steps", "questions_per_step", "inner_steps", "log_every", "eval_chunk"):
            if getattr(self, name) < 1:
                raise LabMetaError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_every < 0:
            raise LabMetaError(f"eval_every must be >= 0, got {self.eval_every}")
        if not (self.inner_lr >= 0 and math.isfinite(self.inner_lr)):
            raise LabMetaError(f"inner_lr must be a finite number >= 0, got {self.inner_lr}")
        if self.mode not in INNER_MODES:
            raise LabMetaError(f"unknown inner mode {self.mode!r} (known: {', '.join(INNER_MODES)})")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


class LabTrainResult(NamedTuple):
    """params: the trained params; history: one dict per logged step ({"step", "loss", "grad_norm",
    "seconds"} plus, for the meta arm, "support_before" / "support_after" means); evals: one dict
    per evaluation ({"step", condition: mean}); seconds: training wall time (evaluations excluded)."""

    params: Any
    history: list
    evals: list
    seconds: float


def make_lab_step(arm: str, cfg: LabMetaConfig, config: ModelConfig,
                  outer: optax.GradientTransformation) -> Callable:
    """`step(params, opt_state, tasks) -> (params, opt_state, metrics)` for `arm`, jitted; tasks:
    `LabTasks` with a leading [T] axis. metrics: "loss", "grad_norm" (and for "meta" the per-task
    "inner_before", "inner_after", "query")."""
    if arm == "meta":
        meta_step = make_meta_step(functools.partial(masked_nll, config=config), optax.sgd(cfg.inner_lr), outer,
                                   steps=cfg.inner_steps, mode=cfg.mode)
        return lambda params, opt_state, tasks: meta_step(params, opt_state, tasks.support, tasks.query)
    if arm == "sft":
        @jax.jit
        def sft_step(params, opt_state, batch):
            (loss, _), grads = jax.value_and_grad(sft_loss, has_aux=True)(params, batch, config=config)
            updates, opt_state = outer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

        return lambda params, opt_state, tasks: sft_step(params, opt_state, tasks.sft)
    raise LabMetaError(f"unknown arm {arm!r} (known: {', '.join(ARMS)})")


def _train(arm: str, cfg: LabMetaConfig, tasks: LabTasks, *, params: Any = None, eval_tasks: LabTasks | None = None,
           progress: bool = True) -> LabTrainResult:
    """The one training loop of both arms (see the module docstring): `toy_loop`, since a lab arm
    trains in memory for minutes and returns its params (no run folder, checkpoints or resume, as
    the run loop of `metareason train` has); a non-finite loss raises `TrainingDiverged`."""
    if arm not in ARMS:
        raise LabMetaError(f"unknown arm {arm!r} (known: {', '.join(ARMS)})")
    if not isinstance(tasks, LabTasks):
        raise LabMetaError(f"tasks must be LabTasks (build_tasks), got {type(tasks).__name__}")
    if cfg.eval_every and eval_tasks is None:
        raise LabMetaError("eval_every > 0 needs eval_tasks")
    config = model_preset(cfg.model)
    if tasks.lengths[2] > config.max_position_embeddings:
        raise LabMetaError(f"sequences of {tasks.lengths[2]} tokens exceed the model's context "
                           f"({config.max_position_embeddings})")
    try:
        schedule = question_schedule(tasks.size, cfg.questions_per_step, cfg.steps, cfg.seed)
    except ValueError as err:
        raise LabMetaError(str(err)) from None
    outer = make_optimizer(cfg.optimizer, cfg.steps)
    params = init(config, jax.random.key(cfg.seed)) if params is None else params
    step_fn = make_lab_step(arm, cfg, config, outer)

    def step(state, i):
        params, opt_state, m = step_fn(*state, select(tasks, schedule[i]))
        logged = {"loss": m["loss"], "grad_norm": m["grad_norm"]}
        if arm == "meta":
            logged.update(support_before=jnp.mean(m["inner_before"]), support_after=jnp.mean(m["inner_after"]))
        return (params, opt_state), logged

    def evaluate(state, done):
        res = evaluate_lab(state[0], eval_tasks, config=config, inner_lr=cfg.inner_lr, inner_steps=cfg.inner_steps,
                           chunk=cfg.eval_chunk)
        return {c: float(res[c].mean()) for c in CONDITIONS}

    run = toy_loop(step, (params, outer.init(params)), cfg.steps, log_every=cfg.log_every,
                   evaluate=evaluate if cfg.eval_every else None, eval_every=cfg.eval_every, desc=arm,
                   progress=progress)
    return LabTrainResult(run.state[0], run.history, run.evals, run.seconds)


def meta_train_lab(cfg: LabMetaConfig, tasks: LabTasks, *, params: Any = None, eval_tasks: LabTasks | None = None,
                   progress: bool = True) -> LabTrainResult:
    """MAML on the lab: each outer step takes `cfg.inner_steps` SGD steps (lr `cfg.inner_lr`) on each
    of `cfg.questions_per_step` questions' support loss (vmapped), then descends the mean query loss
    at the adapted weights (`make_meta_step`). params: start here instead of a fresh init."""
    return _train("meta", cfg, tasks, params=params, eval_tasks=eval_tasks, progress=progress)


def sft_train_lab(cfg: LabMetaConfig, tasks: LabTasks, *, params: Any = None, eval_tasks: LabTasks | None = None,
                  progress: bool = True) -> LabTrainResult:
    """SFT on the same questions, trajectories and answers, step for step (same schedule, init and
    outer optimizer): the token-mean `sft_loss` of `tasks.sft`."""
    return _train("sft", cfg, tasks, params=params, eval_tasks=eval_tasks, progress=progress)
