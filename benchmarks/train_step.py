"""SFT step throughput and MFU: metareason's jit-compiled train step (`metareason.train.make_train_step`:
loss, gradient, global-norm clipping and AdamW, donated state) vs `transformers` + `torch.optim.AdamW`
on the same random model with the same weights and the same batch, side by side in one run.

    python benchmarks/train_step.py                                   # CPU: a small model
    python benchmarks/train_step.py --preset qwen2-1.5b --peak        # GPU: Qwen2-1.5B shape, bf16, 8 x 2048

Both take one full optimizer step per call on one [batch, seq] block of random tokens (every
next token trained): forward, backward, clip at norm 1, AdamW with bf16 (or fp32) params and
moments. MFU counts the model's matmul FLOPs, 3 x the forward's (`forward.forward_flops`: the
projections, MLP and output head, and attention over the full [seq, seq] square, as PaLM's
appendix B counts them), over the step's wall time, against the datasheet's dense peak
(--peak-tflops, default 989 for an H100 / H200 SXM in bf16) and, with --peak, against a measured
8192^3 matmul. Recomputation (remat, chunked losses) is not counted as useful work.

Ours runs each --overrides variant (numerics fields: scan_unroll, remat, loss_chunk, ...) on each
--forms batch: `causal` has no segment ids (plain causal attention, what transformers runs),
`packed` has them (one segment per row; the segment mask reaches cuDNN as a dense bias). With
--profile DIR, two more steps of each are traced and the device time per kernel (ms per step)
goes into the JSON: that is how the float32 backward matmuls were found (BENCHMARKS.md).

Memory: transformers runs first and hands its memory back (`torch.cuda.empty_cache`) before our
step is compiled, and JAX allocates on demand (XLA_PYTHON_CLIENT_PREALLOCATE=false, set here
unless already set), so each side can use the whole card. Both sides' first and last losses on
the same batch are reported: they must agree (a check that both trained the same model).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from forward import PRESETS as FORWARD_PRESETS  # noqa: E402
from forward import forward_flops, matmul_peak_tflops, time_it, transformers_model  # noqa: E402

from metareason.model import ModelConfig, init  # noqa: E402
from metareason.train import init_state, make_train_step  # noqa: E402

PRESETS = {
    "small": dict(config=FORWARD_PRESETS["small"]["config"], batch=4, seq=256),
    "qwen2-1.5b": dict(config=FORWARD_PRESETS["qwen2-1.5b"]["config"].replace(attention_impl="cudnn", loss_chunk=512),
                       batch=8, seq=2048),
}
# the same AdamW on both sides, at a constant learning rate (torch's AdamW has no schedule)
LR, B1, B2, WEIGHT_DECAY, CLIP = 1e-4, 0.9, 0.98, 0.01, 1.0


def our_optimizer() -> optax.GradientTransformation:
    """`metareason.train.make_optimizer`'s chain (clip, then AdamW) at the constant rate LR."""
    return optax.chain(optax.clip_by_global_norm(CLIP), optax.adamw(LR, b1=B1, b2=B2, weight_decay=WEIGHT_DECAY))


def bench_transformers(config: ModelConfig, params, tokens: np.ndarray, iters: int, device: str) -> dict:
    import torch

    model = transformers_model(config, params, device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(B1, B2), weight_decay=WEIGHT_DECAY,
                            **({"fused": True} if device == "cuda" else {}))
    ids = torch.tensor(tokens, dtype=torch.long, device=device)
    losses = []

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())  # a host sync, like ours
    sec = time_it(step, iters)  # two warm-up steps, then the mean of `iters`
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    model = opt = None  # (not del: `step` closes over them) so the card's memory can go back
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"seconds": sec, "first_loss": losses[0], "last_loss": losses[-1], "peak_memory_gib": peak}


def device_time_by_op(trace_dir: Path, steps: int, top: int = 30,
                      processes: tuple[str, ...] = ("device", "gpu")) -> dict:
    """{device thread: {"total_ms", "top": [[op or kernel name, ms per step], ...]}} from the newest
    `jax.profiler` trace under `trace_dir` covering `steps` steps (device threads only: on a GPU
    one per stream, plus XLA's op-level view)."""
    import gzip

    path = max(trace_dir.rglob("*.trace.json.gz"), key=lambda p: p.stat().st_mtime)
    events = json.loads(gzip.open(path).read())["traceEvents"]
    names = {(e["ph"], e["pid"], e.get("tid")): e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") in ("process_name", "thread_name")}
    totals: dict[str, dict[str, float]] = {}
    for e in events:
        process = names.get(("M", e.get("pid"), None), "")
        if e.get("ph") != "X" or not any(p in process.lower() for p in processes):
            continue
        thread = f"{process} / {names.get(('M', e['pid'], e.get('tid')), e.get('tid'))}"
        per = totals.setdefault(thread, {})
        per[e["name"]] = per.get(e["name"], 0.0) + e.get("dur", 0) / 1e3 / steps
    return {t: {"total_ms": sum(d.values()), "top": sorted(d.items(), key=lambda kv: -kv[1])[:top]}
            for t, d in totals.items()}


def bench_ours(config: ModelConfig, params, tokens: np.ndarray, iters: int, form: str = "packed",
               profile: Path | None = None) -> dict:
    optimizer = our_optimizer()
    step_fn = make_train_step(config, optimizer)
    B, S = tokens.shape
    batch = {"tokens": jnp.asarray(tokens, jnp.int32), "loss_mask": jnp.ones((B, S), jnp.int32)}
    if form == "packed":  # one segment per row, but as a packed batch: a dense segment mask
        batch.update(segment_ids=jnp.ones((B, S), jnp.int32),
                     positions=jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32), (B, S)))
    state = init_state(jax.tree.map(jnp.copy, params), optimizer, seed=0)
    t0 = time.perf_counter()
    compiled = step_fn.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    losses = []

    def step():
        nonlocal state
        state, metrics = compiled(state, batch)
        losses.append(float(metrics["loss"]))  # blocks until the step is done
    sec = time_it(step, iters)  # two warm-up steps, then the mean of `iters`
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    out = {"seconds": sec, "compile_s": compile_s, "first_loss": losses[0], "last_loss": losses[-1],
           "peak_memory_gib": peak / 2**30 if peak else None}
    if profile:
        with jax.profiler.trace(str(profile), create_perfetto_trace=True):
            step()
            step()
        out["device_time_by_op"] = device_time_by_op(profile, steps=2)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq", type=int)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--overrides", default="",
                    help="semicolon-separated variants of our numerics, each NAME=VALUE,... "
                         "(e.g. 'attention_impl=cudnn;attention_impl=cudnn,remat=full'); '' is the preset")
    ap.add_argument("--forms", default="packed",
                    help="comma-separated batch forms for ours: packed (with segment ids: a dense mask) "
                         "and/or causal (no segment ids: plain causal attention, as transformers runs)")
    ap.add_argument("--peak-tflops", type=float, help="the dense datasheet peak (default 989 bf16 / 67 fp32 on GPUs)")
    ap.add_argument("--peak", action="store_true", help="also time an 8192^3 matmul (the practical peak)")
    ap.add_argument("--profile", type=Path,
                    help="trace 2 more steps of each of our variants into this folder and add the device time "
                         "per op (ms per step) to the JSON")
    ap.add_argument("--no-reference", action="store_true", help="skip transformers")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    p = PRESETS[a.preset]
    base, B, S = p["config"], a.batch or p["batch"], a.seq or p["seq"]
    variants = [(text, base.with_overrides(text)) for text in a.overrides.split(";")]  # bad text fails here
    forms = a.forms.split(",")
    if not set(forms) <= {"packed", "causal"}:
        ap.error(f"--forms takes packed / causal, got {a.forms!r}")
    backend = jax.default_backend()
    device_kind = str(jax.devices()[0].device_kind)
    params = init(base, jax.random.key(0))
    tokens = np.asarray(jax.random.randint(jax.random.key(1), (B, S), 0, base.vocab_size), np.int32)
    flops = 3 * forward_flops(base, B, S)
    peak = a.peak_tflops or (None if backend != "gpu" else 989.0 if base.compute_dtype == "bfloat16" else 67.0)
    result = {"preset": a.preset, "batch": B, "seq": S, "backend": backend, "device": device_kind,
              "jax": jax.__version__, "cpu_count": os.cpu_count(), "machine": platform.machine(),
              "params": base.num_params(), "dtype": base.compute_dtype, "step_tflop": flops / 1e12,
              "peak_tflops": peak, "ours": {}}

    def save():  # after every side, so a run cut short keeps what it measured
        if a.out:
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text(json.dumps(result, indent=2))

    def report(name, r):
        r["tokens_per_s"] = B * S / r["seconds"]
        r["tflops"] = flops / r["seconds"] / 1e12
        if peak:
            r["mfu"] = r["tflops"] / peak
        if result.get("matmul_peak_tflops"):
            r["fraction_of_matmul_peak"] = r["tflops"] / result["matmul_peak_tflops"]
        print(f"{name}: {r['seconds'] * 1e3:.1f} ms/step, {r['tokens_per_s']:,.0f} tokens/s, {r['tflops']:.1f} TFLOP/s"
              + (f", MFU {r['mfu']:.1%}" if peak else "") + f"; loss {r['first_loss']:.4f} -> {r['last_loss']:.4f}"
              + (f"; peak memory {r['peak_memory_gib']:.1f} GiB" if r.get("peak_memory_gib") else ""), flush=True)

    if a.peak:
        result["matmul_peak_tflops"] = matmul_peak_tflops(base.compute_dtype)
    if not a.no_reference:
        import torch
        import transformers

        r = bench_transformers(base, params, tokens, a.iters, "cuda" if backend == "gpu" else "cpu")
        r.update(version=transformers.__version__, torch=torch.__version__, torch_threads=torch.get_num_threads())
        result["transformers"] = r
        report(f"transformers {transformers.__version__} + torch AdamW", r)
        save()
    for (text, config), form in [(v, f) for v in variants for f in forms]:
        name = f"{form}:{text or 'preset'}"
        try:
            r = bench_ours(config, params, tokens, a.iters, form,
                           a.profile / name.replace(":", "_").replace("=", "-") if a.profile else None)
        except Exception as err:  # e.g. out of memory for one variant: report it, go on
            result["ours"][name] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
            print(f"ours[{name}]: failed: {result['ours'][name]['error']}", flush=True)
            continue
        result["ours"][name] = r
        for thread, d in r.get("device_time_by_op", {}).items():
            top = ", ".join(f"{n[:60]} {ms:.1f}" for n, ms in d["top"][:8])
            print(f"  {thread}: {d['total_ms']:.1f} ms/step; {top}")
        report(f"ours[{name}] (compile {r['compile_s']:.1f} s)", r)
        if "transformers" in result:
            r["speedup_vs_transformers"] = result["transformers"]["seconds"] / r["seconds"]
            for which in ("first", "last"):
                r[f"{which}_loss_minus_transformers"] = r[f"{which}_loss"] - result["transformers"][f"{which}_loss"]
            print(f"  ratio ours / transformers: {r['speedup_vs_transformers']:.2f}x; loss differences: first "
                  f"{r['first_loss_minus_transformers']:+.2e}, last {r['last_loss_minus_transformers']:+.2e}",
                  flush=True)
        save()
    save()


if __name__ == "__main__":
    main()
