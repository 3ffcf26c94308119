"""GRPO on the synthetic lab: `metareason rl`.

Each step draws `questions_per_step` training questions (a seeded permutation per epoch), samples
a group of `group_size` rollouts per question with the jit-compiled sampler, scores them with the
paper's reward (`metareason.evaluate.rewards`), normalises the rewards within each group (GRPO or
Dr. GRPO), and takes `epochs_per_batch` x `minibatches` optimizer steps on the clipped policy loss
with a k3 KL penalty to the frozen starting model (`metareason.train.grpo`). With `update_n` < G
only that many randomly chosen rollouts of each group enter the loss (E11).

    out/
      config.json      the run's config (a resumed run must match it)
      metrics.jsonl    per step: reward, accuracy, format rate, length, entropy, KL, clip fraction, ...
      tb/              TensorBoard event files
      checkpoints/     orbax steps (params, optimizer state, update count, RNG)
      tokenizer/       the Hugging Face model's tokenizer (runs started from one; `load_model` reads it)
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
import json
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from metareason.model import ModelConfig
from metareason.parallel import Placement
from metareason.tasks.lab import LabConfig
from metareason.train.checkpoint import Checkpointer, abstract_like
from metareason.train.evaluation import final_evaluation, first_per_family, flat_eval, lab_accuracy
from metareason.train.grpo import ADVANTAGES, GRPOLossConfig, grpo_loss, group_advantages, token_logprobs, update_mask
from metareason.train.metrics import MetricsWriter
from metareason.train.rundir import RunOptions, copy_tokenizer, defaults_json, open_run_dir, start_model
from metareason.train.sft import TrainingDiverged, restore_params
from metareason.train.state import OptimizerConfig, init_state, make_optimizer
from metareason.train.step import make_train_step
from metareason.train.trajectories import question_schedule

__all__ = ["GRPOConfig", "train_grpo", "sample_rollouts", "rollout_batch", "load_grpo_run", "grpo_config_from_json"]

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


@dataclasses.dataclass(frozen=True)
class _Start:
    config: ModelConfig
    params: Any
    source: str
    fmt: Any
    records: list
    kind: str = "lab"
    """"lab" or "hf" (`metareason.probe.run.load_model`): an "hf" start's tokenizer is copied into the run."""


def _start(cfg: GRPOConfig, place: Placement) -> _Start:
    """The starting model (on `place`), how it is prompted and judged, and its training questions."""
    from metareason.evaluate.formats import HFFormat, LabFormat
    from metareason.tasks.lab import lab_records

    kind, model_cfg, params, extra = start_model(cfg, place)
    if cfg.init:
        source = f"{cfg.init}" + (f" (step {extra['step']})" if "step" in extra else "")
    else:
        source = f"fresh {cfg.model} (seed {cfg.seed})"
    if cfg.data == "lab":
        if kind != "lab":
            raise ValueError(f"a Hugging Face model ({cfg.init}) needs --data FILE (.jsonl or .parquet questions)")
        return _Start(model_cfg, params, source, LabFormat(), list(lab_records(cfg.lab, "train")))
    from metareason.data.manual import read_records
    fmt = LabFormat() if kind == "lab" else HFFormat(extra["tokenizer"], think_prefix=cfg.think_prefix)
    return _Start(model_cfg, params, source, fmt, read_records(cfg.data).records, kind)


def sample_rollouts(params: Any, config: ModelConfig, prompts: list[list[int]], *, group: int, width: int,
                    sampling, key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """`group` samples per prompt in one fixed-shape `generate` call (rows q * group .. q * group +
    group - 1 belong to prompt q). Prompts are right-padded to `width`. Returns (tokens int32[B, N],
    lengths int32[B]) on the host, B = len(prompts) * group."""
    from metareason.sample import generate

    B = len(prompts) * group
    arr = np.full((B, width), sampling.pad_id, np.int32)
    lens = np.empty(B, np.int32)
    for q, p in enumerate(prompts):
        arr[q * group:(q + 1) * group, :len(p)] = p
        lens[q * group:(q + 1) * group] = len(p)
    out = jax.device_get(generate(params, arr, lens, config=config, sampling=sampling, key=key))
    return np.asarray(out.tokens), np.asarray(out.lengths)


def rollout_batch(prompts: list[list[int]], tokens: np.ndarray, lengths: np.ndarray, *, group: int,
                  width: int) -> dict[str, np.ndarray]:
    """The training layout of rollouts: rows `[prompt | completion | pad]` of width + N tokens
    (tokens int32[B, S]) with loss_mask float32[B, S] on the completion tokens."""
    B, N = tokens.shape
    out = np.zeros((B, width + N), np.int32)
    mask = np.zeros((B, width + N), np.float32)
    for b in range(B):
        p = prompts[b // group]
        n = int(lengths[b])
        out[b, :len(p)] = p
        out[b, len(p):len(p) + n] = tokens[b, :n]
        mask[b, len(p):len(p) + n] = 1.0
    return {"tokens": out, "loss_mask": mask}


def train_grpo(cfg: GRPOConfig) -> dict[str, Any]:
    """Runs (or resumes) GRPO; returns the summary (also written to out/summary.json)."""
    from tqdm import tqdm

    from metareason.sample import SamplingConfig, round_up
    from metareason.tasks.lab import lab_records

    out = open_run_dir(cfg.out, cfg.to_json(), cfg.resume, defaults_json(GRPOConfig))
    place = Placement.from_text(cfg.mesh)
    policy = _start(cfg, place)
    if policy.kind == "hf":
        copy_tokenizer(cfg.init, out)
    (out / "model_config.json").write_text(json.dumps(dataclasses.asdict(policy.config), indent=2))
    model_cfg, fmt, records = policy.config, policy.fmt, policy.records
    lab_eval = cfg.data == "lab"  # greedy lab accuracy during and after training (else: `metareason eval`)
    # the frozen reference (a copy: the train step donates the policy's buffers)
    ref_params = jax.tree.map(lambda x: x.copy(), policy.params) if cfg.loss.kl_coef > 0 else None
    prompts = [fmt.prompt(r) for r in records]
    width = round_up(max(len(p) for p in prompts), 8)
    sampling = SamplingConfig(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                              stop_tokens=fmt.stop_tokens, pad_id=fmt.pad_id)
    schedule = question_schedule(len(records), cfg.questions_per_step, cfg.steps, cfg.seed)
    G, Q = cfg.group_size, cfg.questions_per_step
    n_update = cfg.update_n or G
    updates_per_step = cfg.epochs_per_batch * cfg.minibatches
    optimizer = make_optimizer(cfg.optimizer, cfg.steps * updates_per_step)
    state = place.state(init_state(policy.params, optimizer, cfg.seed), model_cfg, optimizer)
    ckpt = Checkpointer(out / "checkpoints", keep=cfg.keep_checkpoints)
    start = 0
    if cfg.resume:
        restored = ckpt.restore_latest(abstract_like(state))
        if restored is not None:
            start, state, _ = restored
            print(f"resumed from step {start} of {out}", flush=True)
    metrics = MetricsWriter(out, start_step=start)
    loss_fn = functools.partial(grpo_loss, loss=cfg.loss, temperature=cfg.temperature)
    step_fn = make_train_step(model_cfg, optimizer, loss_fn)
    logprobs = jax.jit(functools.partial(token_logprobs, config=model_cfg, temperature=cfg.temperature))
    val = first_per_family(list(lab_records(cfg.lab, "validation")), cfg.eval_questions) if (
        cfg.eval_every and lab_eval) else []
    root = jax.random.key(cfg.seed)

    pbar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="grpo", unit="step")
    try:
        with place.context():
            for step in pbar:
                t0 = time.perf_counter()
                keys = jax.random.split(jax.random.fold_in(root, step), 3)  # sampling, update mask, minibatch order
                qs = schedule[step]
                tokens, lengths = sample_rollouts(state.params, model_cfg, [prompts[q] for q in qs], group=G,
                                                  width=width, sampling=sampling, key=keys[0])
                verdicts = [fmt.verdict(tokens[b, :lengths[b]], records[qs[b // G]]) for b in range(Q * G)]
                rewards = np.asarray([v.reward for v in verdicts], np.float32).reshape(Q, G)
                batch = rollout_batch([prompts[q] for q in qs], tokens, lengths, group=G, width=width)
                batch["advantages"] = np.asarray(group_advantages(rewards, cfg.advantage)).reshape(-1)
                batch["update_mask"] = np.asarray(update_mask(keys[1], Q, G, n_update))
                batch["old_logprobs"] = np.asarray(logprobs(state.params, batch["tokens"])[0]) * batch["loss_mask"]
                batch["ref_logprobs"] = (np.asarray(logprobs(ref_params, batch["tokens"])[0]) * batch["loss_mask"]
                                         if cfg.loss.kl_coef > 0 else batch["old_logprobs"])
                t_roll = time.perf_counter() - t0
                ms = []
                for epoch in range(cfg.epochs_per_batch):
                    order = np.asarray(jax.random.permutation(jax.random.fold_in(keys[2], epoch), Q * G))
                    for part in np.split(order, cfg.minibatches):
                        mb = {k: v[part] for k, v in batch.items()}
                        state, m = step_fn(state, place.batch(mb))
                        if not bool(m["finite"]):
                            raise TrainingDiverged.at(m, f"step {step + 1} (rollout batch {step}, pass {epoch})", ckpt)
                        ms.append(jax.device_get(m))
                done = step + 1
                if done % cfg.log_every == 0 or done == cfg.steps:
                    std = rewards.std(axis=1)
                    row = {"reward": float(rewards.mean()), "accuracy": float(np.mean([v.correct for v in verdicts])),
                           "format_rate": float(np.mean([v.well_formed for v in verdicts])),
                           "mean_length": float(lengths.mean()), "zero_advantage_groups": float(np.mean(std == 0)),
                           "lr": float(cfg.optimizer.schedule(cfg.steps * updates_per_step)(int(state.step))),
                           "rollout_seconds": t_roll, "step_seconds": time.perf_counter() - t0}
                    for k in ("loss", "policy_loss", "kl", "entropy", "clip_fraction", "ratio", "grad_norm"):
                        row[k] = float(np.mean([m[k] for m in ms]))
                    metrics.write(done, "train", row)
                    pbar.set_postfix(reward=f"{row['reward']:.3f}", acc=f"{row['accuracy']:.2f}")
                if val and done % cfg.eval_every == 0 and done != cfg.steps:
                    metrics.write(done, "validation", flat_eval(lab_accuracy(state.params, model_cfg, val)))
                if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                    ckpt.save(done, state, {"step": done})
    finally:
        pbar.close()
        ckpt.close()
    summary: dict[str, Any] = {"steps": cfg.steps, "out": str(out), "start": policy.source,
                               "params": model_cfg.num_params()}
    if cfg.final_eval and lab_eval:
        with place.context():
            summary.update(final_evaluation(state.params, model_cfg, lambda s: list(lab_records(cfg.lab, s)),
                                            cfg.lab, cfg.eval_questions, metrics, cfg.steps))
    metrics.close()
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def grpo_config_from_json(d: dict) -> GRPOConfig:
    """The `GRPOConfig` a run's config.json holds (lists back to tuples)."""
    lab = {k: tuple(v) if isinstance(v, list) else v for k, v in d["lab"].items()}
    rest = {k: v for k, v in d.items() if k not in ("lab", "optimizer", "loss", "out")}
    return GRPOConfig(out=Path(d["out"]), lab=LabConfig(**lab), optimizer=OptimizerConfig(**d["optimizer"]),
                      loss=GRPOLossConfig(**d["loss"]), **rest)


def load_grpo_run(run_dir: str | Path) -> tuple[GRPOConfig, ModelConfig, Any, int]:
    """(run config, model config, params, step) of a `metareason rl` run directory, from its
    newest intact checkpoint. Raises FileNotFoundError naming what is missing."""
    run_dir = Path(run_dir).absolute()
    for name in ("config.json", "model_config.json", "checkpoints"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir} is not a GRPO run (no {name})")
    cfg = grpo_config_from_json(json.loads((run_dir / "config.json").read_text()))
    model_cfg = ModelConfig(**json.loads((run_dir / "model_config.json").read_text()))
    step, params = restore_params(run_dir, model_cfg, cfg.optimizer, cfg.keep_checkpoints)
    return cfg, model_cfg, params, step
