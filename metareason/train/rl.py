"""GRPO on the synthetic lab: `metareason rl`.

Each step draws `questions_per_step` training questions (a seeded permutation per epoch), samples
a group of `group_size` rollouts per question with the jit-compiled sampler, scores them with the
paper's reward (`metareason.format.verdict`), normalises the rewards within each group (GRPO or
Dr. GRPO), and takes `epochs_per_batch` x `minibatches` optimizer steps on the clipped policy loss
with a k3 KL penalty to the frozen starting model (`metareason.train.grpo`). With `update_n` < G
only that many randomly chosen rollouts of each group enter the loss (E11).

    out/
      config.json      the run's config (a resumed run must match it)
      metrics.jsonl    per step: reward, accuracy, format rate, length, entropy, KL, clip fraction, ...
      tb/              TensorBoard event files
      checkpoints/     orbax steps (params, optimizer state, update count, RNG)
      tokenizer/       the Hugging Face model's tokenizer (runs started from one; `metareason.load` reads it)
      summary.json     final greedy accuracy on validation / test (/ heldout)

Start from a `metareason train` run (`--init RUN_DIR`: SFT then GRPO, E7), from a fresh model
preset, or from a Hugging Face model directory with `--data FILE` (questions and answers in
.jsonl / .parquet; answers in \\boxed{} judged with Math-Verify). Everything random is a function of (seed, step), so `--resume` continues exactly:
a killed and resumed run ends bitwise equal to an uninterrupted one. A non-finite loss stops the
run naming the step, keeping the last good checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from metareason.data.manual import read_records
from metareason.errors import check_float, check_int, flag_name
from metareason.parallel import Placement
from metareason.runs import Checkpointer, lab_config_from_json
from metareason.sample import SamplingConfig, round_up
from metareason.tasks.lab import LabConfig, lab_records
from metareason.train.evaluation import final_evaluation, first_per_family, flat_eval, lab_accuracy
from metareason.train.grpo import (ADVANTAGES, GRPOLossConfig, group_advantages, grpo_loss, rollout_batch,
                                   sample_rollouts, token_logprobs, update_mask)
from metareason.train.loop import finish, resume, run_loop
from metareason.train.metrics import MetricsWriter
from metareason.train.options import RunOptions, start_run
from metareason.train.state import OptimizerConfig, init_state, make_optimizer
from metareason.train.step import make_train_step
from metareason.train.trajectories import question_schedule

__all__ = ["GRPOConfig", "train_grpo", "grpo_config_from_json"]


def __getattr__(name):
    """`load_grpo_run` lives in `metareason.train.saved`; still reachable here."""
    if name == "load_grpo_run":
        from metareason.train.saved import load_grpo_run
        return load_grpo_run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


ARITH = LabConfig(families=("arith",), difficulty=(1, 2), train_size=4000, eval_size=100)


@dataclasses.dataclass
class GRPOConfig(RunOptions):
    """GRPO (group-relative policy optimisation) of a lab model."""

    out: Path = Path("runs/grpo")
    """Run directory (config, metrics, checkpoints, summary)."""
    init: str = ""
    """Where to start: a `metareason train` / `metareason rl` run directory (SFT then GRPO), a
    Hugging Face model directory (with `data`), or "" for a fresh `model` preset."""
    model: str = "lab-fast"
    """Model preset when `init` is "" (ignored otherwise)."""
    data: str = "lab"
    """"lab" (the questions of `lab`'s training split) or a .jsonl / .parquet file of records
    (question, answer; `metareason.data.manual`), e.g. the ORZ questions for a Hugging Face model."""
    think_prefix: str = ""
    """Hugging Face models: text after the chat template's generation prompt (e.g. "<think>\\n")."""
    lab: LabConfig = ARITH
    """The lab questions (training split) and the evaluation splits."""
    steps: int = 100
    """Rollout batches (each followed by epochs_per_batch x minibatches optimizer steps)."""
    questions_per_step: int = 8
    group_size: int = 8
    """Rollouts per question, G (advantages are normalised within each group)."""
    update_n: int = 0
    """Rollouts per group that enter the loss, chosen at random (E11); 0 means all G."""
    advantage: str = "grpo"
    """"grpo" ((r - mean) / std) or "dr-grpo" (r - mean)."""
    loss: GRPOLossConfig = GRPOLossConfig()
    epochs_per_batch: int = 2
    """Optimisation passes over each rollout batch (the ratio departs from 1 after the first)."""
    minibatches: int = 2
    """Optimizer steps per pass (rows shuffled, then split; must divide questions x group)."""
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    optimizer: OptimizerConfig = OptimizerConfig(lr=1e-4, warmup_steps=3, final_lr_fraction=1.0, weight_decay=0.0)
    """AdamW, constant after warm-up (lr 1e-4 with 2 passes x 2 minibatches raised the lab reward;
    1e-5 to 3e-5 did not move it in 30-60 steps, 3e-4 lowered it)."""
    log_every: int = 1
    """Train metrics every this many steps."""
    checkpoint_every: int = 10
    """Save a checkpoint every this many steps (and at the end)."""

    def __post_init__(self):
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"unknown advantage {self.advantage!r} (known: {', '.join(ADVANTAGES)})")
        for name in ("steps", "questions_per_step", "group_size", "epochs_per_batch", "minibatches",
                     "max_new_tokens", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"GRPO config field {name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.update_n <= self.group_size:
            raise ValueError(f"update_n must be in [0, group_size={self.group_size}], got {self.update_n}")
        if (self.questions_per_step * self.group_size) % self.minibatches:
            raise ValueError(f"minibatches={self.minibatches} must divide questions_per_step x group_size = "
                             f"{self.questions_per_step * self.group_size}")

    def validate(self, prefix: str = "--") -> None:
        """`ConfigError` naming the flag of the first setting out of range (run by `metareason rl`
        before any work; the counts above are checked on construction)."""
        RunOptions.validate(self, prefix)
        check_float(flag_name(prefix, "temperature"), self.temperature, 0, lo_open=True)
        check_float(flag_name(prefix, "top_p"), self.top_p, 0, 1, lo_open=True)
        self.lab.validate(prefix + "lab.")
        self.loss.validate(prefix + "loss.")
        self.optimizer.validate(prefix + "optimizer.")


def _questions(cfg: GRPOConfig) -> list[dict]:
    """The training questions: the lab's training split, or the records of the file `cfg.data`."""
    return list(lab_records(cfg.lab, "train")) if cfg.data == "lab" else read_records(cfg.data).records


def _grpo_step(cfg: GRPOConfig, train_step, *, fmt, config, records: list[dict], ref_params, place: Placement):
    """GRPO's outer step `step(state, (step, questions)) -> (state, metrics)`: `group_size` rollouts
    of each question, their rewards and group advantages, then `epochs_per_batch` passes of
    `minibatches` updates (`train_step`). Its randomness is a function of (seed, step). At a
    non-finite update it returns at once (the last good state; metrics["pass"] names the pass)."""
    G, Q = cfg.group_size, cfg.questions_per_step
    prompts = [fmt.prompt(r) for r in records]
    width = round_up(max(len(p) for p in prompts), 8)
    sampling = SamplingConfig(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                              stop_tokens=fmt.stop_tokens, pad_id=fmt.pad_id)
    logprobs = jax.jit(functools.partial(token_logprobs, config=config, temperature=cfg.temperature))
    root = jax.random.key(cfg.seed)

    def step(state, inputs):
        index, qs = inputs
        t0 = time.perf_counter()
        keys = jax.random.split(jax.random.fold_in(root, index), 3)  # sampling, update mask, minibatch order
        tokens, lengths = sample_rollouts(state.params, config, [prompts[q] for q in qs], group=G, width=width,
                                          sampling=sampling, key=keys[0])
        verdicts = [fmt.verdict(tokens[b, :lengths[b]], records[qs[b // G]]) for b in range(Q * G)]
        rewards = np.asarray([v.reward for v in verdicts], np.float32).reshape(Q, G)
        batch = rollout_batch([prompts[q] for q in qs], tokens, lengths, group=G, width=width)
        batch["advantages"] = np.asarray(group_advantages(rewards, cfg.advantage)).reshape(-1)
        batch["update_mask"] = np.asarray(update_mask(keys[1], Q, G, cfg.update_n or G))
        batch["old_logprobs"] = np.asarray(logprobs(state.params, batch["tokens"])[0]) * batch["loss_mask"]
        batch["ref_logprobs"] = (np.asarray(logprobs(ref_params, batch["tokens"])[0]) * batch["loss_mask"]
                                 if cfg.loss.kl_coef > 0 else batch["old_logprobs"])
        t_roll = time.perf_counter() - t0
        ms = []
        for epoch in range(cfg.epochs_per_batch):
            order = np.asarray(jax.random.permutation(jax.random.fold_in(keys[2], epoch), Q * G))
            for part in np.split(order, cfg.minibatches):
                state, m = train_step(state, place.batch({k: v[part] for k, v in batch.items()}))
                if not bool(m["finite"]):
                    return state, dict(m, **{"pass": epoch})
                ms.append(jax.device_get(m))
        row = {"reward": float(rewards.mean()), "accuracy": float(np.mean([v.correct for v in verdicts])),
               "format_rate": float(np.mean([v.well_formed for v in verdicts])), "mean_length": float(lengths.mean()),
               "zero_advantage_groups": float(np.mean(rewards.std(axis=1) == 0)), "rollout_seconds": t_roll,
               "step_seconds": time.perf_counter() - t0}
        for k in ("loss", "policy_loss", "kl", "entropy", "clip_fraction", "ratio", "grad_norm"):
            row[k] = float(np.mean([m[k] for m in ms]))
        return state, dict(row, finite=True)
    return step


def train_grpo(cfg: GRPOConfig) -> dict[str, Any]:
    """Runs (or resumes) GRPO; returns the summary (also written to out/summary.json)."""
    out, place, start = start_run(cfg, GRPOConfig)
    model_cfg = start.config
    if cfg.init:
        source = f"{cfg.init}" + (f" (step {start.step})" if start.step is not None else "")
    else:
        source = f"fresh {cfg.model} (seed {cfg.seed})"
    lab_eval = cfg.data == "lab"  # greedy lab accuracy during and after training (else: `metareason eval`)
    # the frozen reference (a copy: the train step donates the policy's buffers)
    ref_params = jax.tree.map(lambda x: x.copy(), start.params) if cfg.loss.kl_coef > 0 else None
    updates = cfg.steps * cfg.epochs_per_batch * cfg.minibatches
    optimizer = make_optimizer(cfg.optimizer, updates)
    state = place.state(init_state(start.params, optimizer, cfg.seed), model_cfg, optimizer)
    ckpt = Checkpointer(out / "checkpoints", keep=cfg.keep_checkpoints)
    begin, state, _ = resume(ckpt, state, enabled=cfg.resume, out=out)
    metrics = MetricsWriter(out, start_step=begin)
    records = _questions(cfg)
    train_step = make_train_step(model_cfg, optimizer,
                                 functools.partial(grpo_loss, loss=cfg.loss, temperature=cfg.temperature))
    step_fn = _grpo_step(cfg, train_step, fmt=start.format, config=model_cfg, records=records, ref_params=ref_params,
                         place=place)
    schedule = question_schedule(len(records), cfg.questions_per_step, cfg.steps, cfg.seed)
    val = first_per_family(list(lab_records(cfg.lab, "validation")), cfg.eval_questions) if (
        cfg.eval_every and lab_eval) else []
    lr = cfg.optimizer.schedule(updates)

    def train_row(done, state, window, seconds):
        row = {k: v for k, v in window[-1].items() if k != "finite"}
        return dict(row, lr=float(lr(int(state.step))))

    with place.context():
        state = run_loop(
            state, step_fn, ((s, schedule[s]) for s in range(begin, cfg.steps)), start_step=begin,
            num_steps=cfg.steps, checkpointer=ckpt, metrics=metrics, log_every=cfg.log_every,
            checkpoint_every=cfg.checkpoint_every, train_row=train_row, checkpoint_extra=lambda done: {"step": done},
            where=lambda step, m: f"rollout batch {step}, pass {m['pass']}",
            evaluate=(lambda state: flat_eval(lab_accuracy(state.params, model_cfg, val))) if val else None,
            eval_every=cfg.eval_every, desc="grpo", postfix=("reward", "accuracy"))
    summary: dict[str, Any] = {"steps": cfg.steps, "out": str(out), "start": source, "params": model_cfg.num_params()}
    if cfg.final_eval and lab_eval:
        with place.context():
            summary.update(final_evaluation(state.params, model_cfg, lambda s: list(lab_records(cfg.lab, s)),
                                            cfg.lab, cfg.eval_questions, metrics, cfg.steps))
    return finish(out, summary, metrics)


def grpo_config_from_json(d: dict) -> GRPOConfig:
    """The `GRPOConfig` a run's config.json holds (lists back to tuples)."""
    rest = {k: v for k, v in d.items() if k not in ("lab", "optimizer", "loss", "out")}
    return GRPOConfig(out=Path(d["out"]), lab=lab_config_from_json(d["lab"]), optimizer=OptimizerConfig(**d["optimizer"]),
                      loss=GRPOLossConfig(**d["loss"]), **rest)
