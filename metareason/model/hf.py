"""Hugging Face checkpoints: config.json + safetensors (one file, or shards with an index).

`load_hf_checkpoint(path)` reads a directory that `transformers` wrote (or one downloaded from
the Hub) into `(ModelConfig, params)`; `save_hf_checkpoint(path, config, params)` writes one
that `transformers.AutoModelForCausalLM.from_pretrained` loads. Every name and shape is
checked against the config before any tensor data is read. Pickle files are never opened.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from metareason.errors import MetareasonError
from metareason.model.config import ModelConfig
from metareason.model.params import _layout, _shapes, check_params, flatten, name_mismatch, unflatten

__all__ = ["CheckpointError", "load_hf_checkpoint", "load_hf_config", "save_hf_checkpoint", "hf_tensor_names",
           "hf_state_dict"]

_IGNORED_TENSOR_SUFFIXES = ("rotary_emb.inv_freq",)  # non-persistent buffers some old exports kept
_NP_DTYPES = {"float32": np.float32, "float16": np.float16, "float64": np.float64,
              "bfloat16": ml_dtypes.bfloat16}


class CheckpointError(MetareasonError, ValueError):
    """A directory that is not a usable Hugging Face checkpoint (one line, names the culprit)."""


@dataclasses.dataclass(frozen=True)
class _Entry:
    """How one of our leaves maps to HF tensors. `hf` has one name, or one per layer ({i})."""

    ours: str
    hf: str
    shape: tuple[int, ...]  # our shape without the layer axis
    n_in: int | None  # kernels: how many leading axes of ours are the matmul input; else None

    def hf_shape(self) -> tuple[int, ...]:
        if self.n_in is None:
            return (int(np.prod(self.shape)),) if self.ours.endswith("bias") else self.shape
        return (int(np.prod(self.shape[self.n_in:])), int(np.prod(self.shape[:self.n_in])))

    def to_ours(self, w: np.ndarray) -> np.ndarray:
        return (w.T if self.n_in is not None else w).reshape(self.shape)

    def to_hf(self, x: np.ndarray) -> np.ndarray:
        if self.n_in is None:
            return x.reshape(self.hf_shape())
        return np.ascontiguousarray(x.reshape(int(np.prod(self.shape[:self.n_in])), -1).T)


def _entries(config: ModelConfig) -> list[_Entry]:
    out = []
    for path, (shape, _, _) in _layout(config).items():
        parts = path.split("/")
        leaf = parts[-1]
        if path == "embed_tokens/embedding":
            out.append(_Entry(path, "model.embed_tokens.weight", shape, None))
        elif path == "lm_head/kernel":
            out.append(_Entry(path, "lm_head.weight", shape, 1))
        elif path == "norm/scale":
            out.append(_Entry(path, "model.norm.weight", shape, None))
        else:  # layers/<module...>/<leaf>
            module = ".".join(parts[1:-1])
            suffix = "bias" if leaf == "bias" else "weight"
            n_in = None
            if leaf == "kernel":
                n_in = 2 if module.endswith("o_proj") else 1
            out.append(_Entry(path, f"model.layers.{{i}}.{module}.{suffix}", shape[1:], n_in))
    return out


def hf_tensor_names(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor name a Hugging Face checkpoint of `config` holds, with its shape."""
    names = {}
    for e in _entries(config):
        if "{i}" in e.hf:
            for i in range(config.num_layers):
                names[e.hf.format(i=i)] = e.hf_shape()
        else:
            names[e.hf] = e.hf_shape()
    return names


def _open(shard: Path):
    """`safe_open(shard, "numpy")`, or `CheckpointError` naming the file (truncated, not safetensors)."""
    try:
        return safe_open(shard, "numpy")
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{shard}: not a readable safetensors file ({' '.join(str(err).split())})") from None


def _weight_files(path: Path) -> dict[str, Path]:
    """Tensor name -> safetensors file, from the index if there is one."""
    index = path / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError, RecursionError, UnicodeDecodeError) as err:
            raise CheckpointError(f"{index}: not a valid safetensors index ({type(err).__name__}: {err})") from None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"{index}: weight_map must map tensor names to file names")
        files = {name: path / fname for name, fname in weight_map.items()}
        for f in sorted(set(files.values())):
            if not f.exists():
                raise CheckpointError(f"{index} names shard {f.name}, which is missing")
        return files
    shards = sorted(path.glob("*.safetensors"))
    if not shards:
        pickles = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt*")]
        if pickles:
            raise CheckpointError(f"{path} holds only pickle weights ({pickles[0]}); metareason reads "
                                  "safetensors only (convert with transformers' save_pretrained)")
        raise CheckpointError(f"{path} has no *.safetensors weights")
    files = {}
    for shard in shards:
        with _open(shard) as f:
            for name in f.keys():
                files[name] = shard
    return files


def load_hf_config(path: str | os.PathLike, **config_overrides) -> ModelConfig:
    """The `ModelConfig` of a Hugging Face checkpoint directory (its config.json), as
    `load_hf_checkpoint` builds it: `param_dtype` defaults to the checkpoint's own `dtype`
    (`torch_dtype`) when it is a float type we support, else float32; `compute_dtype` to
    `param_dtype`; `config_overrides` (`param_dtype=...`, `remat=...`) win."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"not a checkpoint directory: {path} does not exist or is not a directory")
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise CheckpointError(f"not a Hugging Face checkpoint directory: {path} has no config.json")
    try:
        hf = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, RecursionError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{cfg_file}: invalid JSON ({type(err).__name__}: {err})") from None
    if not isinstance(hf, dict):
        raise CheckpointError(f"{cfg_file}: expected a JSON object of fields, got {type(hf).__name__}")
    stored = hf.get("dtype") or hf.get("torch_dtype")
    overrides = dict(config_overrides)
    overrides.setdefault("param_dtype", stored if stored in _NP_DTYPES else "float32")
    overrides.setdefault("compute_dtype", overrides["param_dtype"])
    return ModelConfig.from_hf_config(hf, **overrides)


def load_hf_checkpoint(path: str | os.PathLike, *, shardings=None, mesh=None,
                       **config_overrides) -> tuple[ModelConfig, dict[str, Any]]:
    """Reads a Hugging Face checkpoint directory into `(config, params)`.

    Params are stored as `config.param_dtype` (see `load_hf_config` for the config and its
    overrides: `param_dtype=...`, `compute_dtype=...`, `remat=...`).

    With `shardings` (a pytree of `jax.sharding.Sharding` shaped like the params, e.g.
    `metareason.parallel.param_shardings(config, mesh)`), every tensor goes straight into its
    shards: each device's slice is read from the safetensors file by itself (per layer, only the
    rows and columns it holds), so neither a whole model nor a whole stacked tensor is ever
    assembled on the host. On several hosts each reads only its own devices' slices.
    `metareason.parallel.load_hf_sharded(path, mesh)` computes the shardings for a mesh.
    """
    if mesh is not None:
        raise TypeError("load_hf_checkpoint(mesh=) moved: use metareason.parallel.load_hf_sharded(path, mesh), "
                        "or pass shardings=")
    path = Path(path)
    config = load_hf_config(path, **config_overrides)
    files = _weight_files(path)
    files = {n: f for n, f in files.items() if not n.endswith(_IGNORED_TENSOR_SUFFIXES)}
    expected = hf_tensor_names(config)
    if config.tie_word_embeddings and "lm_head.weight" in files:
        files.pop("lm_head.weight")  # a tied head saved anyway: the embedding is the head
    problem = name_mismatch(expected, files)
    if problem:
        raise CheckpointError(f"{path}: {problem} ({config.family})")
    handles = {}
    try:
        for f in sorted(set(files.values())):
            handles[f] = _open(f)
        for name, shape in expected.items():
            found = tuple(handles[files[name]].get_slice(name).get_shape())
            if found != shape:
                raise CheckpointError(f"{path}: tensor {name!r} has shape {found}, expected {shape}")
        dtype = _NP_DTYPES[config.param_dtype]
        flat = {}
        if shardings is not None:
            shardings = _check_shardings(config, shardings)
            for e in _entries(config):
                full = (config.num_layers, *e.shape) if "{i}" in e.hf else e.shape
                flat[e.ours] = jax.make_array_from_callback(
                    full, shardings[e.ours], functools.partial(_read_slice, e, handles, files, dtype, config.num_layers))
            return config, unflatten(flat)
        for e in _entries(config):
            if "{i}" in e.hf:
                stacked = np.empty((config.num_layers, *e.shape), dtype)
                for i in range(config.num_layers):
                    name = e.hf.format(i=i)
                    stacked[i] = e.to_ours(_finite(files[name], name, handles[files[name]].get_tensor(name))).astype(dtype)
                flat[e.ours] = jnp.asarray(stacked)
            else:
                flat[e.ours] = jnp.asarray(e.to_ours(_finite(files[e.hf], e.hf, handles[files[e.hf]].get_tensor(e.hf)))
                                           .astype(dtype))
    except SafetensorError as err:  # a tensor's bytes cannot be read (a damaged file)
        raise CheckpointError(f"{path}: a safetensors file cannot be read ({' '.join(str(err).split())})") from None
    finally:
        for h in handles.values():
            h.__exit__(None, None, None)
    return config, unflatten(flat)


def _finite(file: Path, name: str, tensor: np.ndarray) -> np.ndarray:
    """`tensor`, or `CheckpointError` when it holds a NaN or an infinity (damaged or diverged weights)."""
    if np.issubdtype(tensor.dtype, np.floating) or tensor.dtype == ml_dtypes.bfloat16:
        numeric = tensor if np.issubdtype(tensor.dtype, np.floating) else tensor.astype(np.float32)
        if not np.isfinite(numeric).all():
            raise CheckpointError(f"{file}: tensor {name!r} holds non-finite values (NaN or infinity)")
    return tensor


def _check_shardings(config: ModelConfig, shardings) -> dict[str, jax.sharding.Sharding]:
    """`shardings` flattened ({"a/b/c": sharding}), or `CheckpointError` (one line) when it is
    not a pytree of `jax.sharding.Sharding`s with exactly the params' tensors."""
    if not isinstance(shardings, dict):
        raise CheckpointError(f"shardings must be a params-shaped dict of jax.sharding.Sharding, "
                              f"got {type(shardings).__name__}")
    flat = flatten(shardings)
    problem = name_mismatch(_shapes(config), flat)
    if problem:
        raise CheckpointError(f"shardings do not match the params: {problem}")
    bad = next((p for p, s in flat.items() if not isinstance(s, jax.sharding.Sharding)), None)
    if bad is not None:
        raise CheckpointError(f"shardings[{bad!r}] is a {type(flat[bad]).__name__}, not a jax.sharding.Sharding")
    return flat


def _span(sl: slice, n: int) -> tuple[int, int]:
    start, stop, step = sl.indices(n)
    if step != 1:
        raise ValueError(f"strided shard slice {sl}")
    return start, stop


def _contiguous(slices: tuple[slice, ...], shape: tuple[int, ...]) -> slice | None:
    """The flat index range of `slices` into an array of `shape` flattened, when it is one range
    (every axis after the first taken whole); else None."""
    if any(_span(sl, n) != (0, n) for sl, n in zip(slices[1:], shape[1:])):
        return None
    rest = int(np.prod(shape[1:]))
    start, stop = _span(slices[0], shape[0])
    return slice(start * rest, stop * rest)


def _read_one(e: _Entry, handle, name: str, idx: tuple[slice, ...]) -> np.ndarray:
    """Our tensor `e` (one layer's, without the layer axis) at `idx`, reading as little of the
    Hugging Face tensor `name` as its layout allows."""
    if e.n_in is None:
        if e.ours.endswith("bias"):  # flat in HF, small
            return e.to_ours(handle.get_tensor(name))[idx]
        return handle.get_slice(name)[idx]  # the same layout in both
    ins, outs = e.shape[:e.n_in], e.shape[e.n_in:]
    cols, rows = _contiguous(idx[:e.n_in], ins), _contiguous(idx[e.n_in:], outs)
    if cols is None or rows is None:  # a split we cannot read as one block: read it whole
        return e.to_ours(handle.get_tensor(name))[idx]
    part = handle.get_slice(name)[rows, cols]  # HF [out, in]
    lo_in, hi_in = _span(idx[0], ins[0])
    lo_out, hi_out = _span(idx[e.n_in], outs[0])
    return part.T.reshape(hi_in - lo_in, *ins[1:], hi_out - lo_out, *outs[1:])


def _read_slice(e: _Entry, handles, files, dtype, num_layers: int, idx: tuple[slice, ...]) -> np.ndarray:
    """`jax.make_array_from_callback`'s callback: our stacked (or plain) tensor `e` at `idx`."""
    layered = "{i}" in e.hf
    idx = tuple(idx) + (slice(None),) * (len(e.shape) + layered - len(idx))
    if not layered:
        return np.asarray(_read_one(e, handles[files[e.hf]], e.hf, idx)).astype(dtype)
    names = [e.hf.format(i=i) for i in range(*_span(idx[0], num_layers))]
    return np.stack([np.asarray(_read_one(e, handles[files[n]], n, idx[1:])).astype(dtype) for n in names])


def hf_state_dict(config: ModelConfig, params) -> Iterator[tuple[str, np.ndarray]]:
    """Yields (Hugging Face tensor name, numpy array in HF layout) for every tensor, one at a
    time (for `torch_model.load_state_dict`, or writing shards without holding two copies)."""
    check_params(config, params)
    flat = flatten(params)
    for e in _entries(config):
        x = np.asarray(jax.device_get(flat[e.ours]))
        if "{i}" in e.hf:
            for i in range(config.num_layers):
                yield e.hf.format(i=i), e.to_hf(x[i])
        else:
            yield e.hf, e.to_hf(x)


def save_hf_checkpoint(path: str | os.PathLike, config: ModelConfig, params, *,
                       max_shard_bytes: int = 5 * 2**30, overwrite: bool = False) -> Path:
    """Writes `params` as a Hugging Face checkpoint directory (config.json + safetensors).

    Tensors larger than `max_shard_bytes` together go into numbered shards with a
    `model.safetensors.index.json`. The directory appears atomically: it is written
    beside `path` and renamed into place, so a crash never leaves a half-written checkpoint.
    """
    check_params(config, params)
    path = Path(path).absolute()
    if path.exists() and not overwrite:
        raise CheckpointError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        shards: list[dict[str, np.ndarray]] = [{}]
        size = 0
        for name, tensor in hf_state_dict(config, params):
            if shards[-1] and size + tensor.nbytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][name] = tensor
            size += tensor.nbytes
        if len(shards) == 1:
            save_file(shards[0], tmp / "model.safetensors", metadata={"format": "pt"})
        else:
            n = len(shards)
            weight_map, total = {}, 0
            for k, shard in enumerate(shards, 1):
                fname = f"model-{k:05d}-of-{n:05d}.safetensors"
                save_file(shard, tmp / fname, metadata={"format": "pt"})
                for name, t in shard.items():
                    weight_map[name] = fname
                    total += t.nbytes
            (tmp / "model.safetensors.index.json").write_text(
                json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
        (tmp / "config.json").write_text(json.dumps(config.to_hf_config(), indent=2))
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
