"""Sampling throughput: metareason's jit-compiled decoder (`metareason.sample.generate`: one
prefill, then a `lax.while_loop` over the KV cache) vs `transformers` `model.generate` on the same
random model with the same weights, side by side in one run.

    python benchmarks/sample.py --preset lab                      # CPU: the lab model, batch 32
    python benchmarks/sample.py                                   # CPU: a 3.3 M-parameter model, batch 32
    python benchmarks/sample.py --preset qwen2-1.5b               # GPU: Qwen2-1.5B shape in bf16

Both generate exactly `--new` tokens per row (no stop token; transformers with min_new_tokens =
max_new_tokens and no eos), greedy unless --temperature > 0. transformers runs at torch's default
thread count and at 1 thread (the faster counts: on a loaded 2-core machine torch's 2-thread pool
stalls badly). Reports generated tokens/s
(batch x new tokens / wall time, prefill included, after a warm-up call; the best of --repeats),
our compile time, the ratio, and the fraction of rows whose greedy tokens agree exactly (a check
that both ran the same model; fp32 on the CPU agrees on nearly all rows, bf16 diverges sooner).

On a CPU it also reports the compute bound: the FLOPs of a decode step (projections, MLP, head,
attention over every cache slot), the GFLOP/s that a 2x and a 5x ratio would need, and XLA's own
matmul rate at the MLP's shape and at 1024^3 on this machine.

On a GPU it also reports the fraction of the memory-bandwidth bound: each decode step must read
every parameter once plus the KV cache written so far, so
    tokens/s <= batch x bandwidth / (param bytes + mean KV-cache bytes per step),
    KV bytes per step = 2 x layers x kv_heads x head_dim x batch x (prompt + new / 2) x dtype bytes.
(--bandwidth, default 3.35e12 B/s for an H100 SXM, 4.8e12 for an H200.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from forward import transformers_model  # noqa: E402

from metareason.model import ModelConfig, init  # noqa: E402
from metareason.sample import SamplingConfig, generate  # noqa: E402
from metareason.train.presets import model_preset  # noqa: E402

PRESETS = {
    # the lab's own model (lab-fast, 0.6 M parameters, vocabulary 87): what runs on CPUs here
    "lab": dict(config=model_preset("lab-fast"), batch=32, prompt=32, new=128),
    # a larger model (3.3 M parameters, vocabulary 4096): matmul-bound on a CPU
    "cpu": dict(config=ModelConfig(family="qwen2", vocab_size=4096, hidden_size=256, intermediate_size=768,
                                   num_layers=4, num_heads=8, num_kv_heads=2, initializer_range=0.05,
                                   max_position_embeddings=1024),
                batch=32, prompt=64, new=64),
    "qwen2-1.5b": dict(config=ModelConfig(family="qwen2", vocab_size=151936, hidden_size=1536,
                                          intermediate_size=8960, num_layers=28, num_heads=12, num_kv_heads=2,
                                          rope_theta=1e6, tie_word_embeddings=True, max_position_embeddings=32768,
                                          param_dtype="bfloat16", compute_dtype="bfloat16"),
                       batch=32, prompt=128, new=256),
}
BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12}


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def decode_step_flops(config: ModelConfig, batch: int, slots: int) -> float:
    """FLOPs of one decode step at `batch` rows attending to `slots` cache slots: the projections,
    MLP and output head (2 per weight per row) plus attention scores and values."""
    D, F, L = config.hidden_size, config.intermediate_size, config.num_layers
    H, K, Dh, V = config.num_heads, config.num_kv_heads, config.head_dim, config.vocab_size
    per_layer = 2 * (D * H * Dh + 2 * D * K * Dh + H * Dh * D + 3 * D * F) + 2 * 2 * H * Dh * slots
    return batch * (L * per_layer + 2 * D * V)


def matmul_gflops(m: int, k: int, n: int, reps: int) -> float:
    """XLA's float32 [m, k] x [k, n] matmul rate on this backend, `reps` chained in one jit."""
    import jax.numpy as jnp
    from jax import lax

    a, b = jnp.ones((m, k), jnp.float32), jnp.full((k, n), 1e-3, jnp.float32)
    f = jax.jit(lambda a, b: lax.fori_loop(0, reps, lambda i, x: x + (a + x[:1, :1]) @ b * 1e-9,
                                           jnp.zeros((m, n), jnp.float32)))
    f(a, b).block_until_ready()
    sec = best_of(lambda: f(a, b).block_until_ready(), 5)
    return 2 * m * k * n * reps / sec / 1e9


def bandwidth_bound(config: ModelConfig, batch: int, prompt: int, new: int, bandwidth: float) -> float:
    """Decode tokens/s if every step only streamed the params and the mean KV cache from memory."""
    nbytes = np.dtype(config.param_dtype if config.param_dtype != "bfloat16" else np.float16).itemsize
    kv = 2 * config.num_layers * config.num_kv_heads * config.head_dim * batch * (prompt + new / 2) * nbytes
    return batch * bandwidth / (config.num_params() * nbytes + kv)


def reference(a, config, params, prompts, ours_tokens, sec: float, backend: str) -> dict:
    """transformers' `generate` on the same prompts (CUDA on a GPU, else the CPU at its default and
    at 1 torch thread, the faster counted): its timing, the ratio, and on greedy runs how many rows
    and tokens equal ours."""
    B, P = prompts.shape
    N = ours_tokens.shape[1]
    result = {}
    import torch
    import transformers

    device = "cuda" if backend == "gpu" else "cpu"
    model = transformers_model(config, params, device)
    ids = torch.as_tensor(prompts, dtype=torch.long, device=device)
    mask = torch.ones_like(ids)
    kw = dict(max_new_tokens=N, min_new_tokens=N, eos_token_id=None, pad_token_id=0,
              do_sample=a.temperature > 0, **({"temperature": a.temperature, "top_k": 0} if a.temperature > 0 else {}))

    def theirs():
        with torch.inference_mode():
            o = model.generate(input_ids=ids, attention_mask=mask, **kw)
        if device == "cuda":
            torch.cuda.synchronize()
        return o

    # torch at its default thread count and, on a CPU, at 1 thread: its thread pool stalls when
    # another process holds a core, so the faster of the two is the honest peer
    threads = [torch.get_num_threads()] + ([1] if device == "cpu" and torch.get_num_threads() > 1 else [])
    per_threads = {}
    ref = None
    for n in threads:
        torch.set_num_threads(n)
        warm = theirs()  # warm-up; greedy, so its tokens are the reference
        ref = warm[:, P:].cpu().numpy() if ref is None else ref
        per_threads[n] = best_of(theirs, a.repeats)
        print(f"transformers with {n} torch thread(s): {B * N / per_threads[n]:,.0f} tokens/s", flush=True)
    best_threads = min(per_threads, key=per_threads.get)
    torch.set_num_threads(best_threads)
    tsec = per_threads[best_threads]
    result["transformers"] = {"seconds": tsec, "tokens_per_s": B * N / tsec, "version": transformers.__version__,
                              "torch": torch.__version__, "torch_threads": best_threads,
                              "tokens_per_s_by_threads": {str(n): B * N / t for n, t in per_threads.items()}}
    result["ratio_ours_over_transformers"] = tsec / sec
    if a.temperature == 0:
        result["rows_identical"] = float((ref == ours_tokens).all(1).mean())
        result["tokens_identical"] = float((ref == ours_tokens).mean())
    print(f"transformers {transformers.__version__} (torch {torch.__version__}): {B * N / tsec:,.0f} tokens/s "
          f"({tsec:.2f} s per batch)")
    print(f"ratio ours / transformers: {tsec / sec:.1f}x" + (
        f"; greedy rows identical: {result['rows_identical']:.2f}, tokens: {result['tokens_identical']:.3f}"
        if a.temperature == 0 else ""))
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--prompt", type=int)
    ap.add_argument("--new", type=int)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bandwidth", type=float, help="HBM bytes/s (default on a GPU: from the device name; on another "
                    "accelerator the bound is computed only when this is given)")
    ap.add_argument("--no-reference", action="store_true", help="skip transformers (no peer on a TPU)")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    p = PRESETS[a.preset]
    config, B, P, N = p["config"], a.batch or p["batch"], a.prompt or p["prompt"], a.new or p["new"]
    backend = jax.default_backend()
    params = init(config, jax.random.key(0))
    prompts = np.array(jax.random.randint(jax.random.key(1), (B, P), 0, config.vocab_size), np.int32)
    lengths = np.full(B, P, np.int32)
    sampling = SamplingConfig(temperature=a.temperature, max_new_tokens=N)
    key = jax.random.key(2)

    def ours():
        return jax.block_until_ready(generate(params, prompts, lengths, config=config, sampling=sampling, key=key))

    t0 = time.perf_counter()
    out = ours()
    compile_s = time.perf_counter() - t0
    sec = best_of(ours, a.repeats)
    ours_tokens = np.asarray(out.tokens)
    assert (np.asarray(out.lengths) == N).all()
    result = {"preset": a.preset, "backend": backend, "device": str(jax.devices()[0].device_kind),
              "cpu_count": os.cpu_count(), "machine": platform.machine(), "jax": jax.__version__,
              "params": config.num_params(), "dtype": config.compute_dtype, "batch": B, "prompt": P, "new_tokens": N,
              "temperature": a.temperature,
              "ours": {"seconds": sec, "tokens_per_s": B * N / sec, "compile_s": compile_s - sec}}
    print(f"ours: {B * N / sec:,.0f} tokens/s ({sec:.2f} s per batch; first call {compile_s:.1f} s)", flush=True)

    if not a.no_reference:
        result.update(reference(a, config, params, prompts, ours_tokens, sec, backend))
    bw = a.bandwidth or (next((v for k, v in BANDWIDTH.items() if k in result["device"]), BANDWIDTH["H100"])
                         if backend == "gpu" else None)
    if bw:
        bound = bandwidth_bound(config, B, P, N, bw)
        result["bandwidth_bytes_per_s"] = bw
        result["bandwidth_bound_tokens_per_s"] = bound
        result["ours"]["fraction_of_bandwidth_bound"] = B * N / sec / bound
        print(f"memory-bandwidth bound {bound:,.0f} tokens/s; ours reaches {B * N / sec / bound:.0%}")
    if backend == "cpu" and not a.no_reference:
        # the compute bound: what the ratio's target asks of this CPU's matmuls
        flops = decode_step_flops(config, B, P + N - 1)
        for r in (2, 5):
            need = flops * N / (result["transformers"]["seconds"] / r) / 1e9
            result[f"gflops_needed_for_{r}x"] = need
        shape = (B, config.hidden_size, config.intermediate_size)
        result["decode_step_flops"] = flops
        result["xla_matmul_gflops"] = {"x".join(map(str, shape)): matmul_gflops(*shape, reps=1000),
                                       "1024x1024x1024": matmul_gflops(1024, 1024, 1024, reps=10)}
        print(f"a decode step is {flops / 1e6:.1f} MFLOP: 5x over transformers needs "
              f"{result['gflops_needed_for_5x']:.0f} GFLOP/s of decoding; XLA's matmul rate here: "
              + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in result["xla_matmul_gflops"].items()))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
