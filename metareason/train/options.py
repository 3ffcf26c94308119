"""What every training run (SFT, GRPO) shares before its loop: the options (`RunOptions`), the
run folder opened and the model it starts from (`start_run`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax

from metareason.errors import MAX_SEED, check_int, flag_name
from metareason.model import ModelConfig
from metareason.model.presets import model_preset
from metareason.parallel import Placement
from metareason.runs import LoadedModel, copy_tokenizer, data_identity, defaults_json, load, open_run_dir, run_kind

__all__ = ["RunOptions", "start_model", "start_run"]


@dataclasses.dataclass
class RunOptions:
    """What every training run (SFT, GRPO) shares: logging, evaluation, checkpoints, resume, seed."""

    log_every: int = 10
    """Train metrics every this many steps."""
    eval_every: int = 0
    """Greedy validation accuracy every this many steps (0: only at the end)."""
    eval_questions: int = 50
    """Validation / test questions per family used by evaluation."""
    checkpoint_every: int = 100
    """Save a checkpoint every this many steps (and at the end)."""
    keep_checkpoints: int = 3
    """Checkpoints kept on disk (oldest deleted first)."""
    resume: bool = False
    """Continue from the newest intact checkpoint in `out`."""
    overwrite: bool = False
    """Move an existing `out` of other settings (or not a run of this command) aside to OUT.old-N first."""
    seed: int = 0
    """Seed of the model init, the data order and the sampling."""
    final_eval: bool = True
    """Greedy accuracy on validation / test (/ heldout) at the end, into summary.json."""
    mesh: str = ""
    """Device mesh DATAxFSDPxTENSOR[/DCN_DATAxDCN_FSDPxDCN_TENSOR] (-1: the rest), e.g. 1x-1x1 for
    FSDP over every device; "" runs on one device. How, not what: a run may resume on another mesh."""
    model_overrides: str = ""
    """Numerics of the model, NAME=VALUE,... (`ModelConfig.NUMERICS`), e.g.
    "compute_dtype=bfloat16,remat=full,attention_impl=chunked,loss_chunk=1024" for long sequences."""

    def validate(self, prefix: str = "--") -> None:
        """`ConfigError` naming the flag of the first shared setting out of range; a ValueError for
        `checkpoint_every` / `keep_checkpoints` below 1 (before anything is written)."""
        check_int(flag_name(prefix, "log_every"), self.log_every, 1)
        check_int(flag_name(prefix, "eval_every"), self.eval_every, 0)
        check_int(flag_name(prefix, "eval_questions"), self.eval_questions, 1)
        check_int(flag_name(prefix, "seed"), self.seed, 0, MAX_SEED)
        for name in ("checkpoint_every", "keep_checkpoints"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")

    def to_json(self) -> dict:
        """The config as config.json holds it (`resume`, `overwrite` and `mesh` left out: how, not what,
        to run; `out` is kept for the record but is not part of the run's identity)."""
        d = dataclasses.asdict(self)
        d["out"] = str(d["out"])
        d.pop("resume")
        d.pop("overwrite")
        d.pop("mesh")
        return d


def start_model(cfg: RunOptions, place: Placement) -> LoadedModel:
    """The model a run starts from, on `place`, with `cfg.model_overrides` applied: `cfg.init` (a
    Hugging Face folder, imported straight into the mesh's shards, or a run, restored into them;
    `metareason.load`) or a fresh `cfg.model` preset from `cfg.seed` (initialised shard by shard).
    Its format carries `cfg.think_prefix`. Training keeps float32 master weights unless the
    overrides set `param_dtype`: a bf16 checkpoint's weights would not move under AdamW steps of
    lr 1e-5 (its moments follow the params' dtype), so compute in bf16 with
    `compute_dtype=bfloat16` instead. The overrides are checked before any weights are read."""
    overrides = {"param_dtype": "float32", **ModelConfig.parse_overrides(cfg.model_overrides)}
    if cfg.init:
        loaded = load(cfg.init, mesh=place.mesh, **overrides).with_think_prefix(cfg.think_prefix)
        return dataclasses.replace(loaded, params=place.params(loaded.params, loaded.config))
    config = model_preset(cfg.model).replace(**overrides)
    return LoadedModel.wrap(config, place.init(config, jax.random.key(cfg.seed)),
                            provenance={"path": None, "run": "preset", "step": None, "preset": cfg.model,
                                        "seed": cfg.seed})


def start_run(cfg: RunOptions, config_class: type) -> tuple[Path, Placement, LoadedModel]:
    """(run folder, placement, starting model) of a run: opens `cfg.out` (`open_run_dir`: refused
    unless new, empty or this command's run of the same fingerprint; `cfg.init` is never the output;
    a data file counts by its bytes; the defaults of `config_class` fill fields an older record lacks),
    loads the starting model,
    refuses a Hugging Face model on lab data, and records the model's config (and the Hugging
    Face tokenizer, so the run loads as that model does). The options are validated first."""
    cfg.validate()
    defaults = defaults_json(config_class)
    data_file = {} if cfg.data == "lab" else {"data_file": data_identity(cfg.data)}  # its bytes, not its path
    out = open_run_dir(cfg.out, cfg.to_json(), cfg.resume, defaults, overwrite=cfg.overwrite,
                       created_by="rl" if run_kind(defaults) == "grpo" else "train", inputs=(cfg.init,),
                       extra=data_file)
    place = Placement.from_text(cfg.mesh)
    start = start_model(cfg, place)
    if start.kind == "hf" and cfg.data == "lab":
        raise ValueError(f"a Hugging Face model ({cfg.init}) needs --data FILE (.jsonl or .parquet records)")
    if start.kind == "hf":
        copy_tokenizer(cfg.init, out)
    (out / "model_config.json").write_text(json.dumps(dataclasses.asdict(start.config), indent=2))
    return out, place, start
