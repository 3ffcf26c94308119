"""E1 and the analogy (Eq 4), measured: the answer-loss surface in the plane of a trajectory's
measured implicit updates, and the cosine of the exact update closest to -grad L.

Per seed (the probe experiments' lab model, `models.lab_model`), `trajectories(budget)` correct
test trajectories; for each, the prefixes k = 0, T//2, T, their exact implicit updates
(`metareason.inner.implicit`), and:

- E1: the plane of the two non-zero updates (`metareason.probe.landscape.measured_landscape`;
  with two updates the plane holds both, so each prefix's point lies on the surface and its
  value is the in-context L-hat). The path descends when the surface falls from theta (the
  question only, k = 0) to the whole trajectory's point: drop = L(theta) - L-hat(T) > 0.
- Eq 4 (the implicit update is about -eta grad L): the cosine of the whole trajectory's exact
  update closest to -grad L (`implicit_trajectory`'s cos_closest), and the pseudo-inverse
  member's (cos_cumulative) beside it. The rule, fixed here before any run: the claim is
  supported only when the closest cosine's interval lies above `ANALOGY_THRESHOLD` ("a step in
  roughly the gradient direction"); `base.verdict` on closest cosine minus the threshold.

Intervals: two-level bootstrap over seeds x trajectories (`metareason.stats.bootstrap_interval`).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from metareason.inner.implicit import implicit_trajectory, implicit_update, patch
from metareason.probe.figures import plot_landscape
from metareason.probe.inputs import make_batch
from metareason.probe.landscape import measured_landscape
from metareason.reproduce.base import Budget, Claim, ClaimResult, Experiment, Unit, verdict
from metareason.reproduce.models import lab_model
from metareason.runs import load
from metareason.stats import bootstrap_interval
from metareason.tasks.lab import lab_records

__all__ = ["ANALOGY_THRESHOLD", "CLAIMS", "EXPERIMENT", "trajectories", "units", "summarise", "measure_seed"]

ANALOGY_THRESHOLD = 0.5
"""The closest exact update's cosine with -grad L must exceed this (with its whole 95% interval)
for Eq 4 to count as supported: a step in roughly the gradient direction (60 degrees)."""

CLAIMS = (
    Claim("E1", "the trajectory's path descends the answer-loss landscape (Fig 2)", "a figure (no number)",
          "drop of the question-only answer-loss surface from theta to the whole trajectory's point in the plane "
          "of its measured implicit updates (= L(theta) - L-hat(T)), two-level bootstrap over seeds x "
          "trajectories", 1),
    Claim("E1-Eq4", "a trajectory's implicit update approximates -eta grad L (Eq 4)", "no number",
          f"cosine with -grad L of the exact implicit update closest to it (MLP kernels), minus "
          f"{ANALOGY_THRESHOLD}; the pseudo-inverse member's cosine beside it", 1),
)


def trajectories(budget: Budget) -> int:
    """Trajectories probed per seed: a quarter of the budget's probe questions, at least 2."""
    return max(2, budget.probe_questions // 4)


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(float(x)) else None


def measure_seed(run: str | Path, n: int, *, grid: int = 9) -> dict:
    """The raw result of one seed: per trajectory drop, cos_pinv, cos_closest, null_share,
    logit_error_closest (None when not attained), and the first trajectory's plane."""
    model = load(run)
    config = dataclasses.replace(model.config, param_dtype="float32", compute_dtype="float32")
    params = jax.tree.map(lambda x: x.astype(np.float32), model.params)
    out: dict[str, Any] = {k: [] for k in ("drop", "cos_pinv", "cos_closest", "null_share", "logit_error_closest",
                                           "t_closest")}
    for i, r in enumerate(lab_records(model.lab, "test")):
        if i >= n:
            break
        ex = model.format.probe_example(r["question"], r["trajectory"], r["answer"])
        T = len(ex.trajectory)
        ks = sorted({0, T // 2, T})
        res = implicit_trajectory(params, ex, ks, config=config)
        out["drop"].append(float(res["loss0"] - res["loss_in_context"][-1]))
        out["cos_pinv"].append(float(res["cos_cumulative"][-1]))
        out["cos_closest"].append(float(res["cos_closest"][-1]))
        out["null_share"].append(float(res["null_share"][-1]))
        out["logit_error_closest"].append(_finite(res["max_logit_error_closest"][-1]))
        out["t_closest"].append(_finite(res["t_closest"][-1]))
        if i == 0:
            zero = jax.tree.map(np.zeros_like, params)
            ups = [patch(zero, implicit_update(params, ex, k, config=config).delta) for k in ks]
            plane = measured_landscape(params, config, make_batch([ex], [np.zeros(1, np.int32)]), ups, grid=grid)
            out["plane"] = {key: np.asarray(plane[key]).tolist() for key in
                            ("alphas", "betas", "surface", "coords", "residual", "point_loss", "surface_at_points")}
            out["plane"]["k"] = ks
            out["plane"]["lhat"] = [float(x) for x in res["loss_in_context"]]
    return out


def units(budget: Budget) -> list[Unit]:
    """The lab model of every seed and one measuring unit per seed (key "analogy/seed-S")."""
    n = trajectories(budget)
    out: list[Unit] = []
    for seed in budget.seeds:
        model = lab_model(budget, seed)

        def run(folder: Path, inputs: Mapping[str, dict], key=model.key) -> dict:
            return measure_seed(inputs[key]["run"], n)

        out += [model, Unit(key=f"analogy/seed-{seed}", settings={"trajectories": n, "prefixes": "0,T//2,T",
                                                                    "grid": 9, "threshold": ANALOGY_THRESHOLD},
                            run=run, needs=(model.key,))]
    return out


def _grid(raws: Sequence[dict], key: str) -> np.ndarray:
    """float[seeds, items] (items cut to the shortest seed)."""
    m = min(len(r[key]) for r in raws)
    return np.asarray([[np.nan if v is None else v for v in r[key][:m]] for r in raws], np.float64)


def summarise(budget: Budget, raws: Mapping[str, dict], figures: Path) -> list[ClaimResult]:
    """One `ClaimResult` per claim (E1, E1-Eq4) from the units' raw results."""
    seeds = [s for s in budget.seeds if f"analogy/seed-{s}" in raws]
    per = [raws[f"analogy/seed-{s}"] for s in seeds]
    if not per:
        return [ClaimResult(c, None, "inconclusive", note="not measured") for c in CLAIMS]
    drop, closest, pinv = _grid(per, "drop"), _grid(per, "cos_closest"), _grid(per, "cos_pinv")
    n = drop.shape[1]
    figs = []
    for s, r in zip(seeds, per):
        if "plane" in r:
            p = r["plane"]
            path = Path(figures) / f"e1_plane_seed-{s}.png"
            plot_landscape(np.asarray(p["surface"]), p["alphas"], p["betas"], path, points=np.asarray(p["coords"]),
                           title=f"E1 measured, seed {s}: plane of the implicit updates")
            figs.append(str(path.relative_to(Path(figures).parent)))
    d = bootstrap_interval(drop)
    residual = max((max(r["plane"]["residual"]) for r in per if "plane" in r), default=math.nan)
    e1 = ClaimResult(CLAIMS[0], d, verdict(d, CLAIMS[0].direction), n=n, seeds=len(seeds),
                     note="points lie in the plane (largest off-plane residual "
                          f"{residual:.1e}); their values are the in-context L-hat",
                     figure=figs[0] if figs else "", extra={"figures": figs})
    gap = bootstrap_interval(closest - ANALOGY_THRESHOLD)
    extra = {"threshold": ANALOGY_THRESHOLD, "cos_closest": bootstrap_interval(closest).as_dict(),
             "cos_pinv": bootstrap_interval(pinv).as_dict(),
             "null_share": bootstrap_interval(_grid(per, "null_share")).as_dict()}
    eq4 = ClaimResult(CLAIMS[1], gap, verdict(gap, CLAIMS[1].direction), n=n, seeds=len(seeds),
                      note=f"closest exact update's cosine {closest.mean():.3f} vs the pseudo-inverse member's "
                           f"{pinv.mean():.3f}; threshold {ANALOGY_THRESHOLD}", extra=extra)
    return [e1, eq4]


EXPERIMENT = Experiment("E1", "the answer-loss landscape and the analogy, measured in the plane of the implicit "
                        "updates", CLAIMS, units, summarise)
