"""Logical axis names and the rules that map them onto the mesh.

Every array dimension the library shards has a logical name; `Rules` maps each name to mesh axes
(or to none: replicated). Params, optimizer state, activations and KV caches all go through the
same rules, so one table says how a model is laid out:

    name         used by                                    default mesh axes
    "batch"      activations, caches, batches, task axes    ("data", "fsdp")
    "vocab"      embedding rows, output head columns        "tensor"
    "embed"      params' model dimension D                  "fsdp"
    "heads"      query heads H (params and activations)     "tensor"
    "kv_heads"   key / value heads K                        "tensor"
    "mlp"        the MLP's hidden dimension F               "tensor"
    "layers", "head_dim", "norm", "seq", "act_embed"        replicated

A dimension whose size the mesh axes do not divide is replicated instead (a tiny model keeps
working on a big mesh), so specs depend on shapes: use `spec_for(names, shape)`.

Inside jitted code, `constrain(x, names)` pins an activation's sharding when a mesh is set
(`jax.set_mesh`, or `metareason.parallel.use_mesh`) and does nothing otherwise, so the model and
the loops run unchanged on one device.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Any, Iterator, Mapping, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = ["Rules", "DEFAULT_RULES", "spec_for", "constrain", "use_mesh", "current_rules", "param_axes",
           "K_CACHE_AXES", "V_CACHE_AXES", "batch_vmap", "named_sharding"]

Names = Sequence[str | None]
Rules = Mapping[str, str | tuple[str, ...] | None]

DEFAULT_RULES: Rules = {
    "batch": ("data", "fsdp"),
    "vocab": "tensor",
    "embed": "fsdp",
    "heads": "tensor",
    "kv_heads": "tensor",
    "mlp": "tensor",
    "layers": None,
    "head_dim": None,
    "norm": None,
    "seq": None,
    "act_embed": None,
}

# the KV cache: k [L, B, K, Dh, T], v [L, B, K, T, Dh]
K_CACHE_AXES = ("layers", "batch", "kv_heads", "head_dim", "seq")  # keys: slots last (`KVCache`)
V_CACHE_AXES = ("layers", "batch", "kv_heads", "seq", "head_dim")

_rules: Rules = DEFAULT_RULES
# mesh axes already taken by an enclosing `batch_vmap` (its mapped axis), unavailable inside
_taken: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("metareason_taken_axes", default=())


def current_rules() -> Rules:
    return _rules


def _axis_sizes(mesh) -> dict[str, int]:
    return dict(zip(mesh.axis_names, mesh.axis_sizes))


def spec_for(names: Names, shape: Sequence[int], mesh, rules: Rules | None = None) -> P:
    """The `PartitionSpec` of an array with logical `names` (one per dim; None: replicated) and
    `shape` on `mesh` (a `Mesh` or `AbstractMesh`). Mesh axes absent from the mesh, of size 1,
    already used by an earlier dimension, or not dividing the dimension are dropped."""
    rules = _rules if rules is None else rules
    if len(names) != len(shape):
        raise ValueError(f"logical names {tuple(names)} do not match an array of shape {tuple(shape)}")
    sizes = _axis_sizes(mesh)
    used: set[str] = set(_taken.get())
    out = []
    for name, dim in zip(names, shape):
        if name is not None and name not in rules:
            raise ValueError(f"unknown logical axis {name!r} (known: {', '.join(sorted(rules))})")
        target = rules.get(name) if name is not None else None
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        axes = tuple(a for a in axes if sizes.get(a, 1) > 1 and a not in used)
        # keep the longest prefix of the axes whose product divides the dimension
        while axes and dim % math.prod(sizes[a] for a in axes):
            axes = axes[:-1]
        used.update(axes)
        out.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    while out and out[-1] is None:
        out.pop()
    return P(*out)


def constrain(x: jax.Array, names: Names) -> jax.Array:
    """`with_sharding_constraint(x, spec_for(names, x.shape))` under the current mesh; the
    identity when no mesh is set (one device, or a caller that shards by hand)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, spec_for(names, x.shape, mesh))


def batch_vmap(fn):
    """`jax.vmap(fn)` over a leading task / example axis that is sharded like "batch".

    Under a mesh the mapped axis is split over the "batch" mesh axes (`spmd_axis_name`), and
    inside `fn` those axes are taken, so `fn`'s own "batch" constraints resolve to the rest:
    each device runs its own tasks (meta-learning's outer batch) with no all-gather. Without a
    mesh it is plain `jax.vmap`."""

    def wrapped(*args):
        mesh = jax.sharding.get_abstract_mesh()
        leaves = jax.tree.leaves(args)
        if mesh.empty or not leaves:
            return jax.vmap(fn)(*args)
        spec = spec_for(("batch",), (leaves[0].shape[0],), mesh)
        axes = () if not len(spec) or spec[0] is None else (spec[0],) if isinstance(spec[0], str) else tuple(spec[0])
        if not axes:
            return jax.vmap(fn)(*args)
        token = _taken.set(_taken.get() + axes)
        try:
            return jax.vmap(fn, spmd_axis_name=axes if len(axes) > 1 else axes[0])(*args)
        finally:
            _taken.reset(token)

    return wrapped


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules: Rules | None = None) -> Iterator[Mesh]:
    """Sets `mesh` (`jax.set_mesh`) and, optionally, other logical-axis `rules` for the block.

    Functions traced inside see the mesh, so `constrain` and the sharded steps apply. Changing the
    rules clears JAX's compilation caches (they are not part of a trace's cache key)."""
    global _rules
    old = _rules
    if rules is not None and dict(rules) != dict(_rules):
        unknown = set(rules) ^ set(DEFAULT_RULES)
        if unknown:
            raise ValueError(f"rules must name exactly the logical axes {sorted(DEFAULT_RULES)}; "
                             f"differs in {sorted(unknown)}")
        _rules = dict(rules)
        jax.clear_caches()
    try:
        with jax.set_mesh(mesh):
            yield mesh
    finally:
        if _rules is not old:
            _rules = old
            jax.clear_caches()


def param_axes(config) -> dict[str, Any]:
    """The params pytree of `config` with a tuple of logical names per leaf (see the module
    docstring; the layout is `metareason.model.params`)."""
    from metareason.model.params import _layout, unflatten

    def names(path: str, ndim: int) -> tuple:
        leaf = path.split("/")
        if path == "embed_tokens/embedding":
            return ("vocab", "embed")
        if path == "lm_head/kernel":
            return ("embed", "vocab")
        if path == "norm/scale":
            return ("norm",)
        module, kind = leaf[-2], leaf[-1]
        if module in ("q_proj", "k_proj", "v_proj"):
            heads = "heads" if module == "q_proj" else "kv_heads"
            return ("layers", "embed", heads, "head_dim") if kind == "kernel" else ("layers", heads, "head_dim")
        if module == "o_proj":
            return ("layers", "heads", "head_dim", "embed") if kind == "kernel" else ("layers", "norm")
        if module in ("gate_proj", "up_proj"):
            return ("layers", "embed", "mlp")
        if module == "down_proj":
            return ("layers", "mlp", "embed")
        if module in ("q_norm", "k_norm"):
            return ("layers", "head_dim")
        if ndim == 2:  # layer norms [L, D]
            return ("layers", "norm")
        raise ValueError(f"no logical axes for parameter {path!r}")

    return unflatten({p: names(p, len(shape)) for p, (shape, _) in _layout(config).items()})


def named_sharding(mesh: Mesh, names: Names, shape: Sequence[int], rules: Rules | None = None) -> NamedSharding:
    return NamedSharding(mesh, spec_for(names, shape, mesh, rules))
