"""The rules that map logical axis names onto the mesh, and the mesh context that applies them.

Every array dimension the library shards has a logical name (`metareason.model.axes`: params
declare theirs in `metareason.model.params.param_axes`, the KV cache and activations use the
constants there). The rules are Flax logical-axis rules, ((logical name, mesh axes or None), ...);
params, optimizer state, activations and KV caches all go through them, so one table says how a
model is laid out:

    name         used by                                    default mesh axes
    "batch"      activations, caches, batches, task axes    ("data", "fsdp")
    "vocab"      embedding rows, output head columns        "tensor"
    "embed"      params' model dimension D                  "fsdp"
    "heads"      query heads H (params and activations)     "tensor"
    "kv_heads"   key / value heads K                        "tensor"
    "mlp"        the MLP's hidden dimension F               "tensor"
    "layers", "head_dim", "norm", "seq", "act_embed"        replicated

A dimension whose size the mesh axes do not divide is replicated instead (a tiny model keeps
working on a big mesh), so specs depend on shapes: use `spec_for(names, shape, mesh)`.

`use_mesh(mesh)` sets the mesh (`jax.set_mesh`) and these rules (`flax.linen.logical_axis_rules`)
for a block; inside jitted code traced there, the model's `constrain(x, names)` pins activations'
shardings. Without a mesh and rules it does nothing, so the model and the loops run unchanged on
one device.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Mapping, Sequence

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from metareason.model.axes import K_CACHE_AXES, V_CACHE_AXES, Names, Rules, constrain, logical_spec
from metareason.model.params import param_axes

__all__ = ["Rules", "DEFAULT_RULES", "spec_for", "constrain", "use_mesh", "current_rules", "param_axes",
           "K_CACHE_AXES", "V_CACHE_AXES", "batch_vmap", "named_sharding"]

DEFAULT_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("layers", None),
    ("head_dim", None),
    ("norm", None),
    ("seq", None),
    ("act_embed", None),
)


def current_rules() -> Rules:
    """The active Flax logical-axis rules (`use_mesh`, `flax.linen.logical_axis_rules`), else
    `DEFAULT_RULES`."""
    return tuple(nn.get_logical_axis_rules()) or DEFAULT_RULES


def spec_for(names: Names, shape: Sequence[int], mesh, rules: Rules | None = None) -> P:
    """The `PartitionSpec` of an array with logical `names` (one per dim; None: replicated) and
    `shape` on `mesh` (a `Mesh` or `AbstractMesh`) under `rules` (default `current_rules()`).
    Mesh axes absent from the mesh, of size 1, or not dividing the dimension are dropped, and no
    mesh axis splits two dimensions (Flax's rule: the earlier rule keeps it)."""
    return logical_spec(names, shape, mesh, current_rules() if rules is None else _as_rules(rules))


def _as_rules(rules: Rules | Mapping) -> Rules:
    """Flax rules from a rules sequence or a {logical name: mesh axes} mapping."""
    return tuple(rules.items()) if isinstance(rules, Mapping) else tuple(tuple(r) for r in rules)


def _without(rules: Rules, taken: tuple[str, ...]) -> Rules:
    """`rules` with the mesh axes `taken` removed from every target."""
    out = []
    for name, target in rules:
        axes = tuple(a for a in ((target,) if isinstance(target, str) else tuple(target or ())) if a not in taken)
        out.append((name, None if not axes else axes[0] if len(axes) == 1 else axes))
    return tuple(out)


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
        rules = current_rules()
        spec = spec_for(("batch",), (leaves[0].shape[0],), mesh, rules)
        axes = () if not len(spec) or spec[0] is None else (spec[0],) if isinstance(spec[0], str) else tuple(spec[0])
        if not axes:
            return jax.vmap(fn)(*args)
        with nn.logical_axis_rules(_without(rules, axes)):
            return jax.vmap(fn, spmd_axis_name=axes if len(axes) > 1 else axes[0])(*args)

    return wrapped


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules: Rules | Mapping | None = None) -> Iterator[Mesh]:
    """Sets `mesh` (`jax.set_mesh`) and the logical-axis `rules` (`flax.linen.logical_axis_rules`;
    default: the enclosing block's, else `DEFAULT_RULES`) for the block.

    Functions traced inside see both, so `constrain` and the sharded steps apply. Rules other than
    the enclosing ones clear JAX's compilation caches on entry and exit (the rules are not part
    of a trace's cache key; the mesh is)."""
    rules = current_rules() if rules is None else _as_rules(rules)
    unknown = {name for name, _ in rules} ^ {name for name, _ in DEFAULT_RULES}
    if unknown:
        raise ValueError(f"rules must name exactly the logical axes {sorted(n for n, _ in DEFAULT_RULES)}; "
                         f"differs in {sorted(unknown)}")
    custom = rules != current_rules()
    if custom:
        jax.clear_caches()
    try:
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            yield mesh
    finally:
        if custom:
            jax.clear_caches()


def named_sharding(mesh: Mesh, names: Names, shape: Sequence[int], rules: Rules | None = None) -> NamedSharding:
    return NamedSharding(mesh, spec_for(names, shape, mesh, rules))
