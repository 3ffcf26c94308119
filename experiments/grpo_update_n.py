"""E11 on the lab: GRPO with a fixed group of 16 rollouts per question, advantages over all 16,
but only n in {1, 2, 4, 8, 16} randomly chosen rollouts entering the policy loss (the update mask;
PAPER.md, the paper's Fig 9 analogue).

All arms start from the same SFT model (long trajectories), sample the same questions in the same
order with the same keys (so step 1's rollouts are identical across arms), and differ only in the
mask. Reported: the reward curve during training (mean and spread over steps), and Pass@1 /
Pass@k / mG-Pass@k on the same test questions afterwards.

    python experiments/grpo_update_n.py               # about 30 minutes on 2 CPU cores
    python experiments/grpo_update_n.py --quick
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from common import (arm_metrics, evaluate, grpo, machine, open_results, paired, parser, question_file,
                    save_figure, sft, table)

from metareason.tasks.lab import LabConfig
from metareason.train.grpo import GRPOLossConfig
from metareason.train.rl import GRPOConfig
from metareason.train.sft import SFTConfig
from metareason.train.state import OptimizerConfig

CLAIM = ("More rollouts contributing to the update (n of a fixed group of 16) -> better and more stable "
         "training (the paper: n in {1, 2, 4, 8, 16})")


def main(argv=None):
    ap = parser(__doc__, "grpo_update_n")
    ap.add_argument("--init", default="", help="an SFT run to start from (default: train one)")
    ap.add_argument("--sft-steps", type=int, default=1000)
    ap.add_argument("--ns", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--group", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--pool", type=int, default=128, help="training questions GRPO draws from")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--questions-per-step", type=int, default=4)
    a = ap.parse_args(argv)
    if a.quick:
        a.ns, a.steps, a.questions, a.sft_steps, a.group = [1, 4], 3, 16, 40, 4
    t0 = time.perf_counter()
    lab = LabConfig(families=("arith",), difficulty=(1, 2), style="long", train_size=2000,
                    eval_size=max(a.questions, 50), seed=a.seed)
    init = a.init or str(sft(SFTConfig(out=a.work / "sft-long", model=a.model, lab=lab, steps=a.sft_steps,
                                       batch_size=8, seq_len=256, optimizer=OptimizerConfig(lr=3e-3),
                                       checkpoint_every=200, seed=a.seed, final_eval=False), "sft-long"))
    runs = {}
    for n in a.ns:
        runs[f"n={n}"] = grpo(GRPOConfig(
            out=a.work / f"n{n}", init=init, lab=dataclasses.replace(lab, train_size=a.pool), steps=a.steps,
            questions_per_step=a.questions_per_step, group_size=a.group, update_n=n, max_new_tokens=256,
            epochs_per_batch=2, minibatches=2, loss=GRPOLossConfig(kl_coef=0.001),
            optimizer=OptimizerConfig(lr=a.lr, warmup_steps=3, final_lr_fraction=1.0, weight_decay=0.0),
            checkpoint_every=20, final_eval=False, seed=a.seed), f"grpo n={n}")
    curves = {}
    for name, run in runs.items():
        log = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        curves[name] = [r["reward"] for r in log if r["split"] == "train"]
    questions = question_file(lab, "test", a.work / "questions.jsonl", limit=a.questions)
    runs = {"sft (start)": Path(init), **runs}
    rows = {name: evaluate(run, questions, a.work / "eval" / name.split()[0], n=a.n, k=(1, a.k), max_new_tokens=320,
                           seed=a.seed) for name, run in runs.items()}
    res = {name: arm_metrics(r, (1, a.k)) for name, r in rows.items()}
    for name, c in curves.items():
        c = np.asarray(c)
        half = len(c) // 2
        res[name]["reward_first_step"] = float(c[0])
        res[name]["reward_second_half_mean"] = float(c[half:].mean())
        res[name]["reward_second_half_std"] = float(c[half:].std())
        res[name]["reward_curve"] = c.tolist()
    first, last = f"n={a.ns[0]}", f"n={a.ns[-1]}"
    pairs = {f"{last} - {first}": {m: paired(rows[last], rows[first], m.split("@")[0], int(m.split("@")[1]))
                                   for m in ("pass@1", f"pass@{a.k}", f"mg-pass@{a.k}")}}
    open_results(a)
    _figure(curves, a.out / "grpo_update_n.png", a)
    summary = {"claim": CLAIM, "arms": res, "paired": pairs, "settings": vars(a) | {"work": str(a.work),
               "out": str(a.out)}, "machine": machine(), "seconds": round(time.perf_counter() - t0)}
    (a.out / "results.json").write_text(json.dumps(summary, indent=2, default=str))
    print(table(res, ["pass@1", f"pass@{a.k}", f"mg-pass@{a.k}"]))
    for name in curves:
        print(name, "reward first", round(res[name]["reward_first_step"], 3), "second half",
              round(res[name]["reward_second_half_mean"], 3), "+-", round(res[name]["reward_second_half_std"], 3))
    print("paired", pairs)


def _figure(curves, path, a):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for name, c in curves.items():
        c = np.asarray(c)
        smooth = np.convolve(c, np.ones(5) / 5, mode="valid") if len(c) >= 5 else c
        ax.plot(np.arange(len(smooth)) + (len(c) - len(smooth)) // 2 + 1, smooth, label=name)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("mean rollout reward (5-step moving mean)")
    ax.set_title(f"lab E11: group {a.group}, n rollouts in the loss", fontsize=9)
    save_figure(fig, ax, path)


if __name__ == "__main__":
    main()
