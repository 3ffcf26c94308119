"""The probe (answer loss after every trajectory cut): our one-pass methods vs per-prefix forward
passes of our own model and of `transformers` (the official notebook's method), on the same random
model, side by side in one run.

    python benchmarks/probe.py                                   # CPU: small model, trajectory 512, 64 cuts
    python benchmarks/probe.py --preset qwen2-1.5b --trajectory 4096 --impl cudnn   # GPU, bf16

Also times one plain forward pass over question + trajectory + all probes (the floor a one-pass
method can aim at) and checks that every method gives the same losses.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))
from forward import PRESETS, transformers_model  # noqa: E402

from metareason.model import apply, init  # noqa: E402
from metareason.probe import ProbeBatch, answer_loss_along_trajectory  # noqa: E402


def best_of(fn, iters: int) -> float:
    """Median seconds of `iters` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def make_batch(config, question: int, trajectory: int, probe_len: int, cuts: int, seed: int = 0) -> ProbeBatch:
    rng = np.random.default_rng(seed)
    n = question + trajectory
    context = rng.integers(0, config.vocab_size, (1, n))
    c = np.linspace(question, n, cuts).round().astype(np.int32)[None]
    probe = rng.integers(0, config.vocab_size, (1, probe_len))
    targets = np.arange(probe_len)[None] >= 1  # everything after the first probe token is scored
    return ProbeBatch(context, np.asarray([n]), c, probe, targets)


def ours_per_prefix(config, params, batch: ProbeBatch):
    """One jitted forward per cut on [context[:c] + probe], right-padded to one length (one compile)."""
    ctx, probe = np.asarray(batch.context[0]), np.asarray(batch.probe[0])
    A, L = len(probe), len(ctx) + len(probe)
    targets = jnp.asarray(batch.targets[0])
    seqs = []
    for c in np.asarray(batch.cuts[0]):
        s = np.zeros(L, np.int32)
        s[:c + A] = np.concatenate([ctx[:c], probe])
        seqs.append(s)
    seqs = jnp.asarray(np.stack(seqs))[:, None]

    @jax.jit
    def nll(p, seq, c):
        logp = jax.nn.log_softmax(apply(p, seq, config=config).logits[0].astype(jnp.float32), -1)
        idx = c - 1 + jnp.arange(1, A)
        tok = seq[0, c + jnp.arange(1, A)]
        lp = logp[idx, tok]
        return -jnp.sum(jnp.where(targets[1:], lp, 0.0)) / jnp.sum(targets)

    cuts = [jnp.asarray(c) for c in np.asarray(batch.cuts[0])]

    def run():
        out = [nll(params, seqs[i], c) for i, c in enumerate(cuts)]
        return np.asarray(jnp.stack(out))
    return run


def transformers_per_prefix(config, params, batch: ProbeBatch, device: str):
    """The notebook's method: one forward of `transformers` per cut (no padding, no cache)."""
    import torch

    model = transformers_model(config, params, device)
    ctx = torch.as_tensor(np.asarray(batch.context[0]), dtype=torch.long, device=device)
    probe = torch.as_tensor(np.asarray(batch.probe[0]), dtype=torch.long, device=device)
    targets = torch.as_tensor(np.asarray(batch.targets[0]), device=device)
    A = len(probe)

    def run():
        out = []
        with torch.inference_mode():
            for c in np.asarray(batch.cuts[0]).tolist():
                ids = torch.cat([ctx[:c], probe])[None]
                logits = model(input_ids=ids).logits[0, c:c + A - 1].float()  # position c + a - 1 predicts probe[a]
                lp = torch.log_softmax(logits, -1)[torch.arange(A - 1, device=device), probe[1:]]
                out.append(-(lp * targets[1:]).sum() / targets.sum())
        if device == "cuda":
            torch.cuda.synchronize()
        return torch.stack(out).cpu().numpy()
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small")
    ap.add_argument("--question", type=int, default=128)
    ap.add_argument("--trajectory", type=int, default=512)
    ap.add_argument("--probe", type=int, default=16, help="probe tokens (template + answer); all but the first scored")
    ap.add_argument("--cuts", type=int, default=64)
    ap.add_argument("--cut-chunk", type=int, default=16)
    ap.add_argument("--context-chunk", type=int, default=4096)
    ap.add_argument("--impl", default="xla", help="attention_impl of our model (xla, cudnn)")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--no-reference", action="store_true", help="skip transformers")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    base = PRESETS[args.preset]["config"]
    params = init(base, jax.random.key(0))
    batch = make_batch(base, args.question, args.trajectory, args.probe, args.cuts)
    backend = jax.default_backend()
    total = args.question + args.trajectory + args.cuts * args.probe
    result = {"preset": args.preset, "question": args.question, "trajectory": args.trajectory, "probe": args.probe,
              "cuts": args.cuts, "backend": backend, "device": str(jax.devices()[0].device_kind),
              "jax": jax.__version__, "cpu_count": os.cpu_count(), "machine": platform.machine(),
              "params": base.num_params(), "impl": args.impl, "seconds": {}, "compile_s": {}}
    losses = {}
    secs = result["seconds"]

    for method in ("cache", "packed"):
        config = base.replace(attention_impl="xla" if method == "packed" else args.impl)

        def run(config=config, method=method):
            return np.asarray(answer_loss_along_trajectory(params, batch, config=config, method=method,
                                                           cut_chunk=args.cut_chunk,
                                                           context_chunk=args.context_chunk).mean[0])
        t0 = time.perf_counter()
        try:
            losses[method] = run()
        except Exception as err:  # e.g. out of memory for packed at scale: report, go on
            result[f"{method}_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
            print(f"ours[{method}] failed: {result[f'{method}_error']}", flush=True)
            continue
        result["compile_s"][method] = time.perf_counter() - t0
        secs[method] = best_of(run, args.iters)
        print(f"ours[{method}]: {secs[method] * 1e3:.1f} ms (first call incl. compile "
              f"{result['compile_s'][method]:.1f} s)", flush=True)

    tokens = jnp.concatenate([jnp.asarray(batch.context), jnp.tile(jnp.asarray(batch.probe), (1, args.cuts))], 1)
    fwd = jax.jit(lambda p, t: apply(p, t, config=base.replace(attention_impl=args.impl)).logits)
    secs["one_forward"] = best_of(lambda: fwd(params, tokens).block_until_ready(), args.iters)
    print(f"one plain forward over {total} tokens: {secs['one_forward'] * 1e3:.1f} ms", flush=True)

    run = ours_per_prefix(base, params, batch)
    losses["ours_per_prefix"] = run()
    secs["ours_per_prefix"] = best_of(run, max(1, args.iters - 1))
    print(f"ours per prefix ({args.cuts} forwards): {secs['ours_per_prefix'] * 1e3:.1f} ms", flush=True)

    if not args.no_reference:
        import torch
        import transformers
        device = "cuda" if backend == "gpu" else "cpu"
        run = transformers_per_prefix(base, params, batch, device)
        losses["transformers_per_prefix"] = run()
        secs["transformers_per_prefix"] = best_of(run, max(1, args.iters - 1))
        result["transformers"] = transformers.__version__
        result["torch"] = torch.__version__
        print(f"transformers per prefix ({args.cuts} forwards): {secs['transformers_per_prefix'] * 1e3:.1f} ms",
              flush=True)

    ref = losses.get("transformers_per_prefix", losses["ours_per_prefix"])
    result["max_abs_diff_vs_reference"] = {k: float(np.abs(v - ref).max()) for k, v in losses.items()}
    result["mean_loss"] = float(ref.mean())
    result["speedup"] = {}
    for method in ("cache", "packed"):
        if method not in secs:
            continue
        for peer in ("ours_per_prefix", "transformers_per_prefix"):
            if peer in secs:
                result["speedup"][f"{method}_vs_{peer}"] = secs[peer] / secs[method]
        result["speedup"][f"{method}_over_one_forward"] = secs[method] / secs["one_forward"]
    for k, v in result["speedup"].items():
        print(f"{k}: {v:.1f}x")
    print("max |loss - reference|:", {k: f"{v:.2e}" for k, v in result["max_abs_diff_vs_reference"].items()})
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
