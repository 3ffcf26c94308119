"""E2, E3 and E5 of `metareason reproduce`: L-hat along correct and incorrect trajectories of the
lab model, and the change caused by reflection tokens against matched controls.

Per seed one unit (key "probe-trajectories/seed-S", needs "lab-model/seed-S") probes, at every
token, `budget.probe_questions` test questions of the model's lab:
  - "correct": the program's correct long trajectories;
  - "twin": their same-style incorrect twins ("incorrect-long": identical up to one uncorrected
    slip, `lab_records(..., twins=True)`), paired by question, probed for the true answer;
  - "own-correct" / "own-incorrect": the model's own samples (temperature 1), split by verdict;
    at least `MIN_OWN_INCORRECT` incorrect ones are sampled for where the budget is not "smoke"
    (up to `MAX_ROUNDS` rounds of `budget.samples` per question).
Every curve is stored with its answer-leak cut (`metareason.probe.analysis.leak_cut`) and the
reflection events of its text (`metareason.tasks.styles.reflection_events`).

`summarise` pools per-seed values as float[seeds, items] (items truncated to the smallest seed's
count) and decides each claim with the two-level bootstrap (`metareason.stats.bootstrap_interval`)
and `metareason.reproduce.base.verdict`.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from metareason.probe import analysis, figures as probe_figures
from metareason.probe.inputs import examples_from_records, probe_examples, trajectory_cuts
from metareason.probe.report import lab_trajectories
from metareason.reproduce.base import Budget, Claim, ClaimResult, Experiment, Unit, verdict
from metareason.reproduce.models import lab_model
from metareason.runs import load
from metareason.stats import Interval, bootstrap_interval, rate_interval
from metareason.tasks.lab import lab_records
from metareason.tasks.styles import reflection_events

__all__ = ["E2", "E3", "E5", "EXPERIMENTS", "TWIN_STYLE", "MIN_OWN_INCORRECT", "MAX_ROUNDS", "CHANCE_ACCURACY",
           "probe_unit", "probe_key", "collect", "summarise", "per_seed_grid"]

TWIN_STYLE = "incorrect-long"
"""The incorrect twins' style: the long style with one uncorrected slip, identical to its correct
twin up to the slip (`metareason.tasks.styles.render_twins`, via `lab_records(..., twins=True)`)."""
MIN_OWN_INCORRECT = 100
"""The model's own incorrect samples wanted per model (issue 18), at budgets other than "smoke"."""
MAX_ROUNDS = 4
"""Sampling rounds (each `budget.samples` per question, a new seed) spent to reach MIN_OWN_INCORRECT."""
CHANCE_ACCURACY = 0.1
"""A model whose sampled accuracy's 95% Wilson lower bound is below this is not shown above chance
(it cannot support a claim: `base.verdict(at_chance=True)`)."""
ROUND = 6
"""Decimals of the stored L-hat values."""

CLAIM_E2 = Claim("E2", "L-hat falls along correct trajectories, like gradient descent (Fig 3).", "Fig 3 (qualitative)",
                 "first minus last L-hat of correct long trajectories cut before the answer first appears "
                 "(answer-leak cut), two-level bootstrap over seeds x trajectories", 1)
CLAIM_E3 = Claim("E3", "Along incorrect trajectories L-hat w.r.t. the true answer shows no downward trend "
                 "(Fig 16).", "Fig 16 (qualitative)",
                 "drop (first minus last, leak-cut) of the correct trajectory minus that of its same-style "
                 "incorrect twin, paired by question, two-level bootstrap over seeds x questions", 1)
CLAIM_E5 = Claim("E5", "Reflection tokens ('Wait', 'Alternatively', ...) change the objective far more than "
                 "the average token (Fig 6).", "Fig 6 (qualitative)",
                 f"relative change |dL| / max(L, {analysis.REFLECTION_FLOOR}) at reflection words that precede a "
                 "correction minus the mean change of the same trajectory's other tokens (matched control), "
                 "per trajectory, two-level bootstrap over seeds x trajectories", 1)


def probe_key(seed: int) -> str:
    return f"probe-trajectories/seed-{seed}"


def _min_incorrect(budget: Budget) -> int:
    return 0 if budget.name == "smoke" else MIN_OWN_INCORRECT


def probe_unit(budget: Budget, seed: int, *, twin_style: str = TWIN_STYLE) -> Unit:
    """The unit that probes the lab model of `seed` (see the module docstring); raw = `collect`'s."""
    model_key = lab_model(budget, seed).key
    settings = {"questions": budget.probe_questions, "samples": budget.samples, "twin_style": twin_style,
                "min_incorrect": _min_incorrect(budget), "max_rounds": MAX_ROUNDS, "seed": seed, "every": 1}

    def run(folder: Path, inputs: Mapping[str, dict]) -> dict:
        model = load(inputs[model_key]["run"])
        return collect(model, questions=budget.probe_questions, samples=budget.samples, twin_style=twin_style,
                       min_incorrect=_min_incorrect(budget), seed=seed)

    return Unit(key=probe_key(seed), settings=settings, run=run, needs=(model_key,))


def _events(text: str) -> list[dict]:
    return [{"index": int(e["index"]), "kind": str(e["kind"])} for e in reflection_events(text)]


def collect(model: Any, *, questions: int, samples: int, twin_style: str = TWIN_STYLE, min_incorrect: int = 0,
            seed: int = 0, max_rounds: int = MAX_ROUNDS, batch_size: int = 16) -> dict:
    """Probes a lab `metareason.load` model at every token. Returns the raw result
    {"groups": {"correct", "twin", "own-correct", "own-incorrect": [{"id", "question", "loss":
    float[T + 1] L-hat after k = 0..T trajectory tokens (nats), "cut": answer-leak cut, "events":
    reflection events or null}]}, "sampled": samples drawn, "sampled_correct", "twin_style"}.
    Own samples probed: at most `questions` correct and max(questions, min_incorrect) incorrect."""
    if twin_style != TWIN_STYLE:
        raise ValueError(f"unknown twin style {twin_style!r} (known: {TWIN_STYLE})")
    if model.kind != "lab" or model.lab is None:
        raise ValueError("the trajectory experiments need a lab model (a metareason train run)")
    records = list(itertools.islice(lab_records(model.lab, "test", twins=True), questions))
    # the correct long trajectory and its incorrect twin (identical up to the slip), both probed
    # for the TRUE answer
    groups = {"correct": [dict(r, generations=[r["twin"]["correct"]], correct=True) for r in records],
              "twin": [dict(r, generations=[r["twin"]["incorrect"]], correct=False, style=twin_style)
                       for r in records],
              "own-correct": [], "own-incorrect": []}
    sampled = sampled_correct = 0
    for rnd in range(max(1, max_rounds) if samples else 0):
        own = lab_trajectories(model.params, model.config, records, samples=samples, seed=seed + 1000 * rnd)
        sampled += samples * len(records)
        sampled_correct += len(own["correct (sampled)"])
        for name in ("correct", "incorrect"):
            groups[f"own-{name}"] += [dict(r, qid=str(r["id"]).rsplit("-s", 1)[0], id=f"{r['id']}-r{rnd}")
                                      for r in own[f"{name} (sampled)"]]
        if len(groups["own-incorrect"]) >= min_incorrect:
            break
    groups["own-correct"] = groups["own-correct"][:questions]
    groups["own-incorrect"] = groups["own-incorrect"][:max(questions, min_incorrect)]
    out: dict[str, list[dict]] = {}
    for name, recs in groups.items():
        exs = examples_from_records(model.format, recs)
        curves = probe_examples(model.params, model.config, exs, [trajectory_cuts(e) for e in exs],
                                batch_size=batch_size) if exs else []
        out[name] = [{"id": str(r["id"]), "question": str(r.get("qid", r["id"])),
                      "loss": [round(float(v), ROUND) for v in c["loss"]],
                      "cut": analysis.leak_cut(e.trajectory, e.probe[e.targets]),
                      "events": _events(r["generations"][0])}
                     for r, e, c in zip(recs, exs, curves)]
    return {"groups": out, "sampled": sampled, "sampled_correct": sampled_correct, "twin_style": twin_style,
            "questions": len(records)}


def _curves(items: Sequence[dict]) -> list[dict]:
    """Raw items -> analysis curves probed at every token (k = 0..T, x = k / T)."""
    out = []
    for it in items:
        T = len(it["loss"]) - 1
        k = np.arange(T + 1)
        out.append({"k": k.tolist(), "x": (k / max(T, 1)).tolist(), "loss": it["loss"], "id": it["id"],
                    "question": it["question"]})
    return out


def _cut(items: Sequence[dict]) -> list[dict]:
    return analysis.cut_curves(_curves(items), [it["cut"] for it in items])


def per_seed_grid(rows: Sequence[Sequence[float]]) -> np.ndarray:
    """float[seeds, m]: each seed's finite values truncated to the smallest seed's count m (the
    two-level bootstrap needs a rectangle); seeds with no value are left out."""
    rows = [np.asarray(r, np.float64)[np.isfinite(np.asarray(r, np.float64))] for r in rows]
    rows = [r for r in rows if r.size]
    if not rows:
        return np.zeros((0, 0))
    m = min(r.size for r in rows)
    return np.stack([r[:m] for r in rows])


def _interval(grid: np.ndarray, statistic=np.mean) -> Interval | None:
    if grid.size < 2:
        return None
    return bootstrap_interval(grid, statistic, resamples=4000)


def _seeds(budget: Budget, raws: Mapping[str, dict]) -> list[dict]:
    return [raws[probe_key(s)] for s in budget.seeds if probe_key(s) in raws]


def _chance(raws: Sequence[dict]) -> tuple[bool, str, dict]:
    n = sum(r.get("sampled", 0) for r in raws)
    if not n:
        return False, "", {}
    acc = rate_interval(sum(r["sampled_correct"] for r in raws), n)
    at = acc.low < CHANCE_ACCURACY  # not shown to be above chance
    note = (f"WARNING: the model is not shown above chance (sampled accuracy {acc.estimate:.3f} [{acc.low:.3f}, "
            f"{acc.high:.3f}], lower bound < {CHANCE_ACCURACY}); the claim cannot be supported. ") if at else ""
    return at, note, {"sampled_accuracy": acc.as_dict()}


def _pairs_by_question(a: Sequence[dict], b: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    bq = {it["question"]: it for it in b}
    keep = [it for it in a if it["question"] in bq]
    return keep, [bq[it["question"]] for it in keep]


def _shape(curves: Sequence[dict]) -> dict:
    s = analysis.curve_shape(analysis.mean_band(curves), curves)
    return dict(s, drop=s["drop"].as_dict())


def _trend(curves: Sequence[dict]) -> dict:
    t = analysis.trend_summary(curves)
    return dict(t, first=t["first"].as_dict(), last=t["last"].as_dict())


def _figure(bands: Mapping[str, dict], figures: Path, name: str, title: str) -> str:
    figures.mkdir(parents=True, exist_ok=True)
    path = probe_figures.plot_bands(bands, figures / name, title=title)
    return f"{figures.name}/{Path(path).name}"


def _as(iv: Interval | None) -> dict | None:
    return iv.as_dict() if iv is not None else None


def summarise_e2(budget: Budget, raws: Mapping[str, dict], figures: Path) -> list[ClaimResult]:
    seeds = _seeds(budget, raws)
    at, note, extra = _chance(seeds)
    cut = per_seed_grid([analysis.drops(_cut(r["groups"]["correct"])) for r in seeds])
    uncut = per_seed_grid([analysis.drops(_curves(r["groups"]["correct"])) for r in seeds])
    own = per_seed_grid([analysis.drops(_cut(r["groups"]["own-correct"])) for r in seeds])
    measured = _interval(cut)
    pooled_cut = [c for r in seeds for c in _cut(r["groups"]["correct"])]
    pooled = [c for r in seeds for c in _curves(r["groups"]["correct"])]
    extra.update({"uncut_drop": _as(_interval(uncut)), "own_correct_cut_drop": _as(_interval(own)),
                  "shape_cut": _shape(pooled_cut), "shape_uncut": _shape(pooled),
                  "trend_cut": _trend(pooled_cut), "trend_uncut": _trend(pooled),
                  "mean_cut_fraction": float(np.mean([it["cut"] / max(len(it["loss"]) - 1, 1) for r in seeds
                                                      for it in r["groups"]["correct"]])) if pooled else math.nan})
    fig = ""
    if pooled:
        fig = _figure({"correct, cut before the answer": analysis.mean_band(pooled_cut),
                       "correct, uncut": analysis.mean_band(pooled)}, figures, "e2_trajectories.png",
                      "L-hat along correct trajectories (E2), leak-cut and uncut")
    return [ClaimResult(CLAIM_E2, measured, verdict(measured, CLAIM_E2.direction, at_chance=at), n=cut.shape[1],
                        seeds=cut.shape[0], note=note + "x of the cut curve is k / cut (the pre-leak prefix).",
                        figure=fig, extra=extra)]


def summarise_e3(budget: Budget, raws: Mapping[str, dict], figures: Path) -> list[ClaimResult]:
    seeds = _seeds(budget, raws)
    at, note, extra = _chance(seeds)
    diffs, diffs_uncut = [], []
    for r in seeds:
        a, b = _pairs_by_question(r["groups"]["correct"], r["groups"]["twin"])
        diffs.append(analysis.drops(_cut(a)) - analysis.drops(_cut(b)))
        diffs_uncut.append(analysis.drops(_curves(a)) - analysis.drops(_curves(b)))
    grid, grid_uncut = per_seed_grid(diffs), per_seed_grid(diffs_uncut)
    measured = _interval(grid)
    own_inc = per_seed_grid([analysis.drops(_cut(r["groups"]["own-incorrect"])) for r in seeds])
    twin = per_seed_grid([analysis.drops(_cut(r["groups"]["twin"])) for r in seeds])
    counts = [len(r["groups"]["own-incorrect"]) for r in seeds]
    extra.update({"uncut_difference": _as(_interval(grid_uncut)), "twin_cut_drop": _as(_interval(twin)),
                  "own_incorrect_cut_drop": _as(_interval(own_inc)), "own_incorrect_per_seed": counts,
                  "twin_style": seeds[0]["twin_style"] if seeds else ""})
    if counts and min(counts) < _min_incorrect(budget):
        note += f"Only {min(counts)} own incorrect samples in a seed (wanted {_min_incorrect(budget)}). "
    fig = ""
    groups = {"correct": "correct", "twin": "incorrect twin", "own-incorrect": "own incorrect"}
    bands = {}
    for g, label in groups.items():
        cs = [c for r in seeds for c in _cut(r["groups"][g])]
        full = [c for r in seeds for c in _curves(r["groups"][g])]
        if cs:
            bands[f"{label} (cut)"] = analysis.mean_band(cs)
            bands[f"{label} (uncut)"] = analysis.mean_band(full)
            extra[f"shape_cut_{g}"] = _shape(cs)
    if bands:
        fig = _figure(bands, figures, "e3_trajectories.png", "correct vs incorrect trajectories (E3), cut and uncut")
    return [ClaimResult(CLAIM_E3, measured, verdict(measured, CLAIM_E3.direction, at_chance=at), n=grid.shape[1],
                        seeds=grid.shape[0], note=note.strip(), figure=fig, extra=extra)]


def _curve_excess(curve: dict, events: Sequence[dict], kind: str) -> tuple[float, float]:
    """(mean, median) excess of `kind` events over the curve's own controls, floored (NaN without one)."""
    res = analysis.matched_reflection_changes([curve], [events], resamples=1)["kinds"].get(kind)
    if res is None:
        return math.nan, math.nan
    return res["excess_mean"].estimate, res["excess_median"].estimate


def summarise_e5(budget: Budget, raws: Mapping[str, dict], figures: Path) -> list[ClaimResult]:
    seeds = _seeds(budget, raws)
    at, note, extra = _chance(seeds)
    means, medians, all_curves, all_events = [], [], [], []
    for r in seeds:
        items = [it for g in ("correct", "twin") for it in r["groups"][g] if it.get("events") is not None]
        cs = _curves(items)
        all_curves += cs
        all_events += [it["events"] for it in items]
        ex = [_curve_excess(c, it["events"], "corrected") for c, it in zip(cs, items)]
        means.append([e[0] for e in ex])
        medians.append([e[1] for e in ex])
    grid, grid_median = per_seed_grid(means), per_seed_grid(medians)
    measured = _interval(grid)
    if not all_curves:
        note += "Not measured: no probed trajectory. "
    else:
        m = analysis.matched_reflection_changes(all_curves, all_events)
        extra["pooled"] = {"floor": m["floor"], "gap": m["gap"],
                           "kinds": {k: {n: (v.as_dict() if isinstance(v, Interval) else v) for n, v in d.items()}
                                     for k, d in m["kinds"].items()},
                           "paired": {k: _as(v) for k, v in m["paired"].items()}}
        extra["median_excess"] = _as(_interval(grid_median, np.median))
    return [ClaimResult(CLAIM_E5, measured, verdict(measured, CLAIM_E5.direction, at_chance=at), n=grid.shape[1],
                        seeds=grid.shape[0], note=note.strip(), extra=extra)]


def _units(budget: Budget) -> list[Unit]:
    return [lab_model(budget, s) for s in budget.seeds] + [probe_unit(budget, s) for s in budget.seeds]


def summarise(name: str, budget: Budget, raws: Mapping[str, dict], figures: Path) -> list[ClaimResult]:
    """The results of experiment `name` ("E2", "E3", "E5") from the probe units' raws."""
    return {"E2": summarise_e2, "E3": summarise_e3, "E5": summarise_e5}[name](budget, raws, Path(figures))


E2 = Experiment("E2", "L-hat along correct trajectories (answer-leak cut)", (CLAIM_E2,), _units, summarise_e2)
E3 = Experiment("E3", "L-hat along incorrect trajectories (same-style twins, own samples)", (CLAIM_E3,), _units,
                summarise_e3)
E5 = Experiment("E5", "Reflection tokens against matched controls", (CLAIM_E5,), _units, summarise_e5)
EXPERIMENTS = (E2, E3, E5)
