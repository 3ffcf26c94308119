"""Shardings of params, optimizer state, train state and batches, and sharded initialisation.

    mesh = make_mesh(MeshConfig(fsdp=4, tensor=2))
    params = sharded_init(config, jax.random.key(0), mesh)     # never whole on one host
    config, params = load_hf_sharded(hf_dir, mesh)              # or read a checkpoint into shards
    state = init_state(params, optimizer, seed)                 # opt state follows the params
    batch = shard_batch(local_batch, mesh)                      # [B, ...] split on "batch"
    with use_mesh(mesh):
        state, metrics = step(state, batch)                     # the same step as on one device

Everything here reads logical names (the params declare theirs: `metareason.model.param_axes`)
and maps them with the rules (`metareason.parallel.rules`), so one rule table lays out params,
optimizer moments, activations and caches consistently.
"""

from __future__ import annotations

import contextlib
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from metareason.model.axes import CACHE_SEGMENT_AXES, K_CACHE_AXES, V_CACHE_AXES
from metareason.model.hf import load_hf_checkpoint, load_hf_config
from metareason.model.params import flatten, init, param_axes, param_shapes, unflatten
from metareason.parallel.rules import spec_for, use_mesh

__all__ = ["param_specs", "param_shardings", "shard_params", "sharded_init", "load_hf_sharded", "opt_state_specs", "state_specs",
           "constrain_state", "batch_spec", "shard_batch", "replicated", "cache_specs", "is_spec", "Placement"]


def is_spec(x) -> bool:
    return isinstance(x, P)


def param_specs(config, mesh) -> dict[str, Any]:
    """The params pytree of `config` with a `PartitionSpec` per leaf, for `mesh` (a `Mesh` or the
    abstract mesh inside jit), from the leaves' logical axes (`metareason.model.param_axes`) and
    the rules."""
    axes = flatten(param_axes(config))
    return unflatten({p: spec_for(axes[p], leaf.shape, mesh) for p, leaf in flatten(param_shapes(config)).items()})


def param_shardings(config, mesh: Mesh) -> dict[str, Any]:
    """The params pytree of `config` with a `NamedSharding` per leaf."""
    return jax.tree.map(lambda s: NamedSharding(mesh, s), param_specs(config, mesh), is_leaf=is_spec)


def shard_params(params, config, mesh: Mesh):
    """Places existing params (e.g. loaded on one host) on `mesh`. For params too large for one
    host use `sharded_init` or `load_hf_sharded(path, mesh)`."""
    return jax.device_put(params, param_shardings(config, mesh))


def sharded_init(config, key: jax.Array, mesh: Mesh):
    """`metareason.model.init(config, key)` computed directly into the mesh's shards: each device
    generates only its own slice (partitionable threefry), so full params never exist on a host.
    Equal to the unsharded init."""
    with jax.set_mesh(mesh):
        return init_fn(config, mesh)(config, key)


def load_hf_sharded(path, mesh: Mesh, **config_overrides):
    """`metareason.model.load_hf_checkpoint(path, **config_overrides)` read straight into the
    mesh's shards (`param_shardings`): each device's slice is read from the safetensors files by
    itself, so whole params never exist on a host. Returns (config, params)."""
    config = load_hf_config(path, **config_overrides)
    return load_hf_checkpoint(path, shardings=param_shardings(config, mesh), **config_overrides)


def init_fn(config, mesh: Mesh):
    """The jitted `init(config, key)` with the mesh's out_shardings (what `sharded_init` runs;
    `.lower(config, key).compile()` shows the per-device program)."""
    return jax.jit(init, static_argnums=0, out_shardings=param_shardings(config, mesh))


def opt_state_specs(optimizer: optax.GradientTransformation, opt_state, pspecs):
    """Specs for an optimizer state: every params-shaped subtree (Adam's moments, ...) takes the
    params' specs, every other leaf (counts, schedules) is replicated."""
    return optax.tree_map_params(optimizer, lambda _, s: s, opt_state, pspecs,
                                 transform_non_params=lambda _: P(), is_leaf=is_spec)


def state_specs(state, config, optimizer: optax.GradientTransformation, mesh):
    """Specs of a `TrainState` on `mesh`: params and their optimizer moments by the rules, the
    step, the RNG and the optimizer's counters replicated."""
    pspecs = param_specs(config, mesh)
    return type(state)(step=P(), params=pspecs, opt_state=opt_state_specs(optimizer, state.opt_state, pspecs),
                       rng=P())


def constrain_state(state, config, optimizer: optax.GradientTransformation):
    """Inside jit under a mesh: pins a `TrainState`'s params and optimizer state to their specs
    (the rest replicated), so a step's outputs keep the inputs' layout and donation aliases
    them. The identity when no mesh is set."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return state
    return jax.lax.with_sharding_constraint(state, state_specs(state, config, optimizer, mesh))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_spec(shape, mesh) -> P:
    """Leading axis on "batch", the rest replicated."""
    return spec_for(("batch",) + (None,) * (len(shape) - 1), shape, mesh)


def shard_batch(batch, mesh: Mesh, *, local: bool = False):
    """Host arrays -> global arrays [B, ...] split over "batch" (data x fsdp).

    local False: `batch` is the whole global batch, the same on every process (as a seeded data
    pipeline gives it); each process places only the rows its own devices hold. local True:
    each process passes its own B / process_count rows (a loader sharded by process) and the
    global array is assembled without any process holding all of it."""
    def one(x):
        x = np.asarray(x)
        shape = (x.shape[0] * (jax.process_count() if local else 1),) + x.shape[1:]
        sharding = NamedSharding(mesh, batch_spec(shape, mesh))
        if local:
            return jax.make_array_from_process_local_data(sharding, x, shape)
        return jax.make_array_from_callback(shape, sharding, lambda idx: x[idx])

    return jax.tree.map(one, batch)


def cache_specs(cache, mesh) -> Any:
    """Specs of a `KVCache` (k [L, B, K, Dh, T], v [L, B, K, T, Dh], or tuples of per-layer
    arrays; segment ids [B, T] on "batch")."""
    def specs(arrays, axes):
        if cache.per_layer:
            return tuple(spec_for(axes[1:], a.shape, mesh) for a in arrays)
        return spec_for(axes, arrays.shape, mesh)

    return type(cache)(k=specs(cache.k, K_CACHE_AXES), v=specs(cache.v, V_CACHE_AXES),
                       segment_ids=spec_for(CACHE_SEGMENT_AXES, cache.segment_ids.shape, mesh), index=P())



class Placement:
    """Where a training run's arrays live: one device (`mesh` None) or a mesh.

    The run loops call it at the same points either way, so they have one code path:
    `place.params(...)`, `place.batch(...)`, and `with place.context(): ...` around the steps."""

    def __init__(self, mesh: Mesh | None = None):
        self.mesh = mesh

    @classmethod
    def from_text(cls, text: str) -> "Placement":
        """From a run config's mesh field: "" for one device, else `MeshConfig.parse` syntax."""
        from metareason.parallel.mesh import MeshConfig, make_mesh

        return cls(make_mesh(MeshConfig.parse(text)) if text else None)

    def init(self, config, key: jax.Array):
        return init(config, key) if self.mesh is None else sharded_init(config, key, self.mesh)

    def params(self, params, config):
        return params if self.mesh is None else shard_params(params, config, self.mesh)

    def state(self, state, config, optimizer: optax.GradientTransformation):
        """A `TrainState` laid out on the mesh (every leaf, counters included, so a state restored
        from a checkpoint into this layout is on the mesh too)."""
        if self.mesh is None:
            return state
        specs = state_specs(state, config, optimizer, self.mesh)
        return jax.device_put(state, jax.tree.map(lambda s: NamedSharding(self.mesh, s), specs, is_leaf=is_spec))

    def batch(self, batch):
        return batch if self.mesh is None else shard_batch(batch, self.mesh)

    def context(self):
        return contextlib.nullcontext() if self.mesh is None else use_mesh(self.mesh)
