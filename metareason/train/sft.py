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
from typing import Any

import jax
import numpy as np

from metareason.model import init
from metareason.tasks.lab import LabConfig, encode_example, lab_records
from metareason.train.checkpoint import Checkpointer, abstract_like
from metareason.train.evaluation import lab_accuracy
from metareason.train.metrics import MetricsWriter
from metareason.train.presets import model_preset
from metareason.train.state import OptimizerConfig, init_state, make_optimizer
from metareason.train.step import make_train_step
from metareason.train.trajectories import trajectory_slots

__all__ = ["SFTConfig", "train_sft", "TrainingDiverged"]


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient (names the step and the batch)."""


@dataclasses.dataclass
class SFTConfig:
    """Supervised fine-tuning of a lab model on programmatically written trajectories."""

    out: Path = Path("runs/sft")
    """Run directory (config, metrics, checkpoints, data, summary)."""
    model: str = "lab-small"
    """Model preset (metareason.train.presets)."""
    lab: LabConfig = LabConfig()
    """What the lab generates (families, style, difficulty, sizes, trajectories per question)."""
    k_trajectories: int = 1
    """Trajectories used per question (E10); each question still fills `slots_per_question`."""
    slots_per_question: int = 1
    """Examples per question per epoch (equal training frequency across k)."""
    steps: int = 600
    batch_size: int = 8
    """Packed rows per step."""
    seq_len: int = 512
    """Tokens per packed row."""
    optimizer: OptimizerConfig = OptimizerConfig()
    log_every: int = 10
    eval_every: int = 0
    """Greedy validation accuracy every this many steps (0: only at the end)."""
    eval_questions: int = 50
    """Validation/test questions per family used by evaluation."""
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    resume: bool = False
    """Continue from the newest intact checkpoint in `out`."""
    seed: int = 0
    final_eval: bool = True

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["out"] = str(self.out)
        d.pop("resume")
        return d


def _examples(cfg: SFTConfig) -> list[dict[str, np.ndarray]]:
    """Encoded training examples in a fixed order (E10 slot rule applied)."""
    if cfg.k_trajectories > cfg.lab.trajectories_per_question:
        raise ValueError(f"k_trajectories={cfg.k_trajectories} exceeds the lab's trajectories_per_question="
                         f"{cfg.lab.trajectories_per_question}")
    records = list(lab_records(cfg.lab, "train"))
    slots = trajectory_slots(len(records), cfg.k_trajectories, cfg.slots_per_question, cfg.seed)
    return [encode_example(records[q]["question"], records[q]["generations"][t], records[q]["answer"])
            for q, t in slots]


def _eval_records(cfg: SFTConfig, split: str) -> list[dict]:
    per_family: dict[str, int] = {}
    out = []
    for r in lab_records(cfg.lab, split):
        if per_family.get(r["family"], 0) < cfg.eval_questions:
            per_family[r["family"]] = per_family.get(r["family"], 0) + 1
            out.append(r)
    return out


def train_sft(cfg: SFTConfig) -> dict[str, Any]:
    """Runs (or resumes) SFT; returns the summary (also written to out/summary.json)."""
    from tqdm import tqdm

    from metareason.data.pipeline import PackedBatches

    out = cfg.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    cfg_file = out / "config.json"
    if cfg.resume and cfg_file.exists():
        saved = json.loads(cfg_file.read_text())
        if saved != json.loads(json.dumps(cfg.to_json())):
            diff = sorted(k for k in saved if saved[k] != json.loads(json.dumps(cfg.to_json())).get(k))
            raise ValueError(f"--resume with a different config than {cfg_file} (differs in: {', '.join(diff)})")
    elif cfg_file.exists() and any((out / "checkpoints").glob("[0-9]*")):
        raise ValueError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    cfg_file.write_text(json.dumps(cfg.to_json(), indent=2))

    model_cfg = model_preset(cfg.model)
    optimizer = make_optimizer(dataclasses.replace(cfg.optimizer, total_steps=cfg.steps))
    state = init_state(init(model_cfg, jax.random.key(cfg.seed)), optimizer, cfg.seed)
    batches = PackedBatches(_examples(cfg), batch_size=cfg.batch_size, seq_len=cfg.seq_len, seed=cfg.seed)
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
    val = _eval_records(cfg, "validation")

    t0, tokens_seen = time.perf_counter(), 0
    pbar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="sft", unit="step")
    try:
        for step in pbar:
            batch = next(batches)
            state, m = step_fn(state, batch)
            if not bool(m["finite"]):
                raise TrainingDiverged(
                    f"non-finite loss ({float(m['loss'])}) or gradient norm ({float(m['grad_norm'])}) at step "
                    f"{step + 1} (batch {step} of the data stream); nothing from it was committed, the last good "
                    f"checkpoint is step {max(ckpt.steps(), default=0)} in {ckpt.directory}")
            tokens_seen += int(np.asarray(batch["loss_mask"]).sum())
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                m = jax.device_get(m)
                row = {"loss": float(m["loss"]), "token_accuracy": float(m["accuracy"]),
                       "grad_norm": float(m["grad_norm"]), "lr": float(optimizer_lr(cfg, done)),
                       "trained_tokens_per_s": tokens_seen / (time.perf_counter() - t0)}
                metrics.write(done, "train", row)
                pbar.set_postfix(loss=f"{row['loss']:.3f}")
            if cfg.eval_every and done % cfg.eval_every == 0 and done != cfg.steps:
                res = lab_accuracy(state.params, model_cfg, val)
                metrics.write(done, "validation", _flat_eval(res))
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                ckpt.save(done, state, {"data": batches.get_state()})
    finally:
        pbar.close()
        ckpt.close()
    summary: dict[str, Any] = {"steps": cfg.steps, "out": str(out), "model": cfg.model,
                               "params": model_cfg.num_params(), "style": cfg.lab.style}
    if cfg.final_eval:
        for split in ("validation", "test") + (("heldout",) if cfg.lab.heldout_families else ()):
            res = lab_accuracy(state.params, model_cfg, _eval_records(cfg, split))
            summary[split] = res
            metrics.write(cfg.steps, split, _flat_eval(res))
        print(f"test greedy accuracy {summary['test']['accuracy']:.3f} "
              f"({', '.join(f'{f} {r['accuracy']:.2f}' for f, r in summary['test']['per_family'].items())})")
    metrics.close()
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def optimizer_lr(cfg: SFTConfig, step: int) -> float:
    return float(dataclasses.replace(cfg.optimizer, total_steps=cfg.steps).schedule()(step))


def _flat_eval(res: dict) -> dict[str, float]:
    row = {"accuracy": res["accuracy"], "format_rate": res["format_rate"], "mean_length": res["mean_length"]}
    for fam, r in res["per_family"].items():
        row[f"accuracy/{fam}"] = r["accuracy"]
    return row

