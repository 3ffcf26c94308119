"""MAML meta-steps per second on the sinusoid benchmark: metareason.inner (JAX, jit) vs TorchOpt's
functional API (PyTorch), same network (1-40-40-1 ReLU), same batch (25 tasks x K=10, one inner SGD
step 0.01, Adam 1e-3 outer, second order), same machine, side by side in one run.

    python benchmarks/maml.py --steps 300 --out benchmarks/results/maml_cpu2.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from metareason.inner import make_meta_step  # noqa: E402
from metareason.studies.sinusoid import init_mlp, mse, sample_tasks  # noqa: E402

T, K, INNER_LR, OUTER_LR = 25, 10, 0.01, 1e-3


def batches(n):
    """The same task batches for both sides (numpy)."""
    out = []
    for i in range(n):
        (xs, ys), (xq, yq) = sample_tasks(jax.random.key(i), T, K)
        out.append(tuple(np.asarray(a) for a in (xs, ys, xq, yq)))
    return out


def ours(data, params0):
    outer = optax.adam(OUTER_LR)
    step = make_meta_step(mse, optax.sgd(INNER_LR), outer, steps=1)
    params, state = params0, outer.init(params0)
    xs, ys, xq, yq = data[0]
    params, state, m = step(params, state, (xs, ys), (xq, yq))  # compile
    jax.block_until_ready(params)
    t0 = time.perf_counter()
    for xs, ys, xq, yq in data:
        params, state, m = step(params, state, (xs, ys), (xq, yq))
    jax.block_until_ready(params)
    return len(data) / (time.perf_counter() - t0), float(m["loss"])


def torchopt_maml(data, params0):
    import torch
    import torchopt

    params = tuple(torch.tensor(np.asarray(x), requires_grad=True) for layer in params0 for x in (layer["w"], layer["b"]))

    def net(p, x):
        for i in range(0, len(p), 2):
            x = x @ p[i] + p[i + 1]
            if i < len(p) - 2:
                x = torch.relu(x)
        return x

    inner = torchopt.sgd(lr=INNER_LR)
    outer = torchopt.adam(lr=OUTER_LR)
    outer_state = outer.init(params)

    def step(params, outer_state, xs, ys, xq, yq):
        total = 0.0
        for t in range(T):
            inner_state = inner.init(params)
            loss = ((net(params, xs[t]) - ys[t]) ** 2).mean()
            grads = torch.autograd.grad(loss, params, create_graph=True)
            updates, inner_state = inner.update(grads, inner_state, inplace=False)
            adapted = torchopt.apply_updates(params, updates, inplace=False)
            total = total + ((net(adapted, xq[t]) - yq[t]) ** 2).mean()
        meta = total / T
        grads = torch.autograd.grad(meta, params)
        updates, outer_state = outer.update(grads, outer_state, inplace=False)
        new = tuple(p.detach() + u for p, u in zip(params, updates))
        return tuple(p.requires_grad_() for p in new), outer_state, float(meta.detach())

    tensors = [tuple(torch.from_numpy(a) for a in b) for b in data]
    params, outer_state, _ = step(params, outer_state, *tensors[0])
    t0 = time.perf_counter()
    for b in tensors:
        params, outer_state, loss = step(params, outer_state, *b)
    return len(data) / (time.perf_counter() - t0), loss


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    import torch
    import torchopt

    data = batches(args.steps)
    params0 = init_mlp(jax.random.key(0))
    ours_sps, ours_loss = ours(data, params0)
    ref_sps, ref_loss = torchopt_maml(data, params0)
    result = {"machine": platform.machine(), "cpu_count": os.cpu_count(), "jax": jax.__version__,
              "torch": torch.__version__, "torchopt": torchopt.__version__, "torch_threads": torch.get_num_threads(),
              "steps": args.steps, "ours_meta_steps_per_s": ours_sps, "torchopt_meta_steps_per_s": ref_sps,
              "ratio": ours_sps / ref_sps, "final_meta_loss": {"ours": ours_loss, "torchopt": ref_loss}}
    print(f"ours {ours_sps:.0f} meta-steps/s, TorchOpt {ref_sps:.1f} meta-steps/s -> {ours_sps / ref_sps:.1f}x; "
          f"meta-loss after {args.steps} steps: ours {ours_loss:.4f}, TorchOpt {ref_loss:.4f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
