"""Shared plumbing of the lab training-paradigm experiments (E6, E7, E9, E10, E11): run an SFT or
GRPO arm (reused when finished, resumed when interrupted), evaluate runs on one fixed question file
with n samples each, paired differences between arms, and bar figures.

Every arm is a normal `metareason train` / `metareason rl` run directory under the experiment's
work directory, so any of them can be inspected, probed (`metareason probe`) or evaluated again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np  # noqa: E402

from metareason.evaluate.run import EvalConfig, run_eval  # noqa: E402
from metareason.reproduce.training import per_question as per_question_metrics  # noqa: E402
from metareason.runs import defaults_json, fingerprint, open_output, run_differences  # noqa: E402
from metareason.stats import mean_interval, paired_difference  # noqa: E402
from metareason.tasks.lab import LabConfig, lab_records  # noqa: E402
from metareason.train.rl import GRPOConfig, train_grpo  # noqa: E402
from metareason.train.sft import SFTConfig, train_sft  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
"""The published results (EXPERIMENTS.md cites them): written only when --out names them."""
OUTPUTS = Path(__file__).resolve().parents[1] / "runs" / "experiments"
"""Where the experiments write by default (git-ignored), so a smoke run cannot overwrite RESULTS."""


def parser(doc: str, name: str, *, questions: int = 100) -> argparse.ArgumentParser:
    """The options every lab experiment shares: --work runs/exp-NAME, --model, --n samples and the
    --k of Pass@k / mG-Pass@k, --questions (test questions), --seed, --quick, --out."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path(f"runs/exp-{name.replace('_', '-')}"),
                    help="where the runs and evaluations go (a rerun reuses finished ones)")
    ap.add_argument("--model", default="lab-fast")
    ap.add_argument("--n", type=int, default=8, help="samples per question (temperature 1)")
    ap.add_argument("--k", type=int, default=8, help="the k of Pass@k and mG-Pass@k")
    ap.add_argument("--questions", type=int, default=questions)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a smoke run (minutes)")
    ap.add_argument("--out", type=Path, default=OUTPUTS / name,
                    help=f"the results folder (default runs/experiments/{name}; the published ones are "
                         f"experiments/results/{name})")
    ap.add_argument("--overwrite", action="store_true", help="move an --out of other settings aside to OUT.old-N")
    ap.set_defaults(experiment=name)
    return ap


def open_results(a: argparse.Namespace) -> Path:
    """Opens the experiment's --out (`metareason.runs.open_output`: its provenance.json holds the
    experiment and every setting but --out / --work / --overwrite; a rerun with other settings is
    refused unless --overwrite moves the old folder aside)."""
    settings = {k: v for k, v in vars(a).items() if k not in ("out", "work", "overwrite", "experiment")}
    name = f"experiments/{a.experiment}"
    return open_output(a.out, fingerprint(name, settings=settings), resume=True, overwrite=a.overwrite,
                       created_by=name)


def machine() -> dict:
    import os
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}


def _run(train, cfg, label: str) -> Path:
    out = Path(cfg.out)
    if (out / "summary.json").exists():
        diff = run_differences(out, cfg.to_json(), defaults_json(type(cfg)))
        if diff:
            raise SystemExit(f"[{label}] {out} holds a finished run of other settings (differs in: "
                             f"{', '.join(diff)}); choose another --work")
        print(f"[{label}] reusing {out}", flush=True)
        return out
    t0 = time.perf_counter()
    train(dataclasses.replace(cfg, resume=True))  # resumes an interrupted run, starts a fresh one
    print(f"[{label}] trained in {time.perf_counter() - t0:.0f} s -> {out}", flush=True)
    return out


def sft(cfg: SFTConfig, label: str) -> Path:
    return _run(train_sft, cfg, label)


def grpo(cfg: GRPOConfig, label: str) -> Path:
    return _run(train_grpo, cfg, label)


def question_file(lab: LabConfig, split: str, path: Path, limit: int = 0, families: Sequence[str] = ()) -> Path:
    """One fixed JSONL set of lab questions that every arm is evaluated on."""
    recs = [r for r in lab_records(lab, split) if not families or r["family"] in families]
    by_family: dict[str, int] = {}
    rows = []
    for r in recs:
        if limit and by_family.get(r["family"], 0) >= limit:
            continue
        by_family[r["family"]] = by_family.get(r["family"], 0) + 1
        rows.append({k: r[k] for k in ("id", "question", "answer", "family")})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def evaluate(run: Path, questions: Path, out: Path, *, n: int, k: Sequence[int], max_new_tokens: int,
             seed: int = 0) -> list[dict]:
    """Samples n answers per question (temperature 1) and returns the samples.jsonl rows."""
    run_eval(EvalConfig(model=run, data=(str(questions),), out=out, n=n, k=tuple(k), max_new_tokens=max_new_tokens,
                        batch_size=max(64, n), seed=seed))
    return [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]


def per_question(rows: Sequence[dict], metric: str, k: int) -> np.ndarray:
    """float[questions]: "pass" or "mg-pass" @k per samples.jsonl row (`metareason.reproduce.training`)."""
    if metric not in ("pass", "mg-pass"):
        raise ValueError(f"metric must be 'pass' or 'mg-pass', got {metric!r}")
    return np.asarray(per_question_metrics(rows, (k,))[f"{metric}@{k}"])


def ci(values) -> dict[str, Any]:
    """The t interval of the mean over questions, as a results-file dict (`Interval.as_dict`)."""
    return mean_interval(values, nan_policy="omit").as_dict()


def arm_metrics(rows: Sequence[dict], ks: Sequence[int]) -> dict[str, Any]:
    """Pass@k and mG-Pass@k (t intervals over questions), greedy-free: from the samples."""
    out: dict[str, Any] = {"questions": len(rows)}
    for k in ks:
        out[f"pass@{k}"] = ci(per_question(rows, "pass", k))
        out[f"mg-pass@{k}"] = ci(per_question(rows, "mg-pass", k))
    out["format_rate"] = ci([np.mean(r["well_formed"]) for r in rows])
    out["mean_length"] = float(np.mean([np.mean(r["lengths"]) for r in rows]))
    return out


def paired(rows_a: Sequence[dict], rows_b: Sequence[dict], metric: str, k: int) -> dict[str, float]:
    """Mean per-question difference a - b of a metric on the same questions, with a t interval."""
    ia = {r["id"]: i for i, r in enumerate(rows_a)}
    order = [ia[r["id"]] for r in rows_b]
    a = per_question(rows_a, metric, k)[order]
    return paired_difference(a, per_question(rows_b, metric, k), nan_policy="omit").as_dict()


def bars(arms: dict[str, dict], metrics: Sequence[str], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(arms) * len(metrics) / 2, 3.6))
    width = 0.8 / len(metrics)
    x = np.arange(len(arms))
    for j, m in enumerate(metrics):
        mean = np.asarray([100 * a[m]["mean"] for a in arms.values()])
        err = np.asarray([[100 * (a[m]["mean"] - a[m]["low"]), 100 * (a[m]["high"] - a[m]["mean"])]
                          for a in arms.values()]).T
        ax.bar(x + (j - (len(metrics) - 1) / 2) * width, mean, width, yerr=err, capsize=3, label=m)
    ax.set_xticks(x, list(arms), fontsize=8)
    ax.set_ylabel("% (95% CI over questions)")
    ax.set_title(title, fontsize=9)
    save_figure(fig, ax, path)


def save_figure(fig, ax, path) -> None:
    """Legend, tight layout, PNG at 120 dpi, and the figure closed: every experiment figure's ending."""
    import matplotlib.pyplot as plt

    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(arms: dict[str, dict], metrics: Sequence[str]) -> str:
    lines = ["| arm | " + " | ".join(metrics) + " | format | mean length |", "|" + "---|" * (len(metrics) + 3)]
    for name, a in arms.items():
        cells = [f"{100 * a[m]['mean']:.1f} [{100 * a[m]['low']:.1f}, {100 * a[m]['high']:.1f}]" for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {100 * a['format_rate']['mean']:.0f} | "
                     f"{a['mean_length']:.0f} |")
    return "\n".join(lines)
