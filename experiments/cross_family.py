"""E9 on the lab: train reasoning on some task families, evaluate within and across families
(PAPER.md; the paper's Fig 7 analogue: math training helps in-domain and cross-domain).

The base model (the "pretrained" stand-in) is SFT-trained on all four families with the "none"
style (answers at once): it knows every family's questions and the answer format, never a
trajectory. From it, SFT on long trajectories of the `--train` families only (default arith and
addition, the "math" analogue). Both models are evaluated on the same test questions of the
trained families (within) and of the other families (across, never seen with trajectories), with
n samples at temperature 1.0; paired differences trained - base per family group.

    python experiments/cross_family.py                 # about 20 minutes on 2 CPU cores
    python experiments/cross_family.py --quick
"""

from __future__ import annotations

import json
import time

from common import arm_metrics, bars, evaluate, machine, open_results, paired, parser, question_file, sft, table

from metareason.tasks.lab import LabConfig
from metareason.train.sft import SFTConfig
from metareason.train.state import OptimizerConfig

CLAIM = ("Training on math trajectories improves in-domain (AIME24, LiveMathBench-Hard) and cross-domain "
         "(GPQA-Diamond, LiveCodeBench) results over the base model")
FAMILIES = ("arith", "addition", "linear", "pointer")


def main(argv=None):
    ap = parser(__doc__, "cross_family", questions=50)
    ap.add_argument("--train", nargs="+", default=["arith", "addition"])
    ap.add_argument("--base-steps", type=int, default=400)
    ap.add_argument("--sft-steps", type=int, default=1000)
    a = ap.parse_args(argv)
    if a.quick:
        a.base_steps, a.sft_steps, a.questions = 40, 40, 8
    t0 = time.perf_counter()
    across = [f for f in FAMILIES if f not in a.train]
    opts = dict(model=a.model, batch_size=8, seq_len=256, optimizer=OptimizerConfig(lr=3e-3), checkpoint_every=200,
                seed=a.seed, final_eval=False)
    all_lab = LabConfig(families=FAMILIES, difficulty=(1, 2), style="none", train_size=1000,
                        eval_size=max(a.questions, 50), seed=a.seed)
    base = sft(SFTConfig(out=a.work / "base", lab=all_lab, steps=a.base_steps, **opts), "base (all families, none)")
    trained_lab = LabConfig(families=tuple(a.train), difficulty=(1, 2), style="long", train_size=2000,
                            eval_size=max(a.questions, 50), seed=a.seed)
    trained = sft(SFTConfig(out=a.work / "trained", init=str(base), lab=trained_lab, steps=a.sft_steps, **opts),
                  f"sft long on {'+'.join(a.train)}")
    sets = {"within": question_file(all_lab, "test", a.work / "within.jsonl", limit=a.questions, families=a.train),
            "across": question_file(all_lab, "test", a.work / "across.jsonl", limit=a.questions, families=across)}
    rows = {(m, s): evaluate(run, q, a.work / "eval" / f"{m}-{s}", n=a.n, k=(1, a.k), max_new_tokens=320,
                             seed=a.seed)
            for m, run in (("base", base), ("trained", trained)) for s, q in sets.items()}
    res = {f"{m} / {s}": arm_metrics(r, (1, a.k)) for (m, s), r in rows.items()}
    fams = {}
    for (m, s), r in rows.items():
        for fam in sorted({x["family"] for x in r}):
            fams[f"{m} / {fam}"] = arm_metrics([x for x in r if x["family"] == fam], (1, a.k))
    pairs = {s: {met: paired(rows[("trained", s)], rows[("base", s)], met.split("@")[0], int(met.split("@")[1]))
                 for met in ("pass@1", f"pass@{a.k}", f"mg-pass@{a.k}")} for s in sets}
    open_results(a)
    metrics = ["pass@1", f"pass@{a.k}", f"mg-pass@{a.k}"]
    bars(res, metrics, a.out / "cross_family.png", f"lab E9: SFT long on {'+'.join(a.train)}; within vs across "
         f"({'+'.join(across)})")
    summary = {"claim": CLAIM, "groups": res, "per_family": fams, "paired_trained_minus_base": pairs,
               "settings": vars(a) | {"work": str(a.work), "out": str(a.out)}, "machine": machine(),
               "seconds": round(time.perf_counter() - t0)}
    (a.out / "results.json").write_text(json.dumps(summary, indent=2, default=str))
    print(table(res, metrics))
    print(table(fams, metrics))
    for s, d in pairs.items():
        print(s, {m: f"{100 * v['mean']:+.1f} [{100 * v['low']:+.1f}, {100 * v['high']:+.1f}]" for m, v in d.items()})


if __name__ == "__main__":
    main()
