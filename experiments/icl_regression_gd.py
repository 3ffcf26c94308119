"""A trained linear self-attention layer against one step of gradient descent (von Oswald et al. 2023,
Fig. 2): d = 10, N = 10, x ~ U[-1, 1]^d, w ~ N(0, I), one single-head LSA layer trained with Adam on
fresh tasks; then, on 10,000 new tasks, the losses of the layer and of the best single GD step, their
mean squared prediction difference and the cosine of their input sensitivities d y_hat / d x_q.

    python experiments/icl_regression_gd.py --steps 15000 --out experiments/results/icl_regression_gd.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import jax  # noqa: E402

from metareason.studies.icl_regression import ICLConfig, train  # noqa: E402


def plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses, gd_losses = res["losses"], res["gd_losses"]
    win = 50
    smooth = np.convolve(losses, np.ones(win) / win, mode="valid")
    steps = np.array([e["step"] for e in res["eval"]])
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(np.arange(1, len(losses) + 1), losses, color="C0", alpha=0.2, lw=0.5, label="LSA, training batch")
    a.plot(np.arange(win, len(losses) + 1), smooth, color="C0", lw=1.2, label=f"LSA, training ({win}-step mean)")
    a.axhline(float(np.mean(gd_losses)), color="k", ls="--", lw=1,
              label=f"one GD step (eta = {res['eta']:.3f}), mean over all training batches")
    a.plot(steps, [e["lsa_loss"] for e in res["eval"]], "o", color="C1", ms=2.5, label="LSA, held-out tasks")
    a.axhline(res["gd_loss"], color="C1", ls=":", lw=1, label="one GD step, held-out tasks")
    a.set_yscale("log")
    a.set_xlabel("training step")
    a.set_ylabel("1/2 MSE of the query")
    a.set_title("loss")
    a.legend(fontsize=8)
    b.plot(steps, [e["pred_diff"] for e in res["eval"]], color="C2", label="mean (y_LSA - y_GD)^2")
    b.plot(steps, [max(1 - e["cosine"], 1e-8) for e in res["eval"]], color="C3",
           label="1 - cos(dy_LSA/dx_q, dy_GD/dx_q)")
    b.set_yscale("log")
    b.set_xlabel("training step")
    b.set_title("trained LSA vs GD (held-out tasks)")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--steps", type=int, default=15000)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--schedule", default="cosine", choices=["constant", "cosine"])
    ap.add_argument("--heads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/experiments/icl_regression_gd.json"))
    args = ap.parse_args()
    cfg = ICLConfig(d=args.d, n=args.n, steps=args.steps, batch=args.batch, lr=args.lr, schedule=args.schedule,
                    heads=args.heads, seed=args.seed, eval_tasks=10000, eval_every=250)
    t0 = time.perf_counter()
    res = train(cfg, progress=True)
    wall = time.perf_counter() - t0
    f = res["final"]
    every = 50
    out = {
        "what": "single-layer LSA trained on linear regression tasks vs one GD step from W = 0 "
                "(von Oswald et al. 2023)",
        "config": dataclasses.asdict(cfg),
        "seed": cfg.seed,
        "final": f,
        "final_note": "on 10,000 new tasks; losses are 1/2 MSE of the query; pred_diff = mean (y_LSA - y_GD)^2; "
                      "cosine = mean over tasks of cos(d y_LSA / d x_q, d y_GD / d x_q); eta line-searched",
        # predicting 0 everywhere: 1/2 E y_q^2 = d/6 for x ~ U[-1, 1]^d, w ~ N(0, I)
        "zero_predictor_loss": cfg.d / 6 if cfg.dist == "uniform" else None,
        "eval_curve": res["eval"],
        "train_loss_mean_per_50_steps": [float(np.mean(res["losses"][i:i + every]))
                                         for i in range(0, len(res["losses"]), every)],
        "paired_last_1000_steps": {
            "what": "mean 1/2 MSE over the last 1000 training batches (2048 tasks each), LSA (before each step) "
                    "and GD on the same tasks",
            "lsa_loss": float(np.mean(res["losses"][-1000:])), "gd_loss": float(np.mean(res["gd_losses"][-1000:]))},
        "gd_loss_all_training_batches": float(np.mean(res["gd_losses"])),
        "train_seconds": res["seconds"],
        "wall_seconds": wall,
        "steps_per_s": cfg.steps / max(res["seconds"], 1e-9),
        "machine": f"{platform.machine()}, jax {jax.__version__}, "
                   f"{jax.default_backend()}, {jax.device_count()} device(s), {os.cpu_count()} CPU cores",
    }
    pair = out["paired_last_1000_steps"]
    print(f"last 1000 training batches (same tasks): LSA {pair['lsa_loss']:.5f}, GD {pair['gd_loss']:.5f}")
    print(f"new tasks: LSA loss {f['lsa_loss']:.4f}, GD loss {f['gd_loss']:.4f} (eta {f['eta']:.3f}; predicting 0: "
          f"{cfg.d / 6:.4f}), pred diff {f['pred_diff']:.2e}, cosine {f['cosine']:.5f} (min {f['cosine_min']:.4f}); "
          f"{cfg.steps} steps in {res['seconds']:.0f} s, wall {wall:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    plot(res, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
