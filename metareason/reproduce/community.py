"""E8 (Fig 4): off-policy-trained models are not consistently worse than on-policy ones.

The harness is `metareason.studies.community.compare_models` (every model evaluated and probed on
one data set with one setting). Units:

- budgets "smoke" and "lab": one unit per seed, "e8-community/seed-S", that writes `N_RANDOM`
  off-policy and `N_RANDOM` on-policy *tiny random* Hugging Face Qwen2 folders (weights seeded by
  S) and a data file of `budget.questions` lab questions (question, answer, trajectory), and runs
  the harness on them (n = budget.samples, ks = budget.ks, budget.probe_questions probed). Random
  models are at chance: the harness is exercised end to end, the claim is not tested, and the
  verdict cannot be "supported".
- budget "full": one unit, "e8-community/full", that runs the harness on `FULL_MODELS` (real
  community models in /data) when every folder is there, and otherwise returns the command to run.

The rule, fixed here before any run: the measure is Pass@k (k = `claim_k(budget)`) of the
off-policy models minus the on-policy models (per question, each paradigm's mean over its models),
paired over questions, with a two-level bootstrap over seeds x questions (`bootstrap_interval`).
"Not worse" is a one-sided equivalence: supported when the 95% interval's lower bound is above
-`MARGIN`, contradicted when its upper bound is below -`MARGIN` (off-policy models consistently
worse by more than the margin), else inconclusive: `base.verdict` on the difference + `MARGIN`
with direction +1.
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from metareason.probe.figures import pyplot, save_figure
from metareason.reproduce.base import Budget, Claim, ClaimResult, Experiment, Unit, verdict
from metareason.stats import Interval, bootstrap_interval
from metareason.studies.community import ModelEntry, compare_models, write_random_hf_model
from metareason.tasks.lab import LabConfig, lab_records

__all__ = ["MARGIN", "N_RANDOM", "MAX_NEW_TOKENS", "FULL_MODELS", "FULL_DATA", "FULL_SETTINGS", "CLAIM", "RANDOM_NOTE",
           "claim_k", "community_units", "summarise", "full_command", "E8"]

MARGIN = 0.05
"""Pass@k (a fraction) by which off-policy models may fall below on-policy ones and still count as
"not worse" (5 percentage points)."""

N_RANDOM = 2
"""Tiny random models per paradigm per seed (budgets smoke and lab)."""

MAX_NEW_TOKENS = 16
"""Tokens sampled per answer by the tiny random models (their answers are noise)."""

RANDOM_NOTE = ("tiny random models: the harness is exercised, the claim is not tested; run with real community "
               "models at full scale")

FULL_DATA = "/data/aime24_qwq_generations.jsonl"
"""The full-scale data: AIME24 questions with answers and reasoning generations (the probe data of
experiments/FULL_SCALE.md), the same file for every model."""

FULL_MODELS = (
    ModelEntry("R1-Distill-Qwen-7B", Path("/data/DeepSeek-R1-Distill-Qwen-7B"), "off-policy"),
    ModelEntry("OpenThinker-7B", Path("/data/OpenThinker-7B"), "off-policy"),
    ModelEntry("Bespoke-Stratos-7B", Path("/data/Bespoke-Stratos-7B"), "off-policy"),
    ModelEntry("Open-Reasoner-Zero-7B", Path("/data/Open-Reasoner-Zero-7B"), "on-policy"),
    ModelEntry("SimpleRL-Zoo-Qwen2.5-7B", Path("/data/Qwen-2.5-7B-SimpleRL-Zoo"), "on-policy"),
    ModelEntry("Eurus-2-7B-PRIME", Path("/data/Eurus-2-7B-PRIME"), "on-policy"),
    ModelEntry("Qwen2.5-7B", Path("/data/Qwen2.5-7B"), "base"),
)
"""Community models of the full-scale run, with their training paradigm. PAPER.md does not list
Fig 4's models and experiments/FULL_SCALE.md has no E8 entry: this is a stand-in list of public
Qwen2.5-7B-based reasoning models (SFT / distillation = off-policy, RL on own samples = on-policy),
placed in /data as FULL_SCALE.md places its models; edit it to the paper's list when known."""

FULL_SETTINGS = {"n": 32, "ks": (1, 4, 8, 16), "probe_questions": 30, "max_new_tokens": 16384,
                 "think_prefix": "<think>\\n", "batch_size": 32,
                 "model_overrides": "param_dtype=bfloat16,compute_dtype=bfloat16,attention_impl=chunked,attention_chunk=1024"}
"""The paper's evaluation (n = 32, k up to 16; max response as the full-scale RL runs; the numerics
of FULL_SCALE.md's probes)."""

CLAIM = Claim(
    id="E8", paper="off-policy-trained models are not consistently worse than on-policy ones",
    paper_number="Fig 4 (per-model Pass@k / mG-Pass@k)",
    measure=(f"Pass@k (k = 8, else the budget's largest) of the off-policy models minus the on-policy models "
             f"(per question, each paradigm's mean), paired over questions, two-level bootstrap over seeds x "
             f"questions; the verdict is on that difference + {MARGIN} (supported: lower bound > -{MARGIN})"),
    direction=1)


def claim_k(budget: Budget) -> int:
    """The k of the claim's Pass@k: 8 (the paper's official k) when the budget has it, else its largest."""
    return 8 if 8 in budget.ks else max(budget.ks)


def _data(folder: Path, budget: Budget, seed: int) -> Path:
    lab = LabConfig(families=("arith",), style="long", difficulty=(1, 2), train_size=50,
                    eval_size=max(budget.questions, budget.probe_questions), seed=seed)
    recs = list(lab_records(lab, "test"))
    path = folder / "data.jsonl"
    path.write_text("".join(json.dumps({k: r[k] for k in ("id", "question", "answer", "trajectory")}) + "\n"
                            for r in recs))
    return path


def _random_models(folder: Path, data: Path, seed: int) -> list[ModelEntry]:
    corpus = [(lambda r: r["question"] + " " + r["trajectory"])(json.loads(line))
              for line in data.read_text().splitlines()]
    out = []
    for i, paradigm in enumerate(["off-policy"] * N_RANDOM + ["on-policy"] * N_RANDOM):
        path = folder / "models" / f"random-{i}"
        if path.exists() and not (path / "tokenizer_config.json").exists():
            shutil.rmtree(path)  # cut short between the weights and the tokenizer
        if not path.exists():
            write_random_hf_model(path, corpus, seed=1000 * seed + i)
        out.append(ModelEntry(f"{paradigm}-{i}", path, paradigm))
    return out


def _raw(res: dict, *, random: bool) -> dict:
    """The unit's raw result: per model its paradigm, per-question metrics and probe summary."""
    return {"random_models": random, "data": res["data"], "settings": res["settings"],
            "models": {name: {"paradigm": r["paradigm"], "path": r["path"], "per_question": r["per_question"],
                              "probe": r.get("probe")} for name, r in res["models"].items()}}


def full_command(out: str = "/mnt/shared/e8-community") -> str:
    """The command that runs the harness on `FULL_MODELS` at the paper's settings."""
    s = FULL_SETTINGS
    args = ["python", "-m", "metareason.studies.community"]
    for m in FULL_MODELS:
        args += ["--model", f"{m.name}:{m.paradigm}:{m.path}"]
    args += ["--data", FULL_DATA, "--out", out, "--n", str(s["n"]), "--k", *map(str, s["ks"]),
             "--probe-questions", str(s["probe_questions"]), "--max-new-tokens", str(s["max_new_tokens"]),
             "--think-prefix", s["think_prefix"], "--batch-size", str(s["batch_size"]),
             "--model-overrides", s["model_overrides"]]
    return shlex.join(args)


def community_units(budget: Budget) -> list[Unit]:
    """The units of E8 at `budget` (see the module docstring)."""
    if budget.name == "full":
        def run_full(folder: Path, inputs: Mapping[str, dict]) -> dict:
            missing = [str(m.path) for m in FULL_MODELS if not (m.path / "config.json").is_file()]
            if missing or not Path(FULL_DATA).is_file():
                return {"commands": [full_command()], "missing": missing + ([] if Path(FULL_DATA).is_file()
                                                                           else [FULL_DATA])}
            res = compare_models(FULL_MODELS, FULL_DATA, folder / "harness", **FULL_SETTINGS)
            return _raw(res, random=False)

        settings = {"models": [[m.name, str(m.path), m.paradigm] for m in FULL_MODELS], "data": FULL_DATA,
                    **{k: list(v) if isinstance(v, tuple) else v for k, v in FULL_SETTINGS.items()}}
        return [Unit(key="e8-community/full", settings=settings, run=run_full)]

    units = []
    for seed in budget.seeds:
        def run(folder: Path, inputs: Mapping[str, dict], seed: int = seed) -> dict:
            folder.mkdir(parents=True, exist_ok=True)
            data = _data(folder, budget, seed)
            models = _random_models(folder, data, seed)
            res = compare_models(models, str(data), folder / "harness", n=budget.samples, ks=budget.ks,
                                 probe_questions=budget.probe_questions, max_new_tokens=MAX_NEW_TOKENS,
                                 max_questions=budget.questions, seed=seed)
            return _raw(res, random=True)

        settings = {"seed": seed, "random_per_paradigm": N_RANDOM, "questions": budget.questions,
                    "samples": budget.samples, "ks": list(budget.ks), "probe_questions": budget.probe_questions,
                    "max_new_tokens": MAX_NEW_TOKENS}
        units.append(Unit(key=f"e8-community/seed-{seed}", settings=settings, run=run))
    return units


def _seed_difference(raw: dict, metric: str) -> tuple[list[str], np.ndarray] | None:
    """(ids, per-question off-policy mean minus on-policy mean) on the questions every model answered."""
    models = raw["models"].values()
    off = [m["per_question"][metric] for m in models if m["paradigm"] == "off-policy"]
    on = [m["per_question"][metric] for m in models if m["paradigm"] == "on-policy"]
    if not off or not on:
        return None
    ids = sorted(set.intersection(*(set(v) for v in (*off, *on))))
    if not ids:
        return None
    return ids, (np.mean([[v[i] for i in ids] for v in off], axis=0) - np.mean([[v[i] for i in ids] for v in on],
                                                                                axis=0))


def _figure(per_seed: Sequence[float], pooled: Interval | None, metric: str, path: Path) -> Path:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot(range(len(per_seed)), [100 * d for d in per_seed], "o", label="per seed (mean over questions)")
    if pooled is not None and math.isfinite(pooled.low):
        x = len(per_seed)
        ax.errorbar([x], [100 * pooled.estimate], yerr=[[100 * (pooled.estimate - pooled.low)],
                                                        [100 * (pooled.high - pooled.estimate)]],
                    fmt="s", color="k", capsize=4, label="pooled, 95% two-level bootstrap")
    ax.axhline(-100 * MARGIN, ls="--", color="tab:red", label=f"-margin ({100 * MARGIN:.0f} points)")
    ax.axhline(0, color="gray", lw=0.5)
    ax.set_ylabel(f"off - on policy {metric} (points)")
    ax.set_xlabel("seed")
    ax.legend(fontsize=6)
    ax.set_title("E8: off-policy minus on-policy", fontsize=9)
    save_figure(fig, path)
    return path


def summarise(budget: Budget, raws: Mapping[str, dict], figures: Path) -> list[ClaimResult]:
    """One `ClaimResult` for E8 from the units' raw results (see the module docstring for the rule)."""
    k = claim_k(budget)
    metric = f"pass@{k}"
    mine = {key: raw for key, raw in raws.items() if key.startswith("e8-community/")}
    commands = [c for raw in mine.values() for c in raw.get("commands", ())]
    if commands:
        missing = [m for raw in mine.values() for m in raw.get("missing", ())]
        return [ClaimResult(CLAIM, None, "inconclusive",
                            note=f"not run: {len(missing)} model folder(s) / data missing ({', '.join(missing[:3])}"
                                 f"{', ...' if len(missing) > 3 else ''}); run the command in extra",
                            extra={"commands": commands, "missing": missing})]
    runs = [mine[key] for key in sorted(mine)]
    diffs = [d for d in (_seed_difference(raw, metric) for raw in runs) if d is not None]
    if not diffs:
        return [ClaimResult(CLAIM, None, "inconclusive", seeds=len(runs),
                            note="no run with both an off-policy and an on-policy model")]
    m = min(len(ids) for ids, _ in diffs)
    grid = np.stack([d[:m] for _, d in diffs])  # float[seeds, questions]
    diff = bootstrap_interval(grid) if len(diffs) > 1 else bootstrap_interval(grid[0])
    shifted = diff._replace(estimate=diff.estimate + MARGIN, low=diff.low + MARGIN, high=diff.high + MARGIN)
    random = any(raw.get("random_models") for raw in runs)
    all_zero = all(v == 0 for raw in runs for mm in raw["models"].values() for v in mm["per_question"][metric].values())
    at_chance = random or all_zero
    result = verdict(shifted, CLAIM.direction, at_chance=at_chance)
    notes = []
    if random:
        notes.append(RANDOM_NOTE)
    elif all_zero:
        notes.append(f"every model has {metric} = 0 on every question: nothing is compared")
    per_model: dict[str, dict] = {}
    for raw in runs:
        for name, mm in raw["models"].items():
            e = per_model.setdefault(name, {"paradigm": mm["paradigm"], metric: [], "drop": [], "falling": []})
            e[metric].append(float(np.mean(list(mm["per_question"][metric].values()))))
            probe = mm.get("probe") or {}
            if probe.get("drop"):
                e["drop"].append(probe["drop"]["mean"])
            if probe.get("falling"):
                e["falling"].append(probe["falling"]["mean"])
    per_model = {n: {"paradigm": e["paradigm"], **{f: (float(np.mean(e[f])) if e[f] else None)
                                                    for f in (metric, "drop", "falling")}}
                 for n, e in per_model.items()}
    per_seed = [float(d.mean()) for _, d in diffs]
    fig = _figure(per_seed, diff, metric, Path(figures) / "e8_community.png")
    extra = {"difference_plus_margin": shifted.as_dict(), "margin": MARGIN, "k": k, "per_seed": per_seed,
             "per_model (means over seeds)": per_model, "rule": "verdict(difference + margin, +1)"}
    notes.append(f"measured: off minus on policy {metric}; the verdict is on it + {MARGIN} (not worse by more "
                 f"than {100 * MARGIN:.0f} points)")
    return [ClaimResult(CLAIM, diff, result, n=m, seeds=len(diffs), note="; ".join(notes),
                        figure=str(fig.relative_to(Path(figures).parent)), extra=extra)]


E8 = Experiment(name="E8", title="Community models by training paradigm (Fig 4)", claims=(CLAIM,),
                units=community_units, summarise=summarise)
