"""E6 + E7 on the lab: SFT on short vs long trajectories vs GRPO from the base model, and SFT
(long) then GRPO (PAPER.md; the paper's Tables 2 and 3).

The base model stands in for a pretrained model that was never trained on the task's reasoning
trajectories: it is SFT-trained on the arith questions with the "none" style (the answer at once,
after an empty thinking block), so it knows the questions and the answer format and has non-trivial
accuracy, but has never seen a trajectory. From it, with the same questions:

    sft-short       SFT on short trajectories   (the paper: Qwen2.5-Math-72B-Instruct's trajectories)
    sft-long        SFT on long trajectories    (the paper: R1-Distill-Qwen-14B's, with reflection)
    grpo            GRPO from the base (zero-RL); the model writes its own thinking
    sft-long+grpo   GRPO from sft-long (E7)

Every arm is evaluated on the same test questions with n samples at temperature 1.0: Pass@1,
Pass@k and mG-Pass@k with 95% t intervals over questions, and paired differences.

    python experiments/sft_vs_grpo.py                 # about 25 minutes on 2 CPU cores
    python experiments/sft_vs_grpo.py --quick         # a smoke run (minutes)
"""

from __future__ import annotations

import json
import time

import numpy as np
from common import (arm_metrics, bars, ci, evaluate, grpo, machine, open_results, paired, parser, question_file,
                    save_figure, sft, table)

from metareason.stats import paired_difference
from metareason.tasks.lab import LabConfig
from metareason.train.grpo import GRPOLossConfig
from metareason.train.rl import GRPOConfig
from metareason.train.sft import SFTConfig
from metareason.train.state import OptimizerConfig

CLAIMS = {
    "E6": "SFT on long trajectories is best; GRPO from the base beats SFT on short trajectories in Pass@8 "
          "but has the lowest mG-Pass@8 (AIME24 Pass@8 / mG-Pass@8: short 20.34 / 7.43, long 36.69 / 10.29, "
          "GRPO 27.37 / 4.08)",
    "E7": "GRPO after SFT raises both (AIME24 Pass@8 35.87 -> up 31%, mG-Pass@8 11.23 -> up 175% over the "
          "paper's SFT cold start)",
}


def main(argv=None):
    ap = parser(__doc__, "sft_vs_grpo")
    ap.add_argument("--base-steps", type=int, default=400)
    ap.add_argument("--sft-steps", type=int, default=1000)
    ap.add_argument("--grpo-steps", type=int, default=40)
    ap.add_argument("--grpo-pool", type=int, default=128, help="training questions GRPO draws from")
    ap.add_argument("--grpo-lr", type=float, default=1e-4)
    a = ap.parse_args(argv)
    if a.quick:
        a.base_steps, a.sft_steps, a.grpo_steps, a.questions = 60, 60, 4, 16
    t0 = time.perf_counter()
    lab = dict(families=("arith",), difficulty=(1, 2), train_size=2000, eval_size=max(a.questions, 50), seed=a.seed)
    common_sft = dict(model=a.model, batch_size=8, seq_len=256, optimizer=OptimizerConfig(lr=3e-3),
                      eval_questions=50, checkpoint_every=200, seed=a.seed, final_eval=False)
    base = sft(SFTConfig(out=a.work / "base", steps=a.base_steps, lab=LabConfig(style="none", **lab), **common_sft),
               "base (none style)")
    arms = {"base": base}
    for style in ("short", "long"):
        arms[f"sft-{style}"] = sft(SFTConfig(out=a.work / f"sft-{style}", init=str(base), steps=a.sft_steps,
                                             lab=LabConfig(style=style, **lab), **common_sft), f"sft-{style}")
    pool = LabConfig(style="long", **{**lab, "train_size": a.grpo_pool})  # the first grpo_pool SFT questions
    rl = dict(lab=pool, steps=a.grpo_steps, questions_per_step=8, group_size=8, max_new_tokens=256,
              epochs_per_batch=2, minibatches=2, loss=GRPOLossConfig(kl_coef=0.001, entropy_coef=0.0),
              optimizer=OptimizerConfig(lr=a.grpo_lr, warmup_steps=3, final_lr_fraction=1.0, weight_decay=0.0),
              checkpoint_every=20, final_eval=False, seed=a.seed)
    arms["grpo"] = grpo(GRPOConfig(out=a.work / "grpo", init=str(base), **rl), "grpo from base")
    arms["sft-long+grpo"] = grpo(GRPOConfig(out=a.work / "sft-long-grpo", init=str(arms["sft-long"]), **rl),
                                 "grpo from sft-long")

    questions = question_file(LabConfig(style="long", **lab), "test", a.work / "questions.jsonl", limit=a.questions)
    rows = {name: evaluate(run, questions, a.work / "eval" / name, n=a.n, k=(1, a.k), max_new_tokens=320,
                           seed=a.seed) for name, run in arms.items()}
    # the reward GRPO optimises, on its own training questions, before and after (n samples each)
    pool_q = question_file(pool, "train", a.work / "pool.jsonl")
    train_reward = {}
    for before, after in (("base", "grpo"), ("sft-long", "sft-long+grpo")):
        r0, r1 = (evaluate(arms[x], pool_q, a.work / "eval-pool" / x, n=a.n, k=(1,), max_new_tokens=320,
                           seed=a.seed) for x in (before, after))
        train_reward[f"{after} vs {before}"] = {
            "before": ci([np.mean(r["rewards"]) for r in r0]), "after": ci([np.mean(r["rewards"]) for r in r1]),
            "difference": paired_difference([np.mean(r["rewards"]) for r in r1], [np.mean(r["rewards"]) for r in r0],
                                            nan_policy="omit").as_dict(),
            "pass@1 difference": paired(r1, r0, "pass", 1)}
    ks = (1, a.k)
    res = {name: arm_metrics(r, ks) for name, r in rows.items()}
    for name, run in arms.items():
        if name.endswith("grpo") or name == "grpo":
            log = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            train = [r for r in log if r["split"] == "train"]
            res[name]["grpo_reward_first_last"] = [train[0]["reward"], train[-1]["reward"]]
            res[name]["grpo_reward_curve"] = [r["reward"] for r in train]
    pairs = {f"{x} - {y}": {m: paired(rows[x], rows[y], m.split("@")[0], int(m.split("@")[1]))
                            for m in (f"pass@{a.k}", f"mg-pass@{a.k}", "pass@1")}
             for x, y in (("sft-long", "sft-short"), ("sft-long", "grpo"), ("grpo", "sft-short"),
                          ("sft-long+grpo", "sft-long"), ("grpo", "base"))}
    open_results(a)
    metrics = ["pass@1", f"pass@{a.k}", f"mg-pass@{a.k}"]
    bars(res, metrics, a.out / "sft_vs_grpo.png", f"lab E6/E7: {a.model}, {a.questions} test questions, "
         f"n={a.n} samples, T=1")
    _reward_figure(res, a.out / "grpo_reward.png")
    summary = {"claims": CLAIMS, "arms": res, "paired": pairs, "grpo_training_reward": train_reward, "settings": vars(a) | {"work": str(a.work),
               "out": str(a.out)}, "machine": machine(), "seconds": round(time.perf_counter() - t0)}
    (a.out / "results.json").write_text(json.dumps(summary, indent=2, default=str))
    print(table(res, metrics))
    for name, d in train_reward.items():
        print("training questions:", name, {k: f"{v['mean']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}]"
                                            for k, v in d.items()})
    for name, d in pairs.items():
        print(name, {m: f"{100 * v['mean']:+.1f} [{100 * v['low']:+.1f}, {100 * v['high']:+.1f}]" for m, v in d.items()})


def _reward_figure(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, r in res.items():
        if "grpo_reward_curve" in r:
            ax.plot(range(1, len(r["grpo_reward_curve"]) + 1), r["grpo_reward_curve"], label=name)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("mean reward of the rollouts")
    save_figure(fig, ax, path)


if __name__ == "__main__":
    main()
