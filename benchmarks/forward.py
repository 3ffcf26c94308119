"""Forward-pass throughput: metareason (JAX) vs `transformers` (PyTorch) on the same random
model with the same weights, side by side in one run.

    python benchmarks/forward.py                        # CPU, small model
    python benchmarks/forward.py --preset qwen2-1.5b    # GPU, Qwen2-1.5B shape in bf16

Reports tokens/s of each, their ratio, our compile time, achieved TFLOP/s, and the mean KL
between the two models' next-token distributions (a sanity check that both ran the same model).
Writes the numbers as JSON to --out when given.
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
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from metareason.model import ModelConfig, apply, hf_state_dict, init  # noqa: E402

PRESETS = {
    # a small model for CPU timing
    "small": dict(config=ModelConfig(family="qwen2", vocab_size=8192, hidden_size=256, intermediate_size=768,
                                     num_layers=4, num_heads=8, num_kv_heads=2, initializer_range=0.05),
                  batch=4, seq=256),
    # Qwen2-1.5B's shape (random weights), bf16
    "qwen2-1.5b": dict(config=ModelConfig(family="qwen2", vocab_size=151936, hidden_size=1536,
                                          intermediate_size=8960, num_layers=28, num_heads=12, num_kv_heads=2,
                                          rope_theta=1e6, tie_word_embeddings=True, max_position_embeddings=32768,
                                          param_dtype="bfloat16", compute_dtype="bfloat16"),
                       batch=4, seq=2048),
}


def forward_flops(config: ModelConfig, batch: int, seq: int) -> float:
    """Matmul FLOPs of one forward pass (2 per multiply-add), causal attention counted in full."""
    D, F, L, V = config.hidden_size, config.intermediate_size, config.num_layers, config.vocab_size
    H, K, Dh = config.num_heads, config.num_kv_heads, config.head_dim
    per_token = L * (2 * D * Dh * (H + 2 * K) + 2 * H * Dh * D + 6 * D * F) + 2 * D * V
    attention = L * 4 * H * Dh * seq * seq  # QK^T and PV over the full square
    return batch * (seq * per_token + attention)


def time_it(fn, iters: int) -> float:
    fn()  # warm-up
    fn()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def matmul_peak_tflops(dtype: str) -> float:
    """TFLOP/s of one n^3 matmul in `dtype` (n = 8192 on a GPU, 1024 on a CPU), mean of 10 after
    two warm-ups: the practical peak, printed and returned."""
    n = 8192 if jax.default_backend() == "gpu" else 1024
    x = jnp.ones((n, n), dtype)
    mm = jax.jit(lambda x: x @ x)
    tflops = 2 * n**3 / time_it(lambda: mm(x).block_until_ready(), 10) / 1e12
    print(f"{n}^3 {dtype} matmul: {tflops:.1f} TFLOP/s (the practical peak)", flush=True)
    return tflops


def bench_ours(config, params, tokens, iters):
    fwd = jax.jit(lambda p, t: apply(p, t, config=config).logits)
    t0 = time.perf_counter()
    compiled = fwd.lower(params, tokens).compile()
    compile_s = time.perf_counter() - t0
    out = compiled(params, tokens)
    sec = time_it(lambda: compiled(params, tokens).block_until_ready(), iters)
    return sec, compile_s, np.asarray(out[:, -8:].astype(jnp.float32))


def transformers_model(config: ModelConfig, params, device: str):
    """The `transformers` model of `config` holding `params` (sdpa attention, eval mode)."""
    import torch
    import transformers

    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}[config.compute_dtype]
    hf_config = transformers.AutoConfig.for_model(**config.to_hf_config())
    with torch.device(device):  # not "meta": RoPE's inv_freq buffer must be computed, not left empty
        model = transformers.AutoModelForCausalLM.from_config(hf_config, attn_implementation="sdpa", dtype=dtype)
    state = {}
    for name, x in hf_state_dict(config, params):
        state[name] = torch.from_numpy(np.array(x, np.float32)).to(device=device, dtype=dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if m != "lm_head.weight" or not config.tie_word_embeddings]
    assert not missing and not unexpected, (missing, unexpected)
    if config.tie_word_embeddings:
        model.tie_weights()
    return model.eval()


def bench_transformers(config, params, tokens, iters, device):
    import torch

    model = transformers_model(config, params, device)
    ids = torch.as_tensor(np.asarray(tokens), dtype=torch.long, device=device)

    def run():
        with torch.inference_mode():
            out = model(input_ids=ids).logits
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    sec = time_it(run, iters)
    return sec, run()[:, -8:].float().cpu().numpy()


def mean_kl(p_logits, q_logits):
    def logsm(x):
        x = x.astype(np.float64) - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))
    lp, lq = logsm(p_logits), logsm(q_logits)
    return float((np.exp(lp) * (lp - lq)).sum(-1).mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq", type=int)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--impls", default="xla", help="comma-separated attention_impl values for ours (xla,cudnn)")
    ap.add_argument("--no-reference", action="store_true", help="skip transformers")
    ap.add_argument("--peak", action="store_true", help="also time a large matmul (the practical FLOP/s peak)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    preset = PRESETS[args.preset]
    batch, seq = args.batch or preset["batch"], args.seq or preset["seq"]
    base = preset["config"]
    backend = jax.default_backend()
    params = init(base, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (batch, seq), 0, base.vocab_size)
    flops = forward_flops(base, batch, seq)
    result = {"preset": args.preset, "batch": batch, "seq": seq, "backend": backend,
              "device": str(jax.devices()[0].device_kind), "jax": jax.__version__,
              "cpu_count": os.cpu_count(), "machine": platform.machine(), "params": base.num_params(),
              "forward_tflop": flops / 1e12, "ours": {}}
    ours_logits = None
    if args.peak:
        result["matmul_peak_tflops"] = matmul_peak_tflops(base.compute_dtype)
    for impl in args.impls.split(","):
        config = base.replace(attention_impl=impl)
        try:
            sec, compile_s, logits = bench_ours(config, params, tokens, args.iters)
        except Exception as err:  # e.g. cudnn on a machine without it: report, go on
            result["ours"][impl] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
            print(f"ours[{impl}]: failed: {result['ours'][impl]['error']}", flush=True)
            continue
        ours_logits = logits if ours_logits is None else ours_logits
        result["ours"][impl] = {"seconds": sec, "tokens_per_s": batch * seq / sec, "compile_s": compile_s,
                                "tflops": flops / sec / 1e12}
        print(f"ours[{impl}]: {batch * seq / sec:,.0f} tokens/s  ({sec * 1e3:.1f} ms/forward, "
              f"{flops / sec / 1e12:.1f} TFLOP/s, compile {compile_s:.1f} s)", flush=True)
    if not args.no_reference:
        import torch
        import transformers

        device = "cuda" if backend == "gpu" else "cpu"
        sec, ref_logits = bench_transformers(base, params, tokens, args.iters, device)
        result["transformers"] = {"seconds": sec, "tokens_per_s": batch * seq / sec, "tflops": flops / sec / 1e12,
                                  "version": transformers.__version__, "torch": torch.__version__,
                                  "torch_threads": torch.get_num_threads()}
        result["mean_kl_ours_vs_transformers"] = mean_kl(ref_logits, ours_logits)
        print(f"transformers {transformers.__version__} (torch {torch.__version__}, sdpa): "
              f"{batch * seq / sec:,.0f} tokens/s ({sec * 1e3:.1f} ms/forward)")
        for impl, r in result["ours"].items():
            if "error" in r:
                continue
            r["speedup_vs_transformers"] = r["tokens_per_s"] / result["transformers"]["tokens_per_s"]
            print(f"ratio ours[{impl}] / transformers: {r['speedup_vs_transformers']:.2f}x")
        print(f"mean KL(transformers || ours) on the last 8 positions: {result['mean_kl_ours_vs_transformers']:.2e}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
