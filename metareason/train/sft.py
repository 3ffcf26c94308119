"""The SFT outer loop: `metareason train`, on the synthetic lab or on a file of generations.

    metareason train --preset arith-long --out runs/sft-arith-long                  # the lab
    metareason train --init path/to/hf-model --data gens.jsonl --think-prefix $'<think>\\n' --out runs/sft-hf

With `--data FILE` (.jsonl / .parquet records: question, answer, generations; the paper's
format, `metareason.data.manual`) each question's `generations` are its trajectories (the E10
rule: `k_trajectories` of them in `slots_per_question` examples; questions with fewer are
skipped), encoded by the model's format (`metareason.evaluate.formats`: the chat template and
`think_prefix` for a Hugging Face model, loss on the generation and the eos). `--init` is then
required: a Hugging Face model directory, or a previous run.

    out/
      config.json        the run's config (a resumed run must match it)
      model_config.json  the model's config
      metrics.jsonl      one JSON object per logged step / evaluation
      tb/                TensorBoard event files
      checkpoints/       orbax steps (params, optimizer state, step, RNG) + the data iterator state
      data/              the lab's ArrayRecord dataset (tensorflow-datasets layout; lab data only)
      tokenizer/         the Hugging Face model's tokenizer (runs started from one), so the run
                         loads, samples and evaluates as that model does
      summary.json       final evaluation (lab data: per-family greedy accuracy on the test split)

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
from metareason.tasks.lab import LabConfig
from metareason.train.checkpoint import Checkpointer, abstract_like
from metareason.train.evaluation import final_evaluation, first_per_family, flat_eval, lab_accuracy
from metareason.train.metrics import MetricsWriter
from metareason.train.presets import model_preset
from metareason.train.rundir import RunOptions, copy_tokenizer, defaults_json, open_run_dir, start_model
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
    """Supervised fine-tuning on trajectories: the lab's programmatically written ones, or the
    generations of a data file (a Hugging Face model, or a previous run, with `init`)."""

    out: Path = Path("runs/sft")
    """Run directory (config, metrics, checkpoints, data, summary)."""
    model: str = "lab-small"
    """Model preset (metareason.train.presets); ignored with `init` (that model is used)."""
    init: str = ""
    """Where to start: a `metareason train` / `metareason rl` run directory, a Hugging Face model
    directory (with `data`), or "" for a fresh init of `model` with `seed`."""
    data: str = "lab"
    """"lab" (the trajectories `lab` generates) or a .jsonl / .parquet file of records (question,
    answer, generations; `metareason.data.manual`) whose generations are trained on; needs `init`."""
    think_prefix: str = ""
    """Hugging Face models: text after the chat template's generation prompt (e.g. "<think>\\n"),
    before each generation."""
    lab: LabConfig = LabConfig()
    """What the lab generates (families, style, difficulty, sizes, trajectories per question)."""
    k_trajectories: int = 1
    """Trajectories used per question (E10); each question still fills `slots_per_question`. With
    `data` a file: the first k generations (a question with fewer is skipped)."""
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


@dataclasses.dataclass(frozen=True)
class _Start:
    """The starting model, how its examples are encoded, and where its tokenizer comes from."""
    config: ModelConfig
    params: Any
    fmt: Any
    kind: str
    """"lab" or "hf" (`metareason.probe.run.load_model`)."""


def _start(cfg: SFTConfig, place: Placement) -> _Start:
    from metareason.evaluate.formats import HFFormat, LabFormat

    kind, model_cfg, params, extra = start_model(cfg, place)
    if kind == "hf" and cfg.data == "lab":
        raise ValueError(f"a Hugging Face model ({cfg.init}) needs --data FILE (.jsonl or .parquet records with "
                         "generations)")
    fmt = LabFormat() if kind == "lab" else HFFormat(extra["tokenizer"], think_prefix=cfg.think_prefix)
    return _Start(model_cfg, params, fmt, kind)


def _file_records(cfg: SFTConfig) -> list[dict]:
    """The records of `cfg.data` with at least `k_trajectories` generations (the others skipped,
    their count printed once)."""
    from metareason.data.manual import read_records

    records = read_records(cfg.data).records
    kept = [r for r in records if len(r.get("generations") or ()) >= cfg.k_trajectories]
    if not kept:
        raise ValueError(f"{cfg.data}: none of its {len(records)} records has at least k_trajectories="
                         f"{cfg.k_trajectories} generations to train on")
    if len(kept) < len(records):
        print(f"skipped {len(records) - len(kept)} of {len(records)} records of {cfg.data} with fewer than "
              f"k_trajectories={cfg.k_trajectories} generations", flush=True)
    return kept


def _eval_command(run: Path, data: str, think_prefix: str = "") -> str:
    """The `metareason eval` command line (bash) that evaluates `run` on the file `data`."""
    import shlex
    cmd = f"metareason eval --model {shlex.quote(str(run))} --data {shlex.quote(data)}"
    if think_prefix:  # bash's $'...' keeps a newline readable: $'<think>\n'
        escaped = think_prefix.encode("unicode_escape").decode("ascii").replace("'", "\\'")
        cmd += f" --think-prefix $'{escaped}'"
    return cmd


def train_sft(cfg: SFTConfig) -> dict[str, Any]:
    """Runs (or resumes) SFT; returns the summary (also written to out/summary.json)."""
    from tqdm import tqdm

    from metareason.data import build_lab, training_batches

    lab_data = cfg.data == "lab"  # lab evaluation during and after training (else: `metareason eval`)
    if not lab_data and not cfg.init:
        raise ValueError(f"--data {cfg.data} needs --init (a Hugging Face model directory or a training run)")
    if lab_data and cfg.k_trajectories > cfg.lab.trajectories_per_question:
        raise ValueError(f"k_trajectories={cfg.k_trajectories} exceeds the lab's trajectories_per_question="
                         f"{cfg.lab.trajectories_per_question}")
    file_records = None if lab_data else _file_records(cfg)
    out = open_run_dir(cfg.out, cfg.to_json(), cfg.resume, defaults_json(SFTConfig))

    place = Placement.from_text(cfg.mesh)
    start_model = _start(cfg, place)
    model_cfg, params, fmt = start_model.config, start_model.params, start_model.fmt
    if start_model.kind == "hf":
        copy_tokenizer(cfg.init, out)
    optimizer = make_optimizer(cfg.optimizer, cfg.steps)
    state = place.state(init_state(params, optimizer, cfg.seed), model_cfg, optimizer)
    (out / "model_config.json").write_text(json.dumps(dataclasses.asdict(model_cfg), indent=2))
    sources = build_lab(cfg.lab, out / "data") if lab_data else {"train": file_records}
    slots = trajectory_slots(len(sources["train"]), cfg.k_trajectories, cfg.slots_per_question, cfg.seed)
    dataset = training_batches(TrajectorySlots(sources["train"], slots), fmt.example, seq_len=cfg.seq_len,
                               batch_size=cfg.batch_size, seed=cfg.seed, num_epochs=None,
                               num_packing_bins=cfg.packing_bins or 4 * cfg.batch_size, too_long="error",
                               prefetch=2)  # packing overlaps the step (short examples pack dozens to a step)
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
    val = first_per_family(sources["validation"], cfg.eval_questions) if lab_data else []

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
                if val and cfg.eval_every and done % cfg.eval_every == 0 and done != cfg.steps:
                    res = lab_accuracy(state.params, model_cfg, val)
                    metrics.write(done, "validation", flat_eval(res))
                if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                    ckpt.save(done, state, {"data": batches.get_state()})
    finally:
        pbar.close()
        ckpt.close()
        batches.close()  # stops the prefetch thread
    summary: dict[str, Any] = {"steps": cfg.steps, "out": str(out), "model": cfg.init or cfg.model,
                               "params": model_cfg.num_params()}
    if lab_data:
        summary["style"] = cfg.lab.style
    else:  # no lab evaluation: say how to evaluate the run on the file
        summary["data"] = cfg.data
        summary["evaluate"] = _eval_command(out, cfg.data, cfg.think_prefix)
        print(f"evaluate with: {summary['evaluate']}", flush=True)
    if cfg.final_eval and lab_data:
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
