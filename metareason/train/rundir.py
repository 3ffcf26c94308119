"""A run directory: its config.json guards against mixing two runs in one place."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

__all__ = ["open_run_dir", "RunOptions", "copy_tokenizer", "WEIGHT_FILES", "start_model", "defaults_json"]

WEIGHT_FILES = ("config.json", "*.safetensors", "*.bin", "*.index.json", "*.pt")
"""What `copy_tokenizer` leaves behind: the model's config and weights."""


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

    def to_json(self) -> dict:
        """The config as config.json holds it (`resume` and `mesh` left out: how, not what, to run)."""
        d = dataclasses.asdict(self)
        d["out"] = str(d["out"])
        d.pop("resume")
        d.pop("mesh")
        return d


def defaults_json(cls) -> dict:
    """The JSON of a config class's fields that have defaults (what a config.json written before
    a field existed meant by leaving it out)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return json.loads(json.dumps(out, default=str))


def open_run_dir(out: str | Path, config: dict, resume: bool, defaults: dict | None = None) -> Path:
    """Creates `out` (absolute) and writes config.json. With `resume`, an existing config.json
    must equal `config` (the error names the fields that differ; a field the file lacks counts as
    its value in `defaults`, so runs saved before a field existed still resume); without it, a
    directory that already holds checkpoints is refused."""
    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    cfg_file = out / "config.json"
    current = json.loads(json.dumps(config))  # tuples -> lists, as the file holds them
    if resume and cfg_file.exists():
        saved = json.loads(cfg_file.read_text())
        saved = {**{k: v for k, v in (defaults or {}).items() if k in current}, **saved}
        if saved != current:
            diff = sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k))
            raise ValueError(f"--resume with a different config than {cfg_file} (differs in: {', '.join(diff)})")
    elif cfg_file.exists() and any((out / "checkpoints").glob("[0-9]*")):
        raise ValueError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    cfg_file.write_text(json.dumps(config, indent=2))
    return out


def copy_tokenizer(model_dir: str | Path, out: str | Path) -> Path:
    """Copies the tokenizer of a Hugging Face model directory (every file but `WEIGHT_FILES`:
    tokenizer.json, tokenizer_config.json, chat_template.jinja, ...) into `out/tokenizer/`, so a
    run started from it can be prompted, sampled and evaluated like the model itself
    (`metareason.probe.run.load_model`). `model_dir` may also be a run directory that has a
    `tokenizer/` of its own (a run started from such a run). Returns `out/tokenizer`."""
    model_dir, dest = Path(model_dir), Path(out) / "tokenizer"
    src = model_dir / "tokenizer" if (model_dir / "tokenizer").is_dir() else model_dir
    files = [f for f in sorted(src.iterdir()) if f.is_file() and not any(f.match(p) for p in WEIGHT_FILES)]
    if not any(f.name == "tokenizer.json" for f in files):
        raise FileNotFoundError(f"{src} has no tokenizer.json to copy into {dest}")
    if src.absolute() != dest.absolute():
        dest.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copyfile(f, dest / f.name)
    return dest


def start_model(cfg, place):
    """The model a run starts from, on `place` (a `metareason.parallel.Placement`), with
    `cfg.model_overrides` applied: (kind "lab" | "hf", model config, params, extra).

    `cfg.init` (a Hugging Face directory, imported straight into the mesh's shards, or a run,
    restored and then placed) or a fresh `cfg.model` preset from `cfg.seed` (initialised shard by
    shard); see `metareason.probe.run.load_model` for kind and extra. Training keeps float32
    master weights unless the overrides set `param_dtype`: a bf16 checkpoint's weights would not
    move under AdamW steps of lr 1e-5 (its moments follow the params' dtype), so compute in bf16
    with `compute_dtype=bfloat16` instead. The overrides are checked before any weights are read."""
    import jax

    from metareason.model import ModelConfig
    from metareason.model.params import with_overrides
    from metareason.probe.run import load_model
    from metareason.train.presets import model_preset

    overrides = {"param_dtype": "float32", **ModelConfig.parse_overrides(cfg.model_overrides)}
    if cfg.init:
        kind, model_cfg, params, extra = load_model(Path(cfg.init), mesh=place.mesh, **overrides)
        model_cfg, params = with_overrides(model_cfg, params, overrides)
        return kind, model_cfg, place.params(params, model_cfg), extra
    model_cfg = model_preset(cfg.model).replace(**overrides)
    return "lab", model_cfg, place.init(model_cfg, jax.random.key(cfg.seed)), {}
