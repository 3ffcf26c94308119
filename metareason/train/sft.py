"""The SFT outer loop on the synthetic lab: `metareason train`.

    out/
      config.json        the run's config (a resumed run must match it)
      metrics.jsonl      one JSON object per logged step / evaluation
      tb/                TensorBoard event files
      checkpoints/       orbax steps (params, optimizer state, step, RNG) + the data iterator state
      data/              the lab's ArrayRecord dataset (tensorflow-datasets layout)
      summary.json       final evaluation (per-family greedy accuracy on the test split)

Resume (`--resume`) continues from the newest intact checkpoint, with the data iterator
restored, so an interrupted run ends bitwise equal to an uninterrupted one. A non-finite
loss or gradient stops the run with the step and batch named; nothing from that step is
committed and the checkpoints on disk stay the last good ones.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from metareason.model import ModelConfig, init
from metareason.parallel import Placement
from metareason.tasks.lab import LabConfig, encode_example
from metareason.train.checkpoint import Checkpointer, abstract_like
from metareason.train.evaluation import final_evaluation, first_per_family, flat_eval, lab_accuracy
from metareason.train.metrics import MetricsWriter
from metareason.train.presets import model_preset
from metareason.train.rundir import RunOptions, open_run_dir
from metareason.train.state import OptimizerConfig, init_state, make_optimizer
from metareason.train.step import make_train_step
from metareason.train.trajectories import trajectory_slots

__all__ = ["SFTConfig", "train_sft", "TrainingDiverged", "load_run", "sft_config_from_json"]


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient (names the step and the batch)."""

    @classmethod
    def at(cls, metrics: dict, where: str, ckpt: Checkpointer) -> "TrainingDiverged":
        """The error for a step whose metrics are not finite; `where`: "step 7 (batch 6 ...)"."""
        last = max(ckpt.steps(), default=None)
        good = f"step {last} in {ckpt.directory}" if last is not None else f"none yet ({ckpt.directory} is empty)"
        return cls(f"non-finite loss ({float(metrics['loss'])}) or gradient norm ({float(metrics['grad_norm'])}) "
                   f"at {where}; nothing from it was committed, the last good checkpoint is {good}")


@dataclasses.dataclass
class SFTConfig(RunOptions):
    """Supervised fine-tuning of a lab model on programmatically written trajectories."""

    out: Path = Path("runs/sft")
    """Run directory (config, metrics, checkpoints, data, summary)."""
    model: str = "lab-small"
    """Model preset (metareason.train.presets); ignored with `init` (that run's model is used)."""
    init: str = ""
    """A `metareason train` / `metareason rl` run directory whose params to start from ("": a fresh
    init with `seed`)."""
    lab: LabConfig = LabConfig()
    """What the lab generates (families, style, difficulty, sizes, trajectories per question)."""
    k_trajectories: int = 1
    """Trajectories used per question (E10); each question still fills `slots_per_question`."""
    slots_per_question: int = 1
    """Examples per question per epoch (equal training frequency across k)."""
    steps: int = 600
    """Optimizer steps (the learning-rate schedule spans them)."""
    batch_size: int = 8
    """Packed rows per step."""
    seq_len: int = 512
    """Tokens per packed row (a longer example is an error)."""
    packing_bins: int = 0
    """Rows the packer fills at once (0: 4 x batch_size; more packs tighter)."""
    optimizer: OptimizerConfig = OptimizerConfig()


class TrajectorySlots:
    """Random access to training examples: example i is question slots[i, 0] with its
    trajectory number slots[i, 1] (the E10 rule, `trajectory_slots`)."""

    def __init__(self, records: Sequence[dict], slots: np.ndarray):
        self.records, self.slots = records, slots

    def __len__(self) -> int:
        return len(self.slots)

    def __getitem__(self, i: int) -> dict:
        q, t = self.slots[int(i)]
        record = dict(self.records[int(q)])
        record["trajectory"] = record["generations"][int(t)] if record["generations"] else record["trajectory"]
        return record


def _encode(record: dict) -> dict[str, np.ndarray]:
    return encode_example(record["question"], record["trajectory"], record["answer"])


def train_sft(cfg: SFTConfig) -> dict[str, Any]:
    """Runs (or resumes) SFT; returns the summary (also written to out/summary.json)."""
    from tqdm import tqdm

    from metareason.data import build_lab, training_batches

    out = open_run_dir(cfg.out, cfg.to_json(), cfg.resume)

    place = Placement.from_text(cfg.mesh)
    if cfg.init:
        _, model_cfg, params, _ = load_run(cfg.init)
        params = place.params(params, model_cfg)
    else:
        model_cfg = model_preset(cfg.model)
        params = place.init(model_cfg, jax.random.key(cfg.seed))
    optimizer = make_optimizer(cfg.optimizer, cfg.steps)
    state = place.state(init_state(params, optimizer, cfg.seed), model_cfg, optimizer)
    (out / "model_config.json").write_text(json.dumps(dataclasses.asdict(model_cfg), indent=2))
    if cfg.k_trajectories > cfg.lab.trajectories_per_question:
        raise ValueError(f"k_trajectories={cfg.k_trajectories} exceeds the lab's trajectories_per_question="
                         f"{cfg.lab.trajectories_per_question}")
    sources = build_lab(cfg.lab, out / "data")
    slots = trajectory_slots(len(sources["train"]), cfg.k_trajectories, cfg.slots_per_question, cfg.seed)
    dataset = training_batches(TrajectorySlots(sources["train"], slots), _encode, seq_len=cfg.seq_len,
                               batch_size=cfg.batch_size, seed=cfg.seed, num_epochs=None,
                               num_packing_bins=cfg.packing_bins or 4 * cfg.batch_size, too_long="error")
    batches = iter(dataset)
    ckpt = Checkpointer(out / "checkpoints", keep=cfg.keep_checkpoints)
    start = 0
    if cfg.resume:
        restored = ckpt.restore_latest(abstract_like(state))
        if restored is not None:
            start, state, extra = restored
            batches.set_state(extra["data"])
            print(f"resumed from step {start} of {out}", flush=True)
    metrics = MetricsWriter(out, start_step=start)
    step_fn = make_train_step(model_cfg, optimizer)
    val = first_per_family(sources["validation"], cfg.eval_questions)

    t0, tokens_seen = time.perf_counter(), 0
    pbar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="sft", unit="step")
    try:
        with place.context():
            for step in pbar:
                batch = next(batches)
                state, m = step_fn(state, place.batch(batch))
                if not bool(m["finite"]):
                    raise TrainingDiverged.at(m, f"step {step + 1} (batch {step} of the data stream)", ckpt)
                tokens_seen += int(np.asarray(batch["loss_mask"]).sum())
                done = step + 1
                if done % cfg.log_every == 0 or done == cfg.steps:
                    m = jax.device_get(m)
                    row = {"loss": float(m["loss"]), "token_accuracy": float(m["accuracy"]),
                           "grad_norm": float(m["grad_norm"]), "lr": float(cfg.optimizer.schedule(cfg.steps)(done)),
                           "trained_tokens_per_s": tokens_seen / (time.perf_counter() - t0)}
                    metrics.write(done, "train", row)
                    pbar.set_postfix(loss=f"{row['loss']:.3f}")
                if cfg.eval_every and done % cfg.eval_every == 0 and done != cfg.steps:
                    res = lab_accuracy(state.params, model_cfg, val)
                    metrics.write(done, "validation", flat_eval(res))
                if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                    ckpt.save(done, state, {"data": batches.get_state()})
    finally:
        pbar.close()
        ckpt.close()
    summary: dict[str, Any] = {"steps": cfg.steps, "out": str(out), "model": cfg.model,
                               "params": model_cfg.num_params(), "style": cfg.lab.style}
    if cfg.final_eval:
        with place.context():
            summary.update(final_evaluation(state.params, model_cfg, sources, cfg.lab, cfg.eval_questions, metrics,
                                            cfg.steps))
    metrics.close()
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def sft_config_from_json(d: dict) -> SFTConfig:
    """The `SFTConfig` a run's config.json holds (lists back to tuples)."""
    lab = {k: tuple(v) if isinstance(v, list) else v for k, v in d["lab"].items()}
    rest = {k: v for k, v in d.items() if k not in ("lab", "optimizer", "out")}
    return SFTConfig(out=Path(d["out"]), lab=LabConfig(**lab), optimizer=OptimizerConfig(**d["optimizer"]), **rest)


def load_run(run_dir: str | Path) -> tuple[SFTConfig, ModelConfig, Any, int]:
    """(run config, model config, params, step) of a `metareason train` (or `metareason rl`) run
    directory, from its newest intact checkpoint. Raises FileNotFoundError naming what is missing."""
    run_dir = Path(run_dir).absolute()
    cfg_file = run_dir / "config.json"
    if not cfg_file.exists():
        raise FileNotFoundError(f"{run_dir} is not a training run (no config.json)")
    saved = json.loads(cfg_file.read_text())
    if "group_size" in saved:  # a GRPO run
        from metareason.train.rl import load_grpo_run
        return load_grpo_run(run_dir)
    cfg = sft_config_from_json(saved)
    model_file = run_dir / "model_config.json"  # (runs before it was written: the preset)
    model_cfg = ModelConfig(**json.loads(model_file.read_text())) if model_file.exists() else model_preset(cfg.model)
    step, params = restore_params(run_dir, model_cfg, cfg.optimizer, cfg.keep_checkpoints)
    return cfg, model_cfg, params, step


def restore_params(run_dir: Path, model_cfg: ModelConfig, optimizer: OptimizerConfig, keep: int) -> tuple[int, Any]:
    """(step, params) of the newest intact checkpoint of a run directory (SFT or GRPO)."""
    opt = make_optimizer(optimizer, 1)  # the state's structure does not depend on the schedule
    abstract = jax.eval_shape(lambda: init_state(init(model_cfg, jax.random.key(0)), opt, 0))
    if not (run_dir / "checkpoints").is_dir():
        raise FileNotFoundError(f"{run_dir} has no checkpoints/ directory")
    ckpt = Checkpointer(run_dir / "checkpoints", keep=keep)
    try:
        restored = ckpt.restore_latest(abstract)
    finally:
        ckpt.close()
    if restored is None:
        raise FileNotFoundError(f"{run_dir} has no intact checkpoint")
    done, state, _ = restored
    return done, state.params
