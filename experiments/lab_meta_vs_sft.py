"""Explicit meta-learning (MAML, PAPER.md Eq 8) vs SFT of a lab model on the same arith questions.

Both arms: the same preset, init, question order, outer optimizer (AdamW, warm-up + cosine) and
number of outer steps of `questions_per_step` questions. Meta: one (or more) SGD steps on each
question's trajectory NLL, then the answer NLL with the question only in context, differentiated
through the inner step (second order by default). SFT: the usual loss on question + trajectory +
answer. Evaluated on held-out test questions: the answer NLL (i) with the trajectory in context,
(ii) after the inner steps on the reference trajectory, question only in context, (iii) question
only, no adaptation; plus greedy accuracy (each model writes its own trajectory).

    python experiments/lab_meta_vs_sft.py                      # about 10 minutes on 2 CPU cores; runs/experiments/
    python experiments/lab_meta_vs_sft.py --out experiments/results/lab_meta_vs_sft.json   # the published results
    python experiments/lab_meta_vs_sft.py --mode first_order --steps 400 --out /tmp/fo.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import jax  # noqa: E402
import numpy as np  # noqa: E402

from metareason.studies.lab_eval import CONDITIONS, evaluate_lab, lab_table  # noqa: E402
from metareason.studies.lab_meta import LabMetaConfig, meta_train_lab, sft_train_lab  # noqa: E402
from metareason.studies.lab_tasks import build_tasks  # noqa: E402
from metareason.tasks.lab import LabConfig, lab_records  # noqa: E402
from metareason.train.evaluation import lab_accuracy  # noqa: E402
from metareason.train.presets import model_preset  # noqa: E402
from metareason.train.state import OptimizerConfig  # noqa: E402

LABELS = {"in_context": "(i) trajectory in context", "adapted": "(ii) adapted on trajectory,\nquestion only",
          "question_only": "(iii) question only,\nno adaptation"}


def first_per_family(records, n: int) -> list[dict]:
    """The first n records of each family."""
    seen: dict[str, int] = {}
    out = []
    for r in records:
        seen[r["family"]] = seen.get(r["family"], 0) + 1
        if seen[r["family"]] <= n:
            out.append(r)
    return out


def without_final_result(record: dict) -> dict:
    """The record with its trajectory's final number (the answer, which every lab trajectory ends
    with) removed: '... ; 138 - 92 = 46' -> '... ; 138 - 92 ='."""
    words = record["trajectory"].split()
    if len(words) < 2 or words[-1] != record["answer"]:
        raise ValueError(f"trajectory of {record['question']!r} does not end with its answer")
    return dict(record, trajectory=" ".join(words[:-1]))


def fmt(c: dict, digits: int = 3) -> str:
    return f"{c['mean']:.{digits}f} [{c['low']:.{digits}f}, {c['high']:.{digits}f}]"


def markdown(table: dict) -> str:
    rows = ["| | meta (MAML) | SFT | meta - SFT (paired) |", "|---|---|---|---|"]
    for c in CONDITIONS:
        rows.append(f"| answer NLL {c} | {fmt(table['loss']['meta'][c])} | {fmt(table['loss']['sft'][c])} | "
                    f"{fmt(table['paired_difference'][c])} |")
    for c in CONDITIONS:
        e = table["exact"]
        rows.append(f"| exact answer {c} | {fmt(e['meta'][c], 2)} | {fmt(e['sft'][c], 2)} | |")
    if "as_used" in table:
        rows.append(f"| as used: {table['as_used']['arms']} | | | {fmt(table['as_used'])} |")
    if "without_final_result" in table:
        w = table["without_final_result"]
        rows.append(f"| answer NLL adapted, trajectory minus its final number | {fmt(w['meta']['adapted'])} | "
                    f"{fmt(w['sft']['adapted'])} | |")
    g = table["greedy_accuracy"]
    rows.append(f"| greedy accuracy (own trajectory) | {fmt(g['meta'], 2)} | {fmt(g['sft'], 2)} | |")
    rows.append(f"| format rate (own trajectory) | {g['meta']['format_rate']:.2f} | {g['sft']['format_rate']:.2f} | |")
    return "\n".join(rows)


def figure(out: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8))
    ax = axes[0]
    colors = {"in_context": "tab:blue", "adapted": "tab:red", "question_only": "tab:gray"}
    for arm, style in (("meta", "-"), ("sft", "--")):
        ev = out["arms"][arm]["validation_curve"]
        for c in CONDITIONS:
            ax.plot([e["step"] for e in ev], [e[c] for e in ev], style, color=colors[c], marker="o", ms=3,
                    label=f"{arm}: {c}")
    ax.set_yscale("log")
    ax.set_xlabel("outer step")
    ax.set_ylabel(f"answer NLL ({out['setup']['validation_questions']} validation questions)")
    ax.set_title("during training (solid: meta, dashed: SFT)")
    ax.legend(fontsize=7, ncol=2)

    ax = axes[1]
    x = np.arange(len(CONDITIONS) + 1)
    for j, (arm, color) in enumerate((("meta", "tab:purple"), ("sft", "tab:green"))):
        cells = [out["table"]["loss"][arm][c] for c in CONDITIONS]
        cells.append(out["table"]["without_final_result"][arm]["adapted"])
        means = np.array([c["mean"] for c in cells])
        err = np.clip([[c["mean"] - c["low"] for c in cells], [c["high"] - c["mean"] for c in cells]], 0, None)
        ax.bar(x + (j - 0.5) * 0.38, means, 0.38, yerr=err, capsize=3, color=color, label=arm)
    ax.set_xticks(x, [LABELS[c] for c in CONDITIONS] + ["(ii') adapted on trajectory\nminus its final number"],
                  fontsize=7)
    ax.set_ylabel(f"answer NLL, {out['setup']['test_questions']} test questions (95% CI)")
    ax.set_title("held-out answer loss")
    ax.legend()

    ax = axes[2]
    names = [*(f"exact {c}" for c in CONDITIONS), "greedy (own\ntrajectory)"]
    for j, (arm, color) in enumerate((("meta", "tab:purple"), ("sft", "tab:green"))):
        cells = [out["table"]["exact"][arm][c] for c in CONDITIONS] + [out["table"]["greedy_accuracy"][arm]]
        means = np.array([c["mean"] for c in cells])
        err = np.clip([[c["mean"] - c["low"] for c in cells], [c["high"] - c["mean"] for c in cells]], 0, None)
        ax.bar(np.arange(4) + (j - 0.5) * 0.38, means, 0.38, yerr=err, capsize=3, color=color, label=arm)
    ax.set_xticks(np.arange(4), [n.replace("exact ", "exact\n") for n in names], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (95% Wilson CI)")
    ax.set_title("answers right")
    ax.legend()
    fig.suptitle(f"MAML vs SFT on lab {'+'.join(out['setup']['families'])} ({out['setup']['style']} trajectories), "
                 f"{out['setup']['model']}, {out['config']['steps']} steps x {out['config']['questions_per_step']} "
                 f"questions")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="lab-tiny")
    ap.add_argument("--families", nargs="+", default=["arith"])
    ap.add_argument("--style", default="short")
    ap.add_argument("--difficulty", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--train-questions", type=int, default=4000)
    ap.add_argument("--test-questions", type=int, default=256, help="per family")
    ap.add_argument("--validation-questions", type=int, default=64, help="per family, for the training curves")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--questions-per-step", type=int, default=16)
    ap.add_argument("--inner-steps", type=int, default=1)
    ap.add_argument("--inner-lr", type=float, default=0.3)
    ap.add_argument("--mode", default="second_order", choices=["second_order", "first_order"])
    ap.add_argument("--lr", type=float, default=3e-3, help="outer (AdamW) peak learning rate, both arms")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/experiments/lab_meta_vs_sft.json"))
    args = ap.parse_args()

    t_start = time.perf_counter()
    lab = LabConfig(families=tuple(args.families), difficulty=tuple(args.difficulty), style=args.style,
                    train_size=args.train_questions, eval_size=max(args.test_questions, args.validation_questions),
                    seed=args.seed)
    train = build_tasks(lab_records(lab, "train"))
    val_records = first_per_family(lab_records(lab, "validation"), args.validation_questions)
    test_records = first_per_family(lab_records(lab, "test"), args.test_questions)
    val, test = build_tasks(val_records), build_tasks(test_records)
    # control: does adaptation use the trajectory's reasoning, or only the answer it ends with?
    test_cut = build_tasks([without_final_result(r) for r in test_records])
    cfg = LabMetaConfig(model=args.model, steps=args.steps, questions_per_step=args.questions_per_step,
                        inner_steps=args.inner_steps, inner_lr=args.inner_lr, mode=args.mode,
                        optimizer=OptimizerConfig(lr=args.lr, warmup_steps=min(50, args.steps // 10)),
                        seed=args.seed, log_every=50, eval_every=args.eval_every, eval_chunk=64)
    config = model_preset(args.model)
    print(f"{train.size} training questions, lengths (support, query, full) {train.lengths}; "
          f"{test.size} test questions; {config.num_params():,} parameters", flush=True)

    out: dict = {"setup": {"model": args.model, "params": config.num_params(), "families": args.families,
                           "style": args.style, "difficulty": args.difficulty, "train_questions": train.size,
                           "validation_questions": val.size, "test_questions": test.size,
                           "lengths": list(train.lengths)},
                 "config": cfg.to_json(), "arms": {}}
    results, accuracy, cut = {}, {}, {}
    for arm, fn in (("meta", meta_train_lab), ("sft", sft_train_lab)):
        res = fn(cfg, train, eval_tasks=val)
        t0 = time.perf_counter()
        results[arm] = evaluate_lab(res.params, test, config=config, inner_lr=cfg.inner_lr,
                                    inner_steps=cfg.inner_steps, chunk=64, progress=True)
        cut[arm] = evaluate_lab(res.params, test_cut, config=config, inner_lr=cfg.inner_lr,
                                inner_steps=cfg.inner_steps, chunk=64)
        accuracy[arm] = lab_accuracy(res.params, config, test_records, max_new_tokens=128)
        print(f"{arm}: {res.seconds:.0f} s training ({cfg.steps / res.seconds:.1f} steps/s), "
              f"{time.perf_counter() - t0:.0f} s test evaluation; greedy accuracy {accuracy[arm]['accuracy']:.3f}",
              flush=True)
        out["arms"][arm] = {"train_seconds": res.seconds, "steps_per_s": cfg.steps / res.seconds,
                            "history": res.history, "validation_curve": res.evals,
                            "greedy_samples": accuracy[arm]["samples"],
                            "per_question": {k: np.asarray(v).tolist() for k, v in results[arm].items()},
                            "per_question_without_final_result": {k: np.asarray(v).tolist()
                                                                  for k, v in cut[arm].items()}}
    out["table"] = lab_table(results, accuracy, as_used={"meta": "adapted", "sft": "in_context"})
    cut_table = lab_table(cut)
    out["table"]["without_final_result"] = {
        arm: {"adapted": cut_table["loss"][arm]["adapted"], "in_context": cut_table["loss"][arm]["in_context"],
              "exact_adapted": cut_table["exact"][arm]["adapted"]} for arm in cut}
    out["total_seconds"] = time.perf_counter() - t_start
    out["machine"] = (f"{platform.machine()}, {jax.device_count()} {jax.default_backend()} device(s), "
                      f"jax {jax.__version__}")
    out["command"] = " ".join(["python", "experiments/lab_meta_vs_sft.py", *sys.argv[1:]])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    figure(out, args.out.with_suffix(".png"))
    print(markdown(out["table"]))
    print(f"total {out['total_seconds'] / 60:.1f} min; wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
