"""What produced an output folder, and the one gate every command opens its folder through.

    fp = fingerprint("eval", model=model_identity(m), data=[data_identity("lab:test")],
                     settings={"n": 8, "temperature": 1.0, ...})
    out = open_output("runs/eval", fp, resume=True, overwrite=False, created_by="eval", inputs=[m_path])

`out/provenance.json` holds {"created_by": COMMAND, "fingerprint": {...}}. A fingerprint is JSON:
the model's identity (its config and a digest of its params, or a run's path-independent config
and step), the data's identity (a file's digest, or the lab spec) and every setting that changes
the numbers; never the output path, so a moved or copied folder still matches.

`open_output` reuses (resumes) a folder only when its provenance.json is this command's and the
fingerprint is equal; a different fingerprint, another command's folder or any non-empty folder
without provenance.json is refused with one line naming what differs. `overwrite` moves the old
folder aside to `OUT.old-N` (never deletes it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

__all__ = ["ProvenanceError", "PROVENANCE", "NOT_IDENTITY", "digest", "file_digest", "model_identity", "data_identity",
           "fingerprint", "differences", "open_output", "move_aside"]

PROVENANCE = "provenance.json"
"""The file in every output folder that names what produced it."""

#: Config fields that say where or how a command runs, not what it computes (never part of a fingerprint).
NOT_IDENTITY = ("out", "resume", "mesh", "overwrite")


class ProvenanceError(ValueError):
    """An output folder that cannot be used as asked (one line: which folder, what differs, what to do)."""


def digest(obj: Any) -> str:
    """sha256 (16 hex digits) of `obj` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """sha256 (16 hex digits) of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _params_digest(params: Any) -> str:
    """sha256 of every leaf's path, dtype, shape and bytes (the weights themselves)."""
    import jax

    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        a = np.asarray(jax.device_get(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype}|{a.shape}|".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _folder_digest(path: Path) -> str:
    """Digest of a model folder's top-level files (names and bytes: config, weights, tokenizer)."""
    return digest({f.name: file_digest(f) for f in sorted(path.iterdir()) if f.is_file()})


def model_identity(model) -> dict:
    """The identity of a `metareason.LoadedModel`, independent of where it lies on disk: its model
    config's digest and, for a training run, the digest of the run's config (without `out`) and the
    checkpoint step; for a Hugging Face folder, the digest of its files; for a model in memory
    (a preset, or weights passed in), the digest of its params (and lab config)."""
    ident: dict[str, Any] = {"config": digest(dataclasses.asdict(model.config)), "kind": model.kind}
    prov = model.provenance or {}
    if model.run_config is not None:
        run = {k: v for k, v in model.run_config.items() if k not in NOT_IDENTITY}
        ident.update(run=digest(run), step=model.step)
    elif prov.get("run") == "hf" and prov.get("path"):
        ident.update(files=_folder_digest(Path(prov["path"])))
    else:
        ident.update(params=_params_digest(model.params))
        if model.lab is not None:
            ident.update(lab=digest(dataclasses.asdict(model.lab)))
    return ident


def data_identity(spec: str) -> dict:
    """A dataset's identity: a lab spec ("lab", "lab:SPLIT[:FAMILIES]") as written (the lab config
    is the model's), a file by its spec and the digest of its bytes."""
    if spec == "lab" or spec.startswith("lab:") or not Path(spec).is_file():
        return {"spec": spec}
    return {"spec": spec, "sha256": file_digest(spec)}


def fingerprint(command: str, *, model: dict | None = None, data: Any = None, settings: dict | None = None) -> dict:
    """The fingerprint of an output: {"command", "model", "data", **settings} as plain JSON
    (tuples as lists, paths as strings)."""
    fp: dict[str, Any] = {"command": command}
    if model is not None:
        fp["model"] = model
    if data is not None:
        fp["data"] = data
    fp.update(settings or {})
    return json.loads(json.dumps(fp, default=str))


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: d}


def differences(saved: dict, current: dict) -> list[str]:
    """The dotted field names whose values differ between two fingerprints (sorted)."""
    a, b = _flat(saved), _flat(current)
    return sorted(k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>"))


def _merge(defaults: dict, saved: dict) -> dict:
    """`saved` with the fields it lacks taken from `defaults` (nested)."""
    out = dict(defaults)
    for k, v in saved.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def move_aside(out: Path) -> Path:
    """Renames `out` to the first free `OUT.old-N` (N = 1, 2, ...); returns the new path."""
    n = 1
    while (aside := out.with_name(f"{out.name}.old-{n}")).exists():
        n += 1
    out.rename(aside)
    print(f"metareason: moved the old {out} aside to {aside}", file=sys.stderr, flush=True)
    return aside


def _read(out: Path) -> dict | None:
    f = out / PROVENANCE
    if not f.is_file():
        return None
    try:
        saved = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProvenanceError(f"{f} is unreadable ({type(e).__name__}); pass --overwrite to move {out} aside") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("fingerprint"), dict):
        raise ProvenanceError(f"{f} is not a provenance record; pass --overwrite to move {out} aside")
    return saved


def _holds_anything(out: Path) -> bool:
    """Whether `out` is a directory with entries (a provenance record cut short by a kill does not count)."""
    return out.is_dir() and any(p.name != f".{PROVENANCE}.tmp" for p in out.iterdir())


def open_output(out: str | Path, fingerprint: dict, *, resume: bool, overwrite: bool, created_by: str,
                inputs: Iterable[str | Path | None] = (), defaults: dict | None = None,
                started: Callable[[Path], bool] | None = None) -> Path:
    """Opens (creates) the output folder `out` (absolute) of command `created_by` for an output
    with `fingerprint`, writing out/provenance.json, and returns it. Refused (ProvenanceError):
    `out` equal to, or holding, one of `inputs` (the model and data the command reads); a non-empty
    `out` without this command's provenance.json; a different fingerprint (names the fields; a
    field an older provenance.json lacks counts as its value in `defaults`); with `resume` False,
    a folder that `started(out)` says already holds work. With `overwrite` an existing non-empty
    `out` is first moved aside (`move_aside`), never deleted."""
    out = Path(out).absolute()
    for src in inputs:
        if src is None or str(src) == "":
            continue
        src = Path(src).absolute()
        if src == out or out in src.parents:
            raise ProvenanceError(f"the output folder {out} is (or holds) the input {src}; choose another --out")
    if out.exists() and not out.is_dir():
        raise ProvenanceError(f"{out} is a file, not an output folder; choose another --out")
    if overwrite and _holds_anything(out):
        here = Path.cwd().absolute()
        if out == here or out in here.parents:
            raise ProvenanceError(f"--overwrite would move the current directory {out} aside; choose another --out")
        move_aside(out)
    if _holds_anything(out):
        saved = _read(out)
        if saved is None:
            raise ProvenanceError(f"{out} is not empty and was not written by metareason {created_by} (no "
                                  f"{PROVENANCE}); choose another --out, or pass --overwrite to move it aside")
        if saved.get("created_by") != created_by:
            raise ProvenanceError(f"{out} holds the output of metareason {saved.get('created_by')}, not "
                                  f"{created_by}; choose another --out, or pass --overwrite to move it aside")
        diff = differences(_merge(defaults or {}, saved["fingerprint"]), fingerprint)
        if diff:
            raise ProvenanceError(f"{out} holds metareason {created_by} output of other settings (differs in: "
                                  f"{', '.join(diff)}); choose another --out, or pass --overwrite to move it aside")
        if not resume and started is not None and started(out):
            raise ProvenanceError(f"{out} already holds a run; pass --resume to continue it, --overwrite to move it "
                                  "aside, or choose another --out")
        return out
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{PROVENANCE}.tmp"
    tmp.write_text(json.dumps({"created_by": created_by, "fingerprint": fingerprint}, indent=2))
    os.replace(tmp, out / PROVENANCE)
    return out
