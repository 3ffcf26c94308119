"""Peak memory and step time of a second-order meta-gradient through n inner steps of a small
language model, for a plain unroll, per-step rematerialisation and nested checkpointing
(remat "none" / "step" / "nested"), n = 1 .. 32. Memory is XLA's compiled temporary-buffer size
(`memory_analysis().temp_size_in_bytes`, the activations kept for the backward pass); the slope
is fitted on log-log axes (1: linear in n, 0.5: square root).

    python benchmarks/inner_memory.py --out benchmarks/results/inner_memory_cpu2.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from metareason.inner import inner_loop  # noqa: E402
from metareason.model import ModelConfig, apply, init  # noqa: E402


def lm_loss(config):
    def loss(params, tokens):
        logp = jax.nn.log_softmax(apply(params, tokens[:, :-1], config=config).logits, -1)
        return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], -1))
    return loss


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", default="1,2,4,8,16,32")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    config = ModelConfig(family="qwen2", vocab_size=512, hidden_size=128, intermediate_size=384, num_layers=4,
                         num_heads=4, num_kv_heads=2, max_position_embeddings=256)
    params = init(config, jax.random.key(0))
    support = jax.random.randint(jax.random.key(1), (4, 129), 0, 512)
    query = jax.random.randint(jax.random.key(2), (4, 129), 0, 512)
    loss = lm_loss(config)
    rows = []
    for remat in ("none", "step", "nested"):
        for n in map(int, args.steps.split(",")):
            def meta(p, n=n, remat=remat):
                return loss(inner_loop(loss, p, support, optax.sgd(1e-2), steps=n, remat=remat).params, query)
            g = jax.jit(jax.grad(meta))
            t0 = time.perf_counter()
            compiled = g.lower(params).compile()
            compile_s = time.perf_counter() - t0
            mem = compiled.memory_analysis()
            temp = int(mem.temp_size_in_bytes) if mem is not None else None
            jax.block_until_ready(compiled(params))
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(params))
            sec = time.perf_counter() - t0
            rows.append({"remat": remat, "inner_steps": n, "temp_bytes": temp, "step_s": sec, "compile_s": compile_s})
            print(f"remat={remat:6s} n={n:3d}: temp {temp / 2**20 if temp else float('nan'):8.1f} MiB, "
                  f"step {sec * 1e3:7.1f} ms, compile {compile_s:.1f} s", flush=True)
    slopes = {}
    for remat in ("none", "step", "nested"):
        r = [x for x in rows if x["remat"] == remat and x["temp_bytes"] and x["inner_steps"] >= 4]
        if len(r) >= 2:
            slopes[remat] = {
                "memory": float(np.polyfit(np.log([x["inner_steps"] for x in r]), np.log([x["temp_bytes"] for x in r]), 1)[0]),
                "time": float(np.polyfit(np.log([x["inner_steps"] for x in r]), np.log([x["step_s"] for x in r]), 1)[0])}
    print("log-log slopes (n >= 4):", json.dumps(slopes))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": platform.machine(), "jax": jax.__version__,
                                        "backend": jax.default_backend(), "params": config.num_params(),
                                        "batch": "4 x 128 tokens", "rows": rows, "slopes": slopes}, indent=2))


if __name__ == "__main__":
    main()
