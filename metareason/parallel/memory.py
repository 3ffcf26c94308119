"""Memory arithmetic per device: what a training step, a sampler or a probe needs on a mesh.

    est = train_step_memory(config, batch=256, seq=4096, mesh={"data": 1, "fsdp": 64, "tensor": 4})
    print(est.table())          # params, gradients, optimizer, activations, logits, total (GiB)

Params, gradients and optimizer state are exact: each tensor's bytes divided by the mesh axes
its sharding splits it over (the same rules as `metareason.parallel.rules`, so a dimension the
axes do not divide stays whole). Activations are an estimate from the model's code (which tensors
the backward pass keeps, per layer and token; see `_layer_activation_bytes`); the compiler's
scheduling moves the true peak around it (tests/parallel/test_memory.py checks the estimate
against `compiled.memory_analysis()` of the real step on scaled-down models).
"""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace
from typing import Mapping


from metareason.model.params import flatten, param_axes, param_shapes
from metareason.parallel.rules import spec_for

__all__ = ["MemoryEstimate", "axis_sizes", "param_bytes_per_device", "train_step_memory", "sampling_memory"]

_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}
GiB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device, by kind."""

    params: int
    gradients: int = 0
    optimizer: int = 0
    activations: int = 0
    kv_cache: int = 0
    logits: int = 0

    @property
    def state(self) -> int:
        """What lives across steps (a train step's arguments): params and optimizer state."""
        return self.params + self.optimizer

    @property
    def total(self) -> int:
        return self.params + self.gradients + self.optimizer + self.activations + self.kv_cache + self.logits

    def table(self) -> str:
        rows = [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)] + [("total", self.total)]
        return "\n".join(["| per device | GiB |", "|---|---|"] +
                         [f"| {name} | {value / GiB:.2f} |" for name, value in rows if value or name == "total"])


def axis_sizes(mesh) -> dict[str, int]:
    """{axis: size} of `mesh`: a mapping ({"data": 1, "fsdp": 64, "tensor": 4}), a `jax.sharding.Mesh`
    (e.g. from `make_mesh`) or None (one device)."""
    if mesh is None:
        return {"data": 1, "fsdp": 1, "tensor": 1}
    if isinstance(mesh, Mapping):
        return {str(k): int(v) for k, v in mesh.items()}
    if hasattr(mesh, "axis_names") and hasattr(mesh, "shape"):  # a jax.sharding.Mesh
        return {str(k): int(v) for k, v in dict(mesh.shape).items()}
    raise TypeError(f"mesh must be a jax.sharding.Mesh or a mapping of axis sizes, got {type(mesh).__name__}")


def _mesh(mesh):
    mesh = axis_sizes(mesh)
    names = tuple(mesh)
    return SimpleNamespace(axis_names=names, axis_sizes=tuple(int(mesh[n]) for n in names))


def _split(spec, sizes: dict[str, int]) -> int:
    """How many ways a `PartitionSpec` splits an array."""
    n = 1
    for entry in spec:
        for axis in ((entry,) if isinstance(entry, str) else (entry or ())):
            n *= sizes[axis]
    return n


def param_bytes_per_device(config, mesh, dtype: str | None = None) -> int:
    """Bytes of one copy of the params (in `dtype`, default the params' dtype) on one device of
    `mesh` ({axis: size} or a `jax.sharding.Mesh`), laid out by the logical-axis rules."""
    m = _mesh(mesh)
    sizes = dict(zip(m.axis_names, m.axis_sizes))
    axes = flatten(param_axes(config))
    width = _BYTES[dtype or config.param_dtype]
    total = 0
    for path, leaf in flatten(param_shapes(config)).items():
        shape = leaf.shape
        elems = math.prod(shape)
        total += elems * width // _split(spec_for(axes[path], shape, m), sizes)
    return total


def _local(n: int, ways: int) -> int:
    return n // ways if n % ways == 0 else n


def _layer_activation_bytes(config, b: int, s: int, h: int, k: int, f: int) -> int:
    """Bytes of the values one layer keeps for its backward pass, for b sequences of s tokens with h query
    heads, k kv heads and an MLP width f on this device (no rematerialisation):

    - per token, of width D: the layer input, the normalised input, the attention output, the
      residual after attention and its normalised copy (5 D); q, k, v and their rotated copies
      (2 (h + 2 k) Dh); the heads' outputs before o_proj (h Dh);
    - per token, of width F: gate, up, silu(gate) and their product (4 f);
    - per head pair of tokens: the scores, the masked scores and the softmax (3 b h s^2), which
      is why attention memory grows with the square of the sequence ("xla"); with "chunked"
      attention only one block of queries at a time (3 b h chunk s); with "cudnn", "pallas" or
      "splash" none (the fused kernel keeps one log-sum-exp per query; "auto" is counted as
      "xla", the upper bound)."""
    D, Dh = config.hidden_size, config.head_dim
    tokens = b * s
    per_token = 5 * D + 2 * (h + 2 * k) * Dh + h * Dh + 4 * f
    if config.attention_impl in ("cudnn", "pallas", "splash"):
        scores = b * h * s
    elif config.attention_impl == "chunked":
        scores = 3 * b * h * min(config.attention_chunk, s) * s
    else:
        scores = 3 * b * h * s * s
    return tokens * per_token * _BYTES[config.compute_dtype] + scores * 4  # scores in float32


def train_step_memory(config, *, batch: int, seq: int, mesh=None,
                      optimizer_moments: int = 2, optimizer_dtype: str | None = None) -> MemoryEstimate:
    """Per-device memory of `metareason.train.step` (AdamW: two moments) on `batch` packed rows of
    `seq` tokens, on `mesh` ({"data": .., "fsdp": .., "tensor": ..} or a `jax.sharding.Mesh`;
    default one device).

    Gradients and optax's AdamW moments come in the params' dtype (`optimizer_dtype` to say
    otherwise). Activations follow `config.remat`: "none" keeps every layer's tensors; "full" keeps each
    layer's input and recomputes one layer at a time in the backward pass; "dots" /
    "dots_no_batch" keep the matmul outputs (about half)."""
    mesh = axis_sizes(mesh)
    t = mesh.get("tensor", 1)
    b = _local(batch, mesh.get("data", 1) * mesh.get("fsdp", 1))
    h, k, f = _local(config.num_heads, t), _local(config.num_kv_heads, t), _local(config.intermediate_size, t)
    act_width = _BYTES[config.compute_dtype]
    params = param_bytes_per_device(config, mesh)
    grads = params  # gradients come in the params' dtype
    opt = optimizer_moments * param_bytes_per_device(config, mesh, optimizer_dtype)
    layer = _layer_activation_bytes(config, b, seq, h, k, f)
    carry = b * seq * config.hidden_size * act_width
    if config.remat == "none":
        acts = config.num_layers * layer
    elif config.remat == "full":
        acts = config.num_layers * carry + layer
    else:
        acts = config.num_layers * layer // 2
    v = _local(config.vocab_size, t)
    # float32 logits, their log-softmax and its gradient, for every token or one chunk of them
    logits = 3 * b * min(seq, config.loss_chunk or seq) * v * 4
    return MemoryEstimate(params=params, gradients=grads, optimizer=opt, activations=int(acts), logits=logits)


def sampling_memory(config, *, batch: int, max_len: int, mesh=None,
                    cache_dtype: str | None = None) -> MemoryEstimate:
    """Per-device memory of `metareason.sample.generate`: params, the KV cache [L, B, K, T, Dh] for
    `batch` rows of `max_len` slots (split on "batch" and "kv_heads"), and one step's logits."""
    mesh = axis_sizes(mesh)
    t = mesh.get("tensor", 1)
    b = _local(batch, mesh.get("data", 1) * mesh.get("fsdp", 1))
    k = _local(config.num_kv_heads, t)
    width = _BYTES[cache_dtype or config.compute_dtype]
    cache = 2 * config.num_layers * b * k * max_len * config.head_dim * width
    return MemoryEstimate(params=param_bytes_per_device(config, mesh), kv_cache=int(cache),
                          logits=b * _local(config.vocab_size, t) * 4)
