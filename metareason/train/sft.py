"""The SFT outer loop: `metareason train`, on the synthetic lab or on a file of generations.

    metareason train --preset arith-long --out runs/sft-arith-long                  # the lab
    metareason train --init path/to/hf-model --data gens.jsonl --think-prefix $'<think>\\n' --out runs/sft-hf

With `--data FILE` (.jsonl / .parquet records: question, answer, generations; the paper's
format, `metareason.data.manual`) each question's `generations` are its trajectories (the E10
rule: `k_trajectories` of them in `slots_per_question` examples; questions with fewer are
skipped), encoded by the model's format (`metareason.format`: the chat template and
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
import shlex
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from metareason.data.manual import read_records
from metareason.errors import check_int, flag_name
from metareason.parallel import Placement
from metareason.runs import Checkpointer, lab_config_from_json
from metareason.tasks.lab import LabConfig
from metareason.train.evaluation import final_evaluation, first_per_family, flat_eval, lab_accuracy
from metareason.train.loop import TrainingDiverged, finish, resume, run_loop
from metareason.train.metrics import MetricsWriter
from metareason.train.options import RunOptions, start_run
from metareason.train.state import OptimizerConfig, init_state, make_optimizer
from metareason.train.step import make_train_step
from metareason.train.trajectories import trajectory_slots

__all__ = ["SFTConfig", "train_sft", "TrainingDiverged", "sft_config_from_json"]


def __getattr__(name):
    """`load_run` lives in `metareason.train.saved` (it reads SFT and GRPO runs); still reachable here."""
    if name == "load_run":
        from metareason.train.saved import load_run
        return load_run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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

    def validate(self, prefix: str = "--") -> None:
        """`ConfigError` naming the flag of the first setting out of range (run by `metareason train`
        before any work)."""
        RunOptions.validate(self, prefix)
        for name in ("k_trajectories", "slots_per_question", "steps", "batch_size", "seq_len"):
            check_int(flag_name(prefix, name), getattr(self, name), 1)
        check_int(flag_name(prefix, "packing_bins"), self.packing_bins, 0)
        self.lab.validate(prefix + "lab.")
        self.optimizer.validate(prefix + "optimizer.")


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


def _file_records(cfg: SFTConfig) -> list[dict]:
    """The records of `cfg.data` with at least `k_trajectories` generations (the others skipped,
    their count printed once)."""
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
    cmd = f"metareason eval --model {shlex.quote(str(run))} --data {shlex.quote(data)}"
    if think_prefix:  # bash's $'...' keeps a newline readable: $'<think>\n'
        escaped = think_prefix.encode("unicode_escape").decode("ascii").replace("'", "\\'")
        cmd += f" --think-prefix $'{escaped}'"
    return cmd


def _sft_step(train_step, place: Placement):
    """`step(state, batch)`: `train_step` on the placed batch; metrics gain "tokens_seen", the loss
    tokens trained on since the step was made (this process)."""
    seen = 0

    def step(state, batch):
        nonlocal seen
        state, m = train_step(state, place.batch(batch))
        seen += int(np.asarray(batch["loss_mask"]).sum())
        return state, dict(m, tokens_seen=seen)
    return step


def train_sft(cfg: SFTConfig) -> dict[str, Any]:
    """Runs (or resumes) SFT; returns the summary (also written to out/summary.json)."""
    from metareason.data import build_lab, training_batches  # tensorflow-datasets and grain: only when run

    lab_data = cfg.data == "lab"  # lab evaluation during and after training (else: `metareason eval`)
    if not lab_data and not cfg.init:
        raise ValueError(f"--data {cfg.data} needs --init (a Hugging Face model directory or a training run)")
    if lab_data and cfg.k_trajectories > cfg.lab.trajectories_per_question:
        raise ValueError(f"k_trajectories={cfg.k_trajectories} exceeds the lab's trajectories_per_question="
                         f"{cfg.lab.trajectories_per_question}")
    file_records = None if lab_data else _file_records(cfg)
    out, place, start = start_run(cfg, SFTConfig)
    model_cfg = start.config
    optimizer = make_optimizer(cfg.optimizer, cfg.steps)
    state = place.state(init_state(start.params, optimizer, cfg.seed), model_cfg, optimizer)
    sources = build_lab(cfg.lab, out / "data") if lab_data else {"train": file_records}
    slots = trajectory_slots(len(sources["train"]), cfg.k_trajectories, cfg.slots_per_question, cfg.seed)
    dataset = training_batches(TrajectorySlots(sources["train"], slots), start.format.example, seq_len=cfg.seq_len,
                               batch_size=cfg.batch_size, seed=cfg.seed, num_epochs=None,
                               num_packing_bins=cfg.packing_bins or 4 * cfg.batch_size, too_long="error",
                               prefetch=2)  # packing overlaps the step (short examples pack dozens to a step)
    batches = iter(dataset)
    ckpt = Checkpointer(out / "checkpoints", keep=cfg.keep_checkpoints)
    begin, state, extra = resume(ckpt, state, enabled=cfg.resume, out=out)
    if "data" in extra:
        batches.set_state(extra["data"])
    metrics = MetricsWriter(out, start_step=begin)
    val = first_per_family(sources["validation"], cfg.eval_questions) if lab_data else []
    schedule = cfg.optimizer.schedule(cfg.steps)

    def train_row(done, state, window, seconds):
        m = window[-1]
        return {"loss": float(m["loss"]), "token_accuracy": float(m["accuracy"]), "grad_norm": float(m["grad_norm"]),
                "lr": float(schedule(done)), "trained_tokens_per_s": m["tokens_seen"] / seconds}

    try:
        with place.context():
            state = run_loop(
                state, _sft_step(make_train_step(model_cfg, optimizer), place), batches, start_step=begin,
                num_steps=cfg.steps, checkpointer=ckpt, metrics=metrics, log_every=cfg.log_every,
                checkpoint_every=cfg.checkpoint_every, train_row=train_row,
                checkpoint_extra=lambda done: {"data": batches.get_state()},
                where=lambda step, m: f"batch {step} of the data stream",
                evaluate=(lambda state: flat_eval(lab_accuracy(state.params, model_cfg, val))) if val else None,
                eval_every=cfg.eval_every, desc="sft")
    finally:
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
    return finish(out, summary, metrics)


def sft_config_from_json(d: dict) -> SFTConfig:
    """The `SFTConfig` a run's config.json holds (lists back to tuples)."""
    rest = {k: v for k, v in d.items() if k not in ("lab", "optimizer", "out")}
    return SFTConfig(out=Path(d["out"]), lab=lab_config_from_json(d["lab"]), optimizer=OptimizerConfig(**d["optimizer"]),
                     **rest)
