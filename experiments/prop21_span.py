"""RaML Proposition 2.1, how exact: attending to an extra token t_0 vs the weights W_v' that absorb it,
as t_0 leaves the row span of the context X.

One linear-attention layer (fixed scale s = n, not changed by t_0) with residual + a 2-layer ReLU FFN
with residual, d = 64, dk = 64, hidden 128; context X [n, d] ~ N(0, I), n in {8, 32}; queries
x [512, d] ~ N(0, I). t_0 = sqrt(d) (cos(a) u + sin(a) w), u a random unit vector in the row span of
X, w a random unit vector orthogonal to it, a in [0, pi/2]: the out-of-span fraction
|(I - P) t_0| / |t_0| is sin(a). For every (n, seed, a): the relative error (mean over queries of
|f'(x; X) - f(x; [X; t_0])|, divided by the mean of |f(x; [X; t_0]) - f(x; X)|, the effect of t_0) at
the attention output and at the network output, and the gap between the measured attention error and
its closed form x Wq Wk^T (I - P) t_0^T (t_0 Wv) / s. Also: dk = 16 < n = 32 with the token basis (the
paper's construction) and the key basis (exact whenever any query-independent W_v' is); and softmax
attention (best query-independent W_v' by lstsq over the 512 queries; Dherin et al.'s rank-1
update for one query).

    python experiments/prop21_span.py --out experiments/results/prop21_span.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import jax  # noqa: E402

from metareason.studies.prop21 import init_params, prop21_check, softmax_check  # noqa: E402

KEYS = ("span_residual", "key_residual", "attn_rel_mean", "out_rel_mean", "out_norm_rel_max", "pred_gap_rel")


def draw(seed: int, n: int, d: int, dk: int, hidden: int, m: int):
    params = init_params(jax.random.PRNGKey(seed), d, dk, hidden)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    q = rng.standard_normal((m, d)).astype(np.float32)
    _, s, vt = np.linalg.svd(X.astype(np.float64), full_matrices=False)
    basis = vt[s > s.max() * 1e-10]                               # orthonormal rows spanning row(X)
    u = rng.standard_normal(len(basis)) @ basis
    w = rng.standard_normal(d)
    w -= basis.T @ (basis @ w)
    return params, X, q, u / np.linalg.norm(u), w / np.linalg.norm(w)


def sweep(n: int, d: int, dk: int, hidden: int, m: int, seeds: int, angles: np.ndarray, basis: str) -> dict:
    rows = {k: [] for k in KEYS}
    for seed in range(seeds):
        params, X, q, u, w = draw(seed, n, d, dk, hidden, m)
        per = {k: [] for k in KEYS}
        for a in angles:
            t0 = (np.sqrt(d) * (np.cos(a) * u + np.sin(a) * w)).astype(np.float32)
            r = prop21_check(params, X, t0, q, basis=basis, scale=float(n))
            r["pred_gap_rel"] = r["pred_gap_max"] / r["attn_effect_mean"]
            for k in KEYS:
                per[k].append(r[k])
        for k in KEYS:
            rows[k].append(per[k])
    return {"n": n, "d": d, "dk": dk, "basis": basis, "scale": float(n), **rows}


def softmax_summary(n: int, d: int, hidden: int, m: int, seeds: int) -> dict:
    out = {"n": n, "d": d, "dk": d, "queries": m, "lstsq_attn_rel_mean": [], "lstsq_out_rel_max": [],
           "rank1_out_rel_own": [], "rank1_attn_rel_others_mean": []}
    for seed in range(seeds):
        params, X, q, _, _ = draw(seed, n, d, d, hidden, m)
        t0 = np.random.default_rng(100 + seed).standard_normal(d).astype(np.float32)
        r = softmax_check(params, X, t0, q)
        for k in list(out)[4:]:
            out[k].append(r[k])
    return out


def plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frac = np.sin(np.array(res["angles"]))
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.3))
    for i, s in enumerate(res["sweeps"]):
        lab = f"n={s['n']}, dk={s['dk']}, {s['basis']} basis"
        c = f"C{i}"
        o = np.array(s["out_rel_mean"])
        a.plot(frac, o.mean(0), "o-", color=c, ms=3, label=f"{lab}: network output")
        a.fill_between(frac, o.min(0), o.max(0), color=c, alpha=0.15)
        a.plot(frac, np.array(s["attn_rel_mean"]).mean(0), "--", color=c, lw=1, label=f"{lab}: attention output")
        b.semilogy(frac, np.maximum(np.array(s["out_norm_rel_max"]).max(0), 1e-9), "o-", color=c, ms=3, label=lab)
    a.plot([0, 1], [0, 1], ":", color="gray", lw=1, label="y = out-of-span fraction")
    a.set_xlabel("out-of-span fraction |(I - P) t0| / |t0|")
    a.set_ylabel("mean |f'(x; X) - f(x; [X; t0])| / mean |effect of t0|")
    a.set_title(f"W_v' absorbing t0 (d={res['config']['d']}, {res['config']['seeds']} seeds: mean, min-max)")
    a.legend(fontsize=7)
    b.set_xlabel("out-of-span fraction |(I - P) t0| / |t0|")
    b.set_ylabel("max_x |out' - out_ext| / mean_x |out_ext| (worst seed)")
    b.set_title("network output error relative to the output (fp32)")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--queries", type=int, default=512)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--angles", type=int, default=13)
    ap.add_argument("--out", type=Path, default=Path("runs/experiments/prop21_span.json"))
    args = ap.parse_args()
    d = args.d
    angles = np.linspace(0.0, np.pi / 2, args.angles)
    t = time.perf_counter()
    runs = [(8, d, "token"), (32, d, "token"), (32, 16, "token"), (32, 16, "key")]
    sweeps = [sweep(n, d, dk, args.hidden, args.queries, args.seeds, angles, b) for n, dk, b in runs]
    soft = [softmax_summary(n, d, args.hidden, args.queries, args.seeds) for n in (8, 32)]
    wall = time.perf_counter() - t
    summary = []
    for s in sweeps:
        o, at, g = (np.array(s[k]) for k in ("out_rel_mean", "attn_rel_mean", "pred_gap_rel"))
        summary.append({"n": s["n"], "dk": s["dk"], "basis": s["basis"],
                        "in_span_out_rel_max": float(o[:, 0].max()),
                        "in_span_out_norm_rel_max": float(np.array(s["out_norm_rel_max"])[:, 0].max()),
                        "orthogonal_attn_rel_mean": float(at[:, -1].mean()),
                        "orthogonal_out_rel_mean": float(o[:, -1].mean()),
                        "out_rel_mean_by_fraction": dict(zip([f"{x:.3f}" for x in np.sin(angles)],
                                                             map(float, o.mean(0)))),
                        "closed_form_gap_rel_max": float(g.max())})
    out = {"what": "RaML Prop. 2.1: linear attention + FFN attending to an extra token t0 vs W_v' = W_v + "
                   "X^+ c (t0 W_v), as t0 leaves the row span of the context",
           "config": {"d": d, "hidden": args.hidden, "queries": args.queries, "seeds": args.seeds,
                      "scale": "fixed s = n (the original context length), the same with t0",
                      "t0": "sqrt(d) (cos a u + sin a w), u unit in row(X), w unit orthogonal"},
           "angles": angles.tolist(), "out_of_span_fraction": np.sin(angles).tolist(),
           "metrics": {"attn_rel_mean / out_rel_mean": "mean_x |f' - f_ext| / mean_x |f_ext - f_base| at the "
                                                       "attention / network output",
                       "out_norm_rel_max": "max_x |out' - out_ext| / mean_x |out_ext|",
                       "pred_gap_rel": "max entry |measured attention error - closed form| / mean_x |attention "
                                       "effect of t0|",
                       "arrays": "[seed][angle]"},
           "summary": summary, "sweeps": sweeps, "softmax": soft,
           "wall_seconds": wall,
           "machine": f"{platform.machine()}, jax {jax.__version__}, {jax.default_backend()}, "
                      f"{os.cpu_count()} CPU cores"}
    for s in summary:
        print(f"n={s['n']:2d} dk={s['dk']:2d} {s['basis']:5s}: in span out rel {s['in_span_out_rel_max']:.1e} "
              f"(/|out| {s['in_span_out_norm_rel_max']:.1e}); orthogonal t0: attn {s['orthogonal_attn_rel_mean']:.2g}, "
              f"out {s['orthogonal_out_rel_mean']:.2g}; closed-form gap {s['closed_form_gap_rel_max']:.1e}")
    for s in soft:
        print(f"softmax n={s['n']}: lstsq Wv' over {s['queries']} queries attn rel "
              f"{np.mean(s['lstsq_attn_rel_mean']):.3f}; rank-1 own query out rel {max(s['rank1_out_rel_own']):.1e}, "
              f"other queries attn rel {np.mean(s['rank1_attn_rel_others_mean']):.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    plot(out, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')} in {wall:.1f} s")


if __name__ == "__main__":
    main()
