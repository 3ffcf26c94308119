"""Meshes and sharding: the same code on one device, a multi-GPU host or a TPU pod slice.

    mesh = make_mesh(MeshConfig(fsdp=-1, tensor=2))       # axes ("data", "fsdp", "tensor")
    params = sharded_init(config, key, mesh)                # or load_hf_sharded(path, mesh)
    with use_mesh(mesh):
        state, metrics = train_step(state, shard_batch(batch, mesh))

Multi-host: call `initialize_distributed()` first in every process (see the README's "Running at
scale"). Layout rules: `metareason.parallel.rules` (params declare their logical axes in
`metareason.model.param_axes`).
"""

from metareason.parallel.mesh import AXES, MeshConfig, MeshError, initialize_distributed, make_mesh
from metareason.parallel.rules import (DEFAULT_RULES, K_CACHE_AXES, V_CACHE_AXES, batch_vmap, constrain, current_rules,
                                       param_axes, spec_for, use_mesh)
from metareason.parallel.shard import (Placement, batch_spec, cache_specs, constrain_state, load_hf_sharded,
                                       opt_state_specs, param_shardings, param_specs, replicated, shard_batch,
                                       shard_params, sharded_init)

__all__ = [
    "AXES", "MeshConfig", "MeshError", "make_mesh", "initialize_distributed",
    "DEFAULT_RULES", "K_CACHE_AXES", "V_CACHE_AXES", "batch_vmap", "constrain", "current_rules", "param_axes",
    "spec_for", "use_mesh",
    "param_specs", "param_shardings", "shard_params", "sharded_init", "load_hf_sharded", "opt_state_specs",
    "constrain_state",
    "batch_spec", "shard_batch", "replicated", "cache_specs", "Placement",
]
