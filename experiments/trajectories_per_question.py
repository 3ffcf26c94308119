"""E10 on the lab: SFT with k = 1, 2, 4, 8, 16, 32 distinct trajectories per question at equal
training frequency per question (PAPER.md; the paper's Fig 8 analogue).

Every question contributes the same number of examples per epoch (`slots_per_question`, 32); with
k distinct long trajectories, its slots cycle through them (`metareason.train.trajectories`), so
every arm sees the same questions equally often for the same number of optimizer steps; only the
size of each question's "support set" changes. Long trajectories differ in their planted slips,
checks and connectives (18 to 27 distinct texts of 32 draws on arith). Difficulty 1 (three-number
chains), so that a small model learns within the budget. Evaluated on the same test questions with
n samples at temperature 1.0.

    python experiments/trajectories_per_question.py             # about 25 minutes on 2 CPU cores
    python experiments/trajectories_per_question.py --quick
"""

from __future__ import annotations

import json
import time

from common import arm_metrics, evaluate, machine, open_results, paired, parser, question_file, save_figure, sft, table

from metareason.tasks.lab import LabConfig
from metareason.train.sft import SFTConfig
from metareason.train.state import OptimizerConfig

CLAIM = ("More trajectories per question (a larger support set) at equal training frequency -> better "
         "(the paper: 1 to 32 distinct R1 trajectories per question, accuracy rises with k)")


def main(argv=None):
    ap = parser(__doc__, "trajectories_per_question")
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    ap.add_argument("--train-questions", type=int, default=200)
    ap.add_argument("--steps", type=int, default=600)
    a = ap.parse_args(argv)
    if a.quick:
        a.ks, a.steps, a.questions, a.train_questions = [1, 4], 40, 16, 40
    t0 = time.perf_counter()
    slots = max(a.ks)
    lab = LabConfig(families=("arith",), difficulty=(1,), style="long", train_size=a.train_questions,
                    eval_size=max(a.questions, 50), trajectories_per_question=slots, seed=a.seed)
    runs = {f"k={k}": sft(SFTConfig(out=a.work / f"k{k}", model=a.model, lab=lab, k_trajectories=k,
                                    slots_per_question=slots, steps=a.steps, batch_size=8, seq_len=256,
                                    optimizer=OptimizerConfig(lr=3e-3), checkpoint_every=250, seed=a.seed,
                                    final_eval=False), f"k={k}")
            for k in a.ks}
    questions = question_file(lab, "test", a.work / "questions.jsonl", limit=a.questions)
    rows = {name: evaluate(run, questions, a.work / "eval" / name, n=a.n, k=(1, a.k), max_new_tokens=320,
                           seed=a.seed) for name, run in runs.items()}
    res = {name: arm_metrics(r, (1, a.k)) for name, r in rows.items()}
    first, last = f"k={a.ks[0]}", f"k={a.ks[-1]}"
    pairs = {f"{last} - {first}": {m: paired(rows[last], rows[first], m.split("@")[0], int(m.split("@")[1]))
                                   for m in ("pass@1", f"pass@{a.k}", f"mg-pass@{a.k}")}}
    from scipy.stats import spearmanr
    trend = {m: float(spearmanr(a.ks, [res[f"k={k}"][m]["mean"] for k in a.ks]).statistic)
             for m in ("pass@1", f"pass@{a.k}", f"mg-pass@{a.k}")}
    open_results(a)
    _figure(res, a.ks, a.k, a.out / "trajectories_per_question.png", a)
    summary = {"claim": CLAIM, "arms": res, "paired": pairs, "spearman_k_vs_metric": trend,
               "settings": vars(a) | {"work": str(a.work), "out": str(a.out)}, "machine": machine(),
               "seconds": round(time.perf_counter() - t0)}
    (a.out / "results.json").write_text(json.dumps(summary, indent=2, default=str))
    print(table(res, ["pass@1", f"pass@{a.k}", f"mg-pass@{a.k}"]))
    print("paired", pairs, "spearman", trend)


def _figure(res, ks, k, path, a):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for m in ("pass@1", f"pass@{k}", f"mg-pass@{k}"):
        mean = [100 * res[f"k={x}"][m]["mean"] for x in ks]
        lo = [100 * res[f"k={x}"][m]["low"] for x in ks]
        hi = [100 * res[f"k={x}"][m]["high"] for x in ks]
        ax.plot(ks, mean, "o-", label=m)
        ax.fill_between(ks, lo, hi, alpha=0.2)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(x) for x in ks])
    ax.set_xlabel("distinct trajectories per question (equal training frequency)")
    ax.set_ylabel("% (95% CI over questions)")
    ax.set_title(f"lab E10: {a.model}, {a.steps} SFT steps, {a.train_questions} questions", fontsize=9)
    save_figure(fig, ax, path)


if __name__ == "__main__":
    main()
