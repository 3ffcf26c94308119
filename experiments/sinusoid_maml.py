"""MAML on sinusoid regression (Finn et al. 2017, 5.1): meta-train with `metareason.inner`, then the
query MSE on 600 new tasks after 1 and 10 inner steps with K = 10 (published: about 0.4 after one step).

    python experiments/sinusoid_maml.py --iterations 70000 --out experiments/results/sinusoid_maml.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import jax  # noqa: E402

from metareason.studies.sinusoid import SinusoidConfig, train  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=70000)
    ap.add_argument("--mode", default="second_order", choices=["second_order", "first_order"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    cfg = SinusoidConfig(iterations=args.iterations, mode=args.mode, seed=args.seed)
    res = train(cfg, progress=True)
    out = {"config": cfg.__dict__, "eval": {str(k): v for k, v in res["eval"].items()},
           "meta_steps_per_s": res["steps_per_s"], "train_seconds": res["seconds"], "losses": res["losses"],
           "machine": f"{platform.machine()}, jax {jax.__version__}, {jax.default_backend()}"}
    e1 = res["eval"][1]
    print(f"query MSE over {cfg.test_tasks} new tasks: before adapting {e1['before']:.3f}, after 1 step "
          f"{e1['after']:.3f} +- {e1['after_sem']:.3f}, after 10 steps {res['eval'][10]['after']:.3f} "
          f"(published: about 0.4 after 1 step); {res['steps_per_s']:.0f} meta-steps/s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
