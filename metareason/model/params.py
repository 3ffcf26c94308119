"""The parameter pytree: its layout (shapes and logical axes), random initialisation and validation.

Params are a nested dict of arrays whose keys follow Hugging Face's module names, with the
per-layer tensors stacked on a leading layer axis L (the layers are scanned). One table,
`_declare`, names every tensor's logical axes (`metareason.model.axes`) and initialiser; its
shape follows from the axes (`axis_sizes(config)`), so a tensor cannot be added without its axes:

    embed_tokens/embedding            [V, D]          (vocab, embed)
    layers/input_layernorm/scale      [L, D]          (layers, norm)
    layers/self_attn/q_proj/kernel    [L, D, H, Dh]   (layers, embed, heads, head_dim)
                                                      (+ bias [L, H, Dh] when config.qkv_bias)
    layers/self_attn/k_proj/kernel    [L, D, K, Dh]   (layers, embed, kv_heads, head_dim) (+ bias)
    layers/self_attn/v_proj/kernel    [L, D, K, Dh]   (layers, embed, kv_heads, head_dim) (+ bias)
    layers/self_attn/o_proj/kernel    [L, H, Dh, D]   (layers, heads, head_dim, embed)
                                                      (+ bias [L, D] (layers, norm) when config.o_bias)
    layers/self_attn/q_norm/scale     [L, Dh]         (layers, head_dim) (qwen3 only; k_norm alike)
    layers/post_attention_layernorm/scale [L, D]      (layers, norm)
    layers/mlp/{gate,up}_proj/kernel  [L, D, F]       (layers, embed, mlp)
    layers/mlp/down_proj/kernel       [L, F, D]       (layers, mlp, embed)
    norm/scale                        [D]             (norm)
    lm_head/kernel                    [D, V]          (embed, vocab) (absent when embeddings are tied)

`param_shapes(config)` and `param_axes(config)` give the table as pytrees shaped like
`init(config, key)`. `split_layers` gives the same params with `layers` as a tuple of L
per-layer dicts (leaves without the L axis), the form a decode loop carries; `apply` and
`check_params` take both.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metareason.model.config import ModelConfig

__all__ = ["init", "param_shapes", "param_axes", "axis_sizes", "check_params", "ParamsError", "flatten", "unflatten",
           "with_overrides", "split_layers", "stack_layers"]

Params = dict[str, Any]


class ParamsError(ValueError):
    """A params pytree that does not match its config (names the tensor and both shapes)."""


def axis_sizes(config: ModelConfig) -> dict[str, int]:
    """The size of each logical axis a param dimension can have, for `config`."""
    return {"vocab": config.vocab_size, "embed": config.hidden_size, "norm": config.hidden_size,
            "mlp": config.intermediate_size, "layers": config.num_layers, "heads": config.num_heads,
            "kv_heads": config.num_kv_heads, "head_dim": config.head_dim}


def _declare(config: ModelConfig) -> dict[str, tuple[tuple[str, ...], str]]:
    """The params table: flat "path/to/leaf" -> (logical axes, initialiser) for `config`."""
    a = "layers/self_attn/"
    out = {"embed_tokens/embedding": (("vocab", "embed"), "normal"),
           "layers/input_layernorm/scale": (("layers", "norm"), "ones")}
    for name, heads in (("q_proj", "heads"), ("k_proj", "kv_heads"), ("v_proj", "kv_heads")):
        out[a + name + "/kernel"] = (("layers", "embed", heads, "head_dim"), "normal")
        if config.qkv_bias:
            out[a + name + "/bias"] = (("layers", heads, "head_dim"), "zeros")
    out[a + "o_proj/kernel"] = (("layers", "heads", "head_dim", "embed"), "normal")
    if config.o_bias:
        out[a + "o_proj/bias"] = (("layers", "norm"), "zeros")
    if config.qk_norm:
        out[a + "q_norm/scale"] = (("layers", "head_dim"), "ones")
        out[a + "k_norm/scale"] = (("layers", "head_dim"), "ones")
    out["layers/post_attention_layernorm/scale"] = (("layers", "norm"), "ones")
    out["layers/mlp/gate_proj/kernel"] = (("layers", "embed", "mlp"), "normal")
    out["layers/mlp/up_proj/kernel"] = (("layers", "embed", "mlp"), "normal")
    out["layers/mlp/down_proj/kernel"] = (("layers", "mlp", "embed"), "normal")
    out["norm/scale"] = (("norm",), "ones")
    if not config.tie_word_embeddings:
        out["lm_head/kernel"] = (("embed", "vocab"), "normal")
    return out


class _Leaf(NamedTuple):
    shape: tuple[int, ...]
    axes: tuple[str, ...]
    init: str  # "normal" | "zeros" | "ones"


@functools.lru_cache(maxsize=64)
def _layout(config: ModelConfig) -> dict[str, _Leaf]:
    """Flat map "path/to/leaf" -> (shape, logical axes, initialiser) for `config`."""
    sizes = axis_sizes(config)
    return {path: _Leaf(tuple(sizes[n] for n in axes), axes, kind) for path, (axes, kind) in _declare(config).items()}


def flatten(params: Params) -> dict[str, Any]:
    """Nested dict -> flat {"a/b/c": leaf}."""
    flat = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}/")
        else:
            flat[prefix[:-1]] = node

    walk(params, "")
    return flat


def unflatten(flat: dict[str, Any]) -> Params:
    """Flat {"a/b/c": leaf} -> nested dict."""
    out: Params = {}
    for path, leaf in flat.items():
        node = out
        *parents, last = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = leaf
    return out


def _shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    return {k: leaf.shape for k, leaf in _layout(config).items()}


def param_shapes(config: ModelConfig) -> Params:
    """The params pytree as `jax.ShapeDtypeStruct`s (param dtype), without allocating anything."""
    dtype = jnp.dtype(config.param_dtype)
    return unflatten({k: jax.ShapeDtypeStruct(s, dtype) for k, s in _shapes(config).items()})


def param_axes(config: ModelConfig) -> Params:
    """The params pytree (the structure of `init(config, key)`) with each leaf's logical axis
    names, one per dimension: e.g. ("layers", "embed", "heads", "head_dim") for the query
    kernel, ("vocab", "embed") for the embedding. `metareason.parallel` maps them onto a mesh."""
    return unflatten({k: leaf.axes for k, leaf in _layout(config).items()})


def init(config: ModelConfig, key: jax.Array) -> Params:
    """Random params: kernels and embeddings ~ N(0, initializer_range^2), biases 0, norm scales 1."""
    layout = _layout(config)
    dtype = jnp.dtype(config.param_dtype)
    keys = jax.random.split(key, len(layout))
    flat = {}
    for k, (path, (shape, _, kind)) in zip(keys, sorted(layout.items())):
        if kind == "normal":
            flat[path] = (config.initializer_range * jax.random.normal(k, shape, jnp.float32)).astype(dtype)
        elif kind == "zeros":
            flat[path] = jnp.zeros(shape, dtype)
        else:
            flat[path] = jnp.ones(shape, dtype)
    return unflatten(flat)


def name_mismatch(expected: dict[str, tuple[int, ...]], found) -> str | None:
    """The first missing or unexpected tensor name, as a one-line message (None if the names agree)."""
    missing = sorted(set(expected) - set(found))
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        return f"missing tensor {missing[0]!r} (expected shape {expected[missing[0]]}){more}"
    extra = sorted(set(found) - set(expected))
    if extra:
        more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
        return f"unexpected tensor {extra[0]!r} for this config{more}"
    return None


def split_layers(params: Params) -> Params:
    """`params` with `layers` as a tuple of L per-layer dicts, each leaf without the layer axis
    (unchanged if already split). Decode loops carry this form: on XLA:CPU a loop that slices a
    layer out of the stacked weights copies the slice at every step; split once before the loop,
    the weights are read in place."""
    layers = params["layers"]
    if isinstance(layers, (tuple, list)):
        return params
    L = jax.tree.leaves(layers)[0].shape[0]
    return dict(params, layers=tuple(jax.tree.map(lambda p, i=i: p[i], layers) for i in range(L)))


def stack_layers(params: Params) -> Params:
    """The inverse of `split_layers`: `layers` as one dict of [L, ...] leaves."""
    layers = params["layers"]
    if not isinstance(layers, (tuple, list)):
        return params
    return dict(params, layers=jax.tree.map(lambda *xs: jnp.stack(xs), *layers))


def _stacked_shapes(layers) -> Params:
    """Split layers -> one dict of `ShapeDtypeStruct`s with the layer axis (shapes only)."""
    if not layers:
        raise ParamsError("params['layers'] is an empty tuple")

    def stack(path, *xs):
        shapes = [tuple(np.shape(x)) for x in xs]
        bad = next((i for i, s in enumerate(shapes) if s != shapes[0]), None)
        if bad is not None:
            name = "layers/" + "/".join(str(getattr(k, "key", k)) for k in path)
            raise ParamsError(f"tensor {name!r} of split layer {bad} has shape {shapes[bad]}, "
                              f"layer 0's has {shapes[0]}")
        return jax.ShapeDtypeStruct((len(xs), *shapes[0]), jnp.float32)

    try:
        return jax.tree_util.tree_map_with_path(stack, *layers)
    except ValueError as e:
        if isinstance(e, ParamsError):
            raise
        raise ParamsError(f"the split layers do not all have the same tensors ({str(e).splitlines()[0]})") from None


def check_params(config: ModelConfig, params: Params) -> None:
    """Raises `ParamsError` (one line) for a missing, extra or mis-shaped tensor.

    Works on arrays, tracers and `ShapeDtypeStruct`s: it reads shapes only. `layers` may be
    stacked or split (`split_layers`).
    """
    if not isinstance(params, dict):
        raise ParamsError(f"params must be a nested dict of arrays, got {type(params).__name__}")
    if isinstance(params.get("layers"), (tuple, list)):
        params = dict(params, layers=_stacked_shapes(params["layers"]))
    expected = _shapes(config)
    found = flatten(params)
    problem = name_mismatch(expected, found)
    if problem:
        raise ParamsError(problem)
    for path, shape in expected.items():
        got = tuple(np.shape(found[path]))
        if got != shape:
            raise ParamsError(f"tensor {path!r} has shape {got}, expected {shape}")


def with_overrides(config: ModelConfig, params: Params, overrides: str | dict) -> tuple[ModelConfig, Params]:
    """`config` with `overrides` ("name=value,..." or a `ModelConfig.parse_overrides` dict) and the
    params cast to its `param_dtype` if that changed."""
    changes = ModelConfig.parse_overrides(overrides) if isinstance(overrides, str) else overrides
    new = config.replace(**changes) if changes else config
    if new.param_dtype != config.param_dtype:
        dtype = jnp.dtype(new.param_dtype)
        params = jax.tree.map(lambda x: x.astype(dtype), params)
    return new, params
