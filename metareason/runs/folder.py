"""A run folder: its config.json guards against mixing two runs in one place; a run started from
a Hugging Face model keeps that model's tokenizer in `tokenizer/`.

    out/config.json        the run's config (`open_run_dir`; a resumed run must match it)
    out/model_config.json  the model's config
    out/checkpoints/       orbax steps (`metareason.runs.Checkpointer`)
    out/tokenizer/         the Hugging Face tokenizer, if any (`copy_tokenizer`)
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

__all__ = ["open_run_dir", "copy_tokenizer", "WEIGHT_FILES", "defaults_json"]

WEIGHT_FILES = ("config.json", "*.safetensors", "*.bin", "*.index.json", "*.pt")
"""What `copy_tokenizer` leaves behind: the model's config and weights."""


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
    (`metareason.load`). `model_dir` may also be a run directory that has a
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
