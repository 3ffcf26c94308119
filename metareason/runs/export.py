"""A trained run (or any loadable model) as a Hugging Face folder: `export(run, out)`.

    export("runs/arith-long", "hf/arith-long")                  # newest step, the params' dtype
    export("runs/sft-hf", "hf/sft-hf", step=200, dtype="bfloat16")
    metareason export runs/arith-long hf/arith-long             # the same on the command line

The folder holds config.json (`ModelConfig.to_hf_config`), model.safetensors
(`save_hf_checkpoint`), the tokenizer and `metareason_export.json` (where the weights came from).
A run started from a Hugging Face model gets that model's tokenizer files (its `tokenizer/`); a lab
run gets the lab vocabulary as a `tokenizer.json` (`metareason.tokenize.lab_hf`: a WordLevel model
that encodes every lab text to the lab's ids) with a `tokenizer_config.json`, and its bos / eos /
pad ids in config.json. `transformers.AutoModelForCausalLM` loads the folder, and
`transformers.PreTrainedTokenizerFast.from_pretrained` the lab tokenizer (transformers 5's
`AutoTokenizer` picks the family's own tokenizer class from config.json instead);
`metareason.load` reads the folder back (an exported lab run as kind "lab", with its lab config).

The target must not exist or be an empty directory; the folder is written beside it and renamed
into place, so it appears whole or not at all.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Literal

import tyro

from metareason.model import save_hf_checkpoint
from metareason.model.params import with_overrides
from metareason.runs.folder import WEIGHT_FILES
from metareason.runs.load import LoadedModel, load
from metareason.tokenize.lab import LAB_VOCAB
from metareason.tokenize.lab_hf import lab_hf_tokenizer, lab_tokenizer_config

__all__ = ["ExportConfig", "ExportError", "export", "run_export"]

DTYPES = ("float32", "bfloat16")


class ExportError(ValueError):
    """An export that cannot be done (one line: names the target or the argument)."""


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """`metareason export RUN HF_DIR`: a run (or Hugging Face folder) written as a Hugging Face folder."""

    run: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")]
    """The run folder (`metareason train` / `rl`) or a Hugging Face folder to export."""
    hf_dir: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="HF_DIR")]
    """The new Hugging Face folder (must not exist, or be empty)."""
    step: int | None = None
    """The checkpoint step (default: the newest intact one)."""
    dtype: Literal["float32", "bfloat16"] | None = None
    """The weights' dtype in the folder (default: the run's param_dtype)."""


def _check_target(out: Path) -> None:
    if out.is_dir() and any(out.iterdir()):
        raise ExportError(f"{out} is not empty; export writes a new folder (choose another HF_DIR)")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder; export writes a new folder")


def _tokenizer_source(model: LoadedModel) -> Path | None:
    """The folder whose tokenizer files the model came with (a run's tokenizer/, an HF folder)."""
    path = model.provenance.get("path")
    if path is None:
        return None
    path = Path(path)
    src = path / "tokenizer" if (path / "tokenizer").is_dir() else path
    return src if (src / "tokenizer.json").exists() else None


def _write_tokenizer(model: LoadedModel, folder: Path, hf_config: dict) -> str:
    """Writes the tokenizer files into `folder`; returns what they are (for metareason_export.json)."""
    if model.kind == "lab":
        lab_hf_tokenizer().save(str(folder / "tokenizer.json"))
        (folder / "tokenizer_config.json").write_text(json.dumps(lab_tokenizer_config(), indent=2))
        hf_config.update(bos_token_id=LAB_VOCAB.bos_id, eos_token_id=LAB_VOCAB.eos_id, pad_token_id=LAB_VOCAB.pad_id)
        return "lab vocabulary (WordLevel tokenizer.json; encodes lab text to the lab's ids)"
    src = _tokenizer_source(model)
    if src is not None:
        for f in sorted(src.iterdir()):
            if f.is_file() and not any(f.match(p) for p in WEIGHT_FILES) and f.name != "metareason_export.json":
                shutil.copyfile(f, folder / f.name)
        return f"copied from {src}"
    # a LoadedModel built in memory: its tokenizer object, serialised
    model.tokenizer.tokenizer.save(str(folder / "tokenizer.json"))
    cfg = dict(model.tokenizer.special_tokens, tokenizer_class="PreTrainedTokenizerFast")
    if model.tokenizer.chat_template:
        cfg["chat_template"] = model.tokenizer.chat_template
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    return "serialised from the model's HFTokenizer"


def export(source: str | os.PathLike | LoadedModel, out: str | os.PathLike, step: int | None = None,
           dtype: str | None = None) -> Path:
    """Writes `source` (a run or Hugging Face folder, at `step`; or a `LoadedModel`) as the Hugging Face
    folder `out` (config.json, model.safetensors, tokenizer files, metareason_export.json), with the
    weights in `dtype` ("float32" / "bfloat16"; default the params' dtype). `out` must not exist or be
    empty (ExportError otherwise, nothing changed); it appears atomically. Returns `out` (absolute)."""
    out = Path(out).absolute()
    if dtype is not None and dtype not in DTYPES:
        raise ExportError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    _check_target(out)
    if isinstance(source, LoadedModel):
        if step is not None:
            raise ExportError("step is for a folder; a LoadedModel is already one step")
        model = source
    else:
        model = load(source, step)
    config, params = with_overrides(model.config, model.params, {"param_dtype": dtype} if dtype else {})
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        folder = save_hf_checkpoint(work / "hf", config, params)
        hf_config = json.loads((folder / "config.json").read_text())
        tokenizer = _write_tokenizer(model, folder, hf_config)
        (folder / "config.json").write_text(json.dumps(hf_config, indent=2))
        record = {"source": model.provenance, "kind": model.kind, "step": model.step, "dtype": config.param_dtype,
                  "tokenizer": tokenizer,
                  "lab": dataclasses.asdict(model.lab) if model.lab is not None else None,
                  "think_prefix": model.think_prefix}
        (folder / "metareason_export.json").write_text(json.dumps(record, indent=2, default=str))
        _check_target(out)  # still free: another process may have written there meanwhile
        os.replace(folder, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def run_export(cfg: ExportConfig) -> Path:
    """`metareason export`: `export(cfg.run, cfg.hf_dir, cfg.step, cfg.dtype)`."""
    return export(cfg.run, cfg.hf_dir, cfg.step, cfg.dtype)
