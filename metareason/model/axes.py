"""Logical axes: the names of the model's array dimensions, and how a rules context maps them to a mesh.

Every dimension the library may shard has a logical name:

    "batch"      B: sequences (activations, caches, batches, task axes)
    "seq"        S / T: tokens, cache slots
    "vocab"      V: embedding rows, output head columns, logits
    "embed"      D of the params (kernels' model dimension)
    "act_embed"  D of the activations (the residual stream)
    "norm"       D of the norm scales and the output bias
    "heads"      H: query heads (params and activations)
    "kv_heads"   K: key / value heads
    "head_dim"   Dh
    "mlp"        F: the MLP's hidden dimension
    "layers"     L: the stacked layer axis

The params declare theirs where their layout is declared (`metareason.model.params.param_axes`);
the KV cache's and the activations' are the constants below. Which mesh axes a name is split over
is not the model's business: that is a Flax logical-axis rules sequence ((logical name, mesh axis,
mesh axes or None), ...), active inside `flax.linen.logical_axis_rules(rules)`;
`metareason.parallel.use_mesh` sets a mesh and its default rules together.

`constrain(x, names)` pins an activation's sharding inside jitted code when a mesh (`jax.set_mesh`)
and rules are both active, and is the identity otherwise, so the model runs unchanged on one device.
`logical_spec(names, shape, mesh, rules)` is Flax's `logical_to_mesh_axes` fitted to a mesh: mesh
axes the mesh lacks or has of size 1 are dropped, and a dimension the mesh axes do not divide keeps
the longest prefix of them that does (none: replicated), so a tiny model keeps working on a big mesh.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
from jax.sharding import PartitionSpec as P

__all__ = ["AXIS_NAMES", "K_CACHE_AXES", "V_CACHE_AXES", "CACHE_SEGMENT_AXES", "HIDDEN_AXES", "QUERY_AXES", "MLP_AXES",
           "LOGITS_AXES", "Names", "Rules", "logical_spec", "constrain"]

Names = Sequence[str | None]
# Flax logical axis rules: ((logical name, mesh axis | mesh axes | None), ...), the first match wins
Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]

AXIS_NAMES = ("batch", "seq", "vocab", "embed", "act_embed", "norm", "heads", "kv_heads", "head_dim", "mlp", "layers")

# the KV cache (`metareason.model.cache.KVCache`): k [L, B, K, Dh, T] (slots last), v [L, B, K, T, Dh];
# a per-layer cache drops the leading "layers"
K_CACHE_AXES = ("layers", "batch", "kv_heads", "head_dim", "seq")
V_CACHE_AXES = ("layers", "batch", "kv_heads", "seq", "head_dim")
CACHE_SEGMENT_AXES = ("batch", "seq")  # segment_ids [B, T]
# activations
HIDDEN_AXES = ("batch", "seq", "act_embed")  # the residual stream h [B, S, D]
QUERY_AXES = ("batch", "seq", "heads", "head_dim")  # q [B, S, H, Dh]
MLP_AXES = ("batch", "seq", "mlp")  # the MLP's hidden activations [B, S, F]
LOGITS_AXES = ("batch", "seq", "vocab")  # logits [B, S, V]


def logical_spec(names: Names, shape: Sequence[int], mesh, rules: Rules | None = None) -> P:
    """The `PartitionSpec` of an array with logical `names` (one per dim; None: replicated) and
    `shape` on `mesh` (a `Mesh`, an `AbstractMesh`, or anything with `axis_names` and
    `axis_sizes`), by Flax's `logical_to_mesh_axes` under `rules` (default: the active
    `flax.linen.logical_axis_rules`), then fitted to the mesh (see the module docstring)."""
    rules = nn.get_logical_axis_rules() if rules is None else rules
    if len(names) != len(shape):
        raise ValueError(f"logical names {tuple(names)} do not match an array of shape {tuple(shape)}")
    known = {name for name, _ in rules}
    unknown = next((n for n in names if n is not None and n not in known), None)
    if unknown is not None:
        raise ValueError(f"unknown logical axis {unknown!r} (the rules name: {', '.join(sorted(known))})")
    sizes = dict(zip(mesh.axis_names, mesh.axis_sizes))
    out = []
    for target, dim in zip(nn.logical_to_mesh_axes(tuple(names), tuple(rules)), shape):
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        axes = tuple(a for a in axes if sizes.get(a, 1) > 1)
        # keep the longest prefix of the axes whose product divides the dimension
        while axes and dim % math.prod(sizes[a] for a in axes):
            axes = axes[:-1]
        out.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    while out and out[-1] is None:
        out.pop()
    return P(*out)


def constrain(x: jax.Array, names: Names) -> jax.Array:
    """`with_sharding_constraint(x, logical_spec(names, x.shape, mesh))` under the current mesh
    and logical-axis rules; the identity when either is unset (one device, or a caller that
    shards by hand)."""
    mesh = jax.sharding.get_abstract_mesh()
    rules = nn.get_logical_axis_rules()
    if mesh.empty or not rules:
        return x
    return jax.lax.with_sharding_constraint(x, logical_spec(names, x.shape, mesh, rules))
