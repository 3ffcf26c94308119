"""One process of a multi-process run on localhost (test_multihost.py starts them).

    python multihost_worker.py PHASE CKPT_DIR NUM_PROCESSES PROCESS_ID PORT

Each process has 2 CPU devices (JAX_NUM_CPU_DEVICES=2). The mesh is fsdp=2 within a process and
data=NUM_PROCESSES across processes, the params are initialised sharded, and each process feeds
only its own rows of every batch.

PHASE "train": step 1, save a checkpoint, step 2. PHASE "resume": restore the checkpoint, step 2.
Prints one line "RESULT {json}" (from process 0): the loss of each step and a digest of the full
params after each step (all-gathered).
"""

from __future__ import annotations

import hashlib
import json
import sys

from metareason.parallel import MeshConfig, initialize_distributed


def main(phase: str, ckpt_dir: str, num_processes: int, process_id: int, port: int) -> None:
    if num_processes > 1:
        initialize_distributed(f"localhost:{port}", num_processes, process_id)
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    from metareason.model import ModelConfig
    from metareason.parallel import make_mesh, shard_batch, sharded_init, use_mesh
    from metareason.runs import Checkpointer, abstract_like
    from metareason.train.state import OptimizerConfig, init_state, make_optimizer
    from metareason.train.step import make_train_step

    config = ModelConfig(family="qwen2", vocab_size=96, hidden_size=64, intermediate_size=128, num_layers=2,
                         num_heads=4, num_kv_heads=2, initializer_range=0.1)
    mesh = make_mesh(MeshConfig(data=1, fsdp=2, tensor=1, dcn_data=num_processes) if num_processes > 1
                     else MeshConfig(data=-1, fsdp=2))
    optimizer = make_optimizer(OptimizerConfig(lr=1e-2, warmup_steps=1), 10)
    step_fn = make_train_step(config, optimizer)
    global_b = 8

    def local_batch(seed: int) -> dict:
        rng = np.random.default_rng(seed)
        full = dict(tokens=rng.integers(0, 96, (global_b, 16)).astype(np.int32),
                    segment_ids=np.ones((global_b, 16), np.int32),
                    positions=np.tile(np.arange(16, dtype=np.int32), (global_b, 1)),
                    loss_mask=np.ones((global_b, 16), np.int32))
        rows = global_b // jax.process_count()
        lo = jax.process_index() * rows
        return {k: v[lo:lo + rows] for k, v in full.items()}

    def digest(tree) -> str:
        full = multihost_utils.process_allgather(tree, tiled=True)
        h = hashlib.sha256()
        for leaf in jax.tree.leaves(full):
            h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
        return h.hexdigest()[:16]

    result = {"processes": jax.process_count(), "devices": jax.device_count()}
    with use_mesh(mesh):
        state = init_state(sharded_init(config, jax.random.key(0), mesh), optimizer, 0)
        ckpt = Checkpointer(ckpt_dir, keep=2)
        if phase == "train":
            state, m = step_fn(state, shard_batch(local_batch(1), mesh, local=True))
            result["loss1"] = float(m["loss"])
            result["params1"] = digest(state.params)
            ckpt.save(1, state, {"note": "after step 1"})
        else:
            restored = ckpt.restore_latest(abstract_like(state))
            assert restored is not None, "no checkpoint to resume from"
            step, state, extra = restored
            result["restored_step"] = step
            result["params1"] = digest(state.params)
            result["sharding_kept"] = all(
                a.sharding == b.sharding for a, b in zip(jax.tree.leaves(state.params),
                                                       jax.tree.leaves(sharded_init(config, jax.random.key(0), mesh))))
        state, m = step_fn(state, shard_batch(local_batch(2), mesh, local=True))
        result["loss2"] = float(m["loss"])
        result["params2"] = digest(state.params)
        ckpt.close()
    if jax.process_index() == 0:
        print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
