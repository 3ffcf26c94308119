"""One loader for every model folder: `load(path, step=None) -> LoadedModel`.

    m = metareason.load("runs/sft-arith-long")             # a `metareason train` / `rl` run, newest step
    m = metareason.load("runs/sft-arith-long", step=400)   # any step still on disk
    m = metareason.load("path/to/Qwen2.5-0.5B")            # a Hugging Face folder
    m.kind, m.config, m.params, m.format, m.lab, m.step, m.provenance

A run folder is read as data: its config.json (the trainer's config as JSON; no trainer class is
needed), its model_config.json and the params alone from the checkpoint (an orbax partial restore:
the optimizer state is never read, so its structure need not be known). A run started from a
Hugging Face model (it has `tokenizer/`) loads as kind "hf" with that tokenizer; any other run is a
lab model (kind "lab") with its lab config; so is a lab run exported by `metareason export` (its
metareason_export.json names the lab).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import jax

from metareason.format import HFFormat, LabFormat
from metareason.model import ModelConfig, init, load_hf_checkpoint
from metareason.model.params import with_overrides
from metareason.model.presets import model_preset
from metareason.parallel import load_hf_sharded, param_shardings
from metareason.runs.checkpoint import Checkpointer
from metareason.tasks.lab import LabConfig
from metareason.tokenize.hf import HFTokenizer

__all__ = ["LoadedModel", "load", "restore_params", "lab_config_from_json", "run_kind"]


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model ready to prompt, sample, probe or train further."""

    kind: Literal["lab", "hf"]
    """"lab" (the lab vocabulary) or "hf" (a Hugging Face tokenizer and chat template)."""
    config: ModelConfig
    params: Any
    """The weights (`metareason.model.init`'s layout), with `config.param_dtype`."""
    tokenizer: HFTokenizer | None
    """The Hugging Face tokenizer (kind "hf"), else None."""
    format: LabFormat | HFFormat
    """How the model is prompted and judged: `metareason.format.LabFormat` or `HFFormat`."""
    lab: LabConfig | None
    """The lab a lab run trained on (kind "lab"), else None."""
    step: int | None
    """The checkpoint's step (runs), else None."""
    run_config: dict | None
    """A run's config.json as written (its trainer config as JSON), else None."""
    think_prefix: str
    """Text after the chat template's generation prompt (kind "hf": a run's own, "" for a Hugging Face
    folder; `with_think_prefix` changes it; "" for lab models)."""
    provenance: dict
    """{"path", "run": "sft" | "grpo" | "hf", "step", "config_digest"}: where these weights came from."""

    @classmethod
    def wrap(cls, config: ModelConfig, params: Any, *, tokenizer: HFTokenizer | None = None, lab: LabConfig | None = None,
             think_prefix: str = "", step: int | None = None, run_config: dict | None = None,
             provenance: dict | None = None) -> "LoadedModel":
        """A model in hand as a `LoadedModel`: kind "hf" with a tokenizer, else "lab"; its format built."""
        if tokenizer is None:
            return cls("lab", config, params, None, LabFormat(), lab, step, run_config, "", provenance or {})
        return cls("hf", config, params, tokenizer, HFFormat(tokenizer, think_prefix=think_prefix), None, step,
                   run_config, think_prefix, provenance or {})

    def with_think_prefix(self, think_prefix: str) -> "LoadedModel":
        """This model prompted with `think_prefix` after the generation prompt (kind "hf"; a lab model
        is returned as is)."""
        if self.kind == "lab" or think_prefix == self.think_prefix:
            return self
        return dataclasses.replace(self, think_prefix=think_prefix,
                                   format=HFFormat(self.tokenizer, think_prefix=think_prefix))


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_kind(run_config: dict) -> str:
    """"grpo" or "sft": which trainer wrote a run's config.json."""
    return "grpo" if "group_size" in run_config else "sft"


def lab_config_from_json(d: dict) -> LabConfig:
    """The `LabConfig` a config.json holds (lists back to tuples)."""
    return LabConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def restore_params(run_dir: str | Path, config: ModelConfig, step: int | None = None, *, mesh=None) -> tuple[int, Any]:
    """(step, params) of checkpoint `step` of a run folder (SFT or GRPO; None: the newest intact
    one). Only the params are read (`config` gives their shapes and dtypes), whole on one device
    or, with `mesh` (a `jax.sharding.Mesh`), straight into their shards
    (`metareason.parallel.param_shardings`)."""
    run_dir = Path(run_dir).absolute()
    if not (run_dir / "checkpoints").is_dir():
        raise FileNotFoundError(f"{run_dir} has no checkpoints/ directory")
    abstract = jax.eval_shape(lambda: init(config, jax.random.key(0)))
    one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])  # whole, on this process's first device
    shardings = param_shardings(config, mesh) if mesh is not None else jax.tree.map(lambda _: one, abstract)
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)
    ckpt = Checkpointer(run_dir / "checkpoints")
    try:
        restored = ckpt.restore({"params": abstract}, step, partial=True)
    finally:
        ckpt.close()
    if restored is None:
        raise FileNotFoundError(f"{run_dir} has no intact checkpoint")
    done, state, _ = restored
    return done, state["params"]


def _load_run(path: Path, step: int | None, mesh, overrides: dict) -> LoadedModel:
    run_config = json.loads((path / "config.json").read_text())
    model_file = path / "model_config.json"  # (SFT runs written before it existed: the preset)
    if model_file.exists():
        config = ModelConfig(**json.loads(model_file.read_text()))
    elif "model" in run_config:
        config = model_preset(run_config["model"])
    else:
        raise FileNotFoundError(f"{path} is a run without model_config.json or a model preset in config.json")
    done, params = restore_params(path, config, step, mesh=mesh)
    config, params = with_overrides(config, params, overrides)
    provenance = {"path": str(path), "run": run_kind(run_config), "step": done, "config_digest": _digest(run_config)}
    if (path / "tokenizer").is_dir():  # a run started from a Hugging Face model
        return LoadedModel.wrap(config, params, tokenizer=HFTokenizer.from_dir(path / "tokenizer"),
                                think_prefix=run_config.get("think_prefix", ""), step=done, run_config=run_config,
                                provenance=provenance)
    return LoadedModel.wrap(config, params, lab=lab_config_from_json(run_config["lab"]), step=done,
                            run_config=run_config, provenance=provenance)


def _load_hf(path: Path, mesh, overrides: dict) -> LoadedModel:
    config, params = (load_hf_checkpoint(path, **overrides) if mesh is None
                      else load_hf_sharded(path, mesh, **overrides))
    provenance = {"path": str(path), "run": "hf", "step": None,
                  "config_digest": _digest(json.loads((path / "config.json").read_text()))}
    exported = path / "metareason_export.json"  # a lab run written by `metareason export`: a lab model again
    if exported.exists():
        record = json.loads(exported.read_text())
        if record.get("kind") == "lab" and isinstance(record.get("lab"), dict):
            return LoadedModel.wrap(config, params, lab=lab_config_from_json(record["lab"]), provenance=provenance)
    return LoadedModel.wrap(config, params, tokenizer=HFTokenizer.from_dir(path), provenance=provenance)


def load(path: str | Path, step: int | None = None, *, mesh=None, **overrides) -> LoadedModel:
    """The model in `path`: a `metareason train` / `metareason rl` run folder (config.json +
    checkpoints/; at `step`, or the newest intact checkpoint) or a Hugging Face folder (config.json,
    safetensors, tokenizer.json; `step` must be None).

    mesh: a `jax.sharding.Mesh` to read the weights straight into their shards.
    overrides: numerics, `ModelConfig.NUMERICS` (e.g. param_dtype="float32", remat="full"); the
    architecture comes with the weights. Raises FileNotFoundError (one line) for anything else."""
    path = Path(path).absolute()
    changes = ModelConfig.parse_overrides(",".join(f"{k}={v}" for k, v in overrides.items()))
    if (path / "checkpoints").is_dir() and (path / "config.json").exists():
        return _load_run(path, step, mesh, changes)
    if (path / "config.json").exists():
        if step is not None:
            raise ValueError(f"{path} is a Hugging Face folder: it has no steps (step={step})")
        return _load_hf(path, mesh, changes)
    raise FileNotFoundError(f"{path} is neither a training run (config.json + checkpoints/) nor a Hugging Face "
                            "model directory (config.json)")
