"""A run folder: its config.json guards against mixing two runs in one place; a run started from
a Hugging Face model keeps that model's tokenizer in `tokenizer/`.

    out/provenance.json    what produced the run (`open_run_dir`, `metareason.runs.provenance`)
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

from metareason.runs.provenance import (NOT_IDENTITY, PROVENANCE, ProvenanceError, differences, fingerprint,
                                         open_output)

__all__ = ["open_run_dir", "run_differences", "copy_tokenizer", "WEIGHT_FILES", "defaults_json"]

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


def _identity(config: dict) -> dict:
    """A run config without the fields that say where or how it runs (`out`, `resume`, `mesh`, `overwrite`)."""
    return {k: v for k, v in json.loads(json.dumps(config, default=str)).items() if k not in NOT_IDENTITY}


def run_differences(out: str | Path, config: dict, defaults: dict | None = None) -> list[str]:
    """The fields in which the run in `out` (its config.json) differs from `config` (a trainer's
    `to_json()`), leaving out where and how it runs (`out`, `resume`, `mesh`, `overwrite`); a field
    the file lacks counts as its value in `defaults`. Raises FileNotFoundError without config.json."""
    saved = _identity(json.loads((Path(out) / "config.json").read_text()))
    current = _identity(config)
    saved = {**{k: v for k, v in _identity(defaults or {}).items() if k in current}, **saved}
    return differences(saved, current)


def open_run_dir(out: str | Path, config: dict, resume: bool, defaults: dict | None = None, *,
                 overwrite: bool = False, created_by: str = "train", inputs=(), extra: dict | None = None) -> Path:
    """Opens the run folder `out` (absolute; `metareason.runs.open_output`: its provenance.json
    holds the run's fingerprint, the config without `out`/`resume`/`mesh` plus `extra`, e.g. a data
    file's digest) and writes config.json. With `resume` the fingerprint must equal the folder's
    (the error names the fields that differ; a field the file lacks counts as its value in
    `defaults`, so runs saved before a field existed still resume); without it, a folder that
    already holds checkpoints is refused. A moved or copied run folder resumes: the path is not
    part of the identity. A run folder written before provenance.json existed (config.json and
    checkpoints) is adopted on `--resume` when its config.json matches."""
    out = Path(out).absolute()
    defaults = _identity(defaults or {})
    fp = fingerprint(created_by, settings={**_identity(config), **(extra or {})})

    def started(folder: Path) -> bool:
        return any((folder / "checkpoints").glob("[0-9]*"))

    cfg_file = out / "config.json"
    if not overwrite and not (out / PROVENANCE).exists() and cfg_file.is_file() and started(out):
        # a run written before provenance.json existed
        if not resume:
            raise ProvenanceError(f"{out} already holds a run; pass --resume to continue it, --overwrite to move "
                                  "it aside, or choose another --out")
        diff = run_differences(out, config, defaults)
        if diff:
            raise ProvenanceError(f"--resume with a different config than {cfg_file} (differs in: {', '.join(diff)})")
        (out / PROVENANCE).write_text(json.dumps({"created_by": created_by, "fingerprint": fp}, indent=2))
    out = open_output(out, fp, resume=resume, overwrite=overwrite, created_by=created_by, inputs=inputs,
                      defaults=defaults, started=started)
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
