"""A run directory: its config.json guards against mixing two runs in one place."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["open_run_dir"]


def open_run_dir(out: str | Path, config: dict, resume: bool) -> Path:
    """Creates `out` (absolute) and writes config.json. With `resume`, an existing config.json
    must equal `config` (the error names the fields that differ); without it, a directory that
    already holds checkpoints is refused."""
    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    cfg_file = out / "config.json"
    current = json.loads(json.dumps(config))  # tuples -> lists, as the file holds them
    if resume and cfg_file.exists():
        saved = json.loads(cfg_file.read_text())
        if saved != current:
            diff = sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k))
            raise ValueError(f"--resume with a different config than {cfg_file} (differs in: {', '.join(diff)})")
    elif cfg_file.exists() and any((out / "checkpoints").glob("[0-9]*")):
        raise ValueError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    cfg_file.write_text(json.dumps(config, indent=2))
    return out
