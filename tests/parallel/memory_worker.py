"""Peak host memory of building a model's params, in a fresh process (test_sharded_import.py).

    python memory_worker.py MODE [HF_DIR]

MODE: "sharded_import" (load_hf_sharded(HF_DIR, mesh) on an fsdp=8 mesh), or
"import_then_shard" (the unsharded load_hf_checkpoint, then shard_params: whole params on the
host next to their shards; the control that shows the measure can fail).
Prints "RESULT {json}": the params' bytes and the peak rise of anonymous resident memory
(RssAnon, sampled every millisecond; file-backed pages of the memory-mapped safetensors file
are not counted, they are the page cache, not a copy).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ["JAX_PLATFORMS"] = "cpu"

# big enough that one extra copy dwarfs the runtime's own allocations (about 200 MB in float32)
CONFIG = dict(family="qwen2", vocab_size=4096, hidden_size=512, intermediate_size=2048, num_layers=12,
              num_heads=8, num_kv_heads=4, max_position_embeddings=512)


def rss_anon() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


class Peak:
    def __init__(self):
        self.peak, self.stop = 0, False

    def __enter__(self):
        self.base = rss_anon()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self):
        while not self.stop:
            self.peak = max(self.peak, rss_anon())
            time.sleep(0.001)

    def __exit__(self, *a):
        self.stop = True
        self.thread.join()
        self.peak = max(self.peak, rss_anon())
        self.rise = self.peak - self.base


def main(mode: str, hf_dir: str | None) -> None:
    import jax
    import numpy as np

    from metareason.model import ModelConfig, load_hf_checkpoint
    from metareason.parallel import MeshConfig, load_hf_sharded, make_mesh, param_shardings, shard_params

    config = ModelConfig(**CONFIG)
    mesh = make_mesh(MeshConfig(data=1, fsdp=8))
    jax.jit(lambda x: x + 1)(np.ones(4))  # start the runtime before measuring
    with Peak() as peak:
        if mode == "sharded_import":
            _, params = load_hf_sharded(hf_dir, mesh)
        else:
            _, whole = load_hf_checkpoint(hf_dir)
            params = jax.block_until_ready(shard_params(whole, config, mesh))
            del whole
        jax.block_until_ready(params)
    want = jax.tree.leaves(param_shardings(config, mesh))
    sharded = all(x.sharding == w for x, w in zip(jax.tree.leaves(params), want))
    nbytes = sum(x.nbytes for x in jax.tree.leaves(params))
    print("RESULT " + json.dumps({"bytes": nbytes, "rise": peak.rise, "sharded": sharded}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
