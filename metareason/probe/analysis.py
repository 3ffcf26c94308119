"""The paper's trajectory analyses as pure functions over probe curves (numpy in, numbers out).

A curve is a dict from `probe_examples`: "k" (trajectory prefix lengths), "x" (k normalised by
the trajectory length), "loss" (L-hat at each cut), "types" (token type of each trajectory token).
Intervals are `metareason.stats.Interval`s (t intervals over curves; non-finite values dropped,
NaN where there is no value).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from metareason.stats import Interval, bootstrap_interval, mean_interval, paired_difference

__all__ = ["ema", "on_grid", "mean_band", "spearman", "trend", "trend_summary", "relative_changes",
           "token_type_changes", "delimiter_effect", "leak_cut", "cut_curves", "drops", "curve_shape",
           "REFLECTION_FLOOR", "matched_reflection_changes"]

REFLECTION_FLOOR = 0.05
"""Floor (nats) on the denominator of the relative change |L_i - L_{i-1}| / max(L_{i-1}, floor):
0.05 nats is an answer probability of about 0.95 per answer token; below it the model already
knows the answer and a change of 1e-4 nats would otherwise count as a relative change of 100s
(the demo's 5,853 and 133,847), so the paper's mean would measure the near-zero tail only."""


def ema(values: Sequence[float], alpha: float) -> np.ndarray:
    """Exponential moving average s_i = alpha * v_i + (1 - alpha) * s_{i-1}, s_0 = v_0 (the
    paper smooths with alpha 0.01 over thousands of tokens; short lab curves need a larger alpha)."""
    if not 0 < alpha <= 1:
        raise ValueError(f"EMA alpha must be in (0, 1], got {alpha}")
    v = np.asarray(values, np.float64)
    out = np.empty_like(v)
    if v.size:
        out[0] = v[0]
        for i in range(1, v.size):
            out[i] = alpha * v[i] + (1 - alpha) * out[i - 1]
    return out


def on_grid(x: Sequence[float], y: Sequence[float], grid: np.ndarray) -> np.ndarray:
    """A curve y(x) (x increasing in [0, 1]) linearly interpolated onto `grid`."""
    return np.interp(grid, np.asarray(x, np.float64), np.asarray(y, np.float64))


def mean_band(curves: Sequence[dict], *, points: int = 50, alpha: float | None = None,
              level: float = 0.95) -> dict:
    """Curves resampled on a common normalised grid (after optional EMA smoothing) ->
    {"x": [points], "mean", "low", "high": pointwise mean and confidence band, "n"}."""
    grid = np.linspace(0, 1, points)
    rows = []
    for c in curves:
        y = ema(c["loss"], alpha) if alpha else np.asarray(c["loss"])
        rows.append(on_grid(c["x"], y, grid))
    if not rows:
        return {"x": grid.tolist(), "mean": [], "low": [], "high": [], "n": 0}
    stats = [mean_interval(col, level, nan_policy="omit") for col in np.asarray(rows).T]
    return {"x": grid.tolist(), "mean": [s.estimate for s in stats], "low": [s.low for s in stats],
            "high": [s.high for s in stats], "n": len(rows)}


def _ranks(v: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their ranks), 1-based."""
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(v.size, np.float64)
    sv = v[order]
    i = 0
    while i < v.size:
        j = i
        while j + 1 < v.size and sv[j + 1] == sv[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson correlation of average ranks); NaN when either side is constant."""
    rx, ry = _ranks(np.asarray(x, np.float64)), _ranks(np.asarray(y, np.float64))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / den) if den > 0 else math.nan


def trend(curve: dict) -> dict:
    """Per-trajectory trend: Spearman rho of L-hat against position, and first / last / min L-hat."""
    loss = np.asarray(curve["loss"], np.float64)
    return {"rho": spearman(curve["k"], loss), "first": float(loss[0]), "last": float(loss[-1]),
            "min": float(loss.min())}


def trend_summary(curves: Sequence[dict]) -> dict:
    """Over many trajectories: the share whose loss falls along the trajectory (rho < 0), the
    share ending below where they started, the median rho, and the mean first / last L-hat with CIs."""
    t = [trend(c) for c in curves]
    rho = np.asarray([x["rho"] for x in t], np.float64)
    ok = np.isfinite(rho)
    first, last = [x["first"] for x in t], [x["last"] for x in t]
    return {
        "n": len(t),
        "share_falling": float((rho[ok] < 0).mean()) if ok.any() else math.nan,
        "share_last_below_first": float(np.mean(np.asarray(last) < np.asarray(first))) if t else math.nan,
        "median_rho": float(np.median(rho[ok])) if ok.any() else math.nan,
        "first": mean_interval(first, nan_policy="omit"), "last": mean_interval(last, nan_policy="omit"),
    }


def relative_changes(loss: Sequence[float], eps: float = 1e-8) -> np.ndarray:
    """|L_i - L_{i-1}| / L_{i-1} for i >= 1 (length len(loss) - 1); change i is caused by the
    trajectory token at index i - 1 when cuts are every token from 0."""
    v = np.asarray(loss, np.float64)
    return np.abs(v[1:] - v[:-1]) / np.maximum(v[:-1], eps)


def token_type_changes(curves: Sequence[dict], *, offsets: Sequence[int] = (0,), floor: float | None = None) -> dict:
    """Relative change of L-hat caused by each trajectory token, grouped by token type, for
    curves probed at every token (k = 0..T). offsets: also the change `o` tokens after a token
    of each type (the neighbourhood of reflection words).

    Returns {type: {offset: (mean, low, high, n, median)}} plus "all" (every token), and "ratio":
    {type: mean change at offset 0 / mean change of all tokens}. The mean is the paper's
    statistic; it is dominated by tokens after which L-hat is already near 0 (a small
    denominator), so the median is reported beside it. floor: the relative change's denominator is
    max(L_{i-1}, floor) (e.g. `REFLECTION_FLOOR`); None keeps the old 1e-8 (the paper's raw statistic)."""
    eps = 1e-8 if floor is None else float(floor)
    if not eps > 0:
        raise ValueError(f"floor must be > 0, got {floor}")
    by: dict[str, dict[int, list[float]]] = {}
    everything: list[float] = []
    for c in curves:
        k = np.asarray(c["k"])
        T = len(c["types"])
        if len(k) != T + 1 or (k != np.arange(T + 1)).any():
            raise ValueError("token-type statistics need curves probed at every token (cut rule 'every', every=1)")
        r = relative_changes(c["loss"], eps)
        everything.extend(r.tolist())
        for i, typ in enumerate(c["types"]):
            for o in offsets:
                if 0 <= i + o < T:
                    by.setdefault(typ, {}).setdefault(o, []).append(float(r[i + o]))
    def stat(v):
        return (*mean_interval(v, nan_policy="omit")[:3], len(v), float(np.median(v)) if v else math.nan)

    out = {typ: {o: stat(v) for o, v in sorted(d.items())} for typ, d in sorted(by.items())}
    out["all"] = {0: stat(everything)}
    avg = out["all"][0][0]
    out["ratio"] = {typ: (d[0][0] / avg if 0 in d and avg > 0 else math.nan)
                    for typ, d in out.items() if typ not in ("all", "ratio")}
    return out


def delimiter_effect(without: Sequence[dict], with_delimiter: Sequence[dict]) -> dict:
    """E4: L-hat with and without the end-of-thinking delimiter before the template, paired by
    example. Returns the mean paired difference (with - without) at the start (no thinking), at the
    end (full trajectory) and averaged over the trajectory, each an `Interval` (t)."""
    if len(without) != len(with_delimiter):
        raise ValueError("pair the curves: one with and one without the delimiter per example")

    def paired(at):
        return paired_difference([at(w["loss"]) for w in with_delimiter], [at(o["loss"]) for o in without],
                                 nan_policy="omit")

    return {"start": paired(lambda v: v[0]), "end": paired(lambda v: v[-1]),
            "along": paired(lambda v: float(np.mean(v))), "n": len(without)}


def leak_cut(trajectory_tokens: Sequence[int], answer_tokens: Sequence[int]) -> int:
    """The answer-leak cut: the number of trajectory tokens before the answer's token string
    (int[A], A >= 1) first appears in the trajectory (int[T]) as a contiguous subsequence; T when
    it never does. Prefixes of k <= cut tokens contain no complete statement of the answer."""
    t = [int(x) for x in trajectory_tokens]
    a = [int(x) for x in answer_tokens]
    if not a:
        raise ValueError("leak_cut needs at least one answer token")
    for i in range(len(t) - len(a) + 1):
        if t[i:i + len(a)] == a:
            return i
    return len(t)


def cut_curves(curves: Sequence[dict], cuts: Sequence[int]) -> list[dict]:
    """Each curve truncated at its cut (one int per curve, e.g. `leak_cut`): the points with
    k <= cut are kept ("k", "loss", "total" where present), "types" keeps the first `cut` token
    types, "x" becomes k / cut (the pre-leak prefix as the whole trajectory; k / 1 when cut is 0),
    "x_full" keeps the old x, and "cut" records the cut. Every curve keeps at least its k = 0 point."""
    if len(curves) != len(cuts):
        raise ValueError(f"one cut per curve: {len(curves)} curves, {len(cuts)} cuts")
    out = []
    for c, cut in zip(curves, cuts):
        cut = int(cut)
        if cut < 0:
            raise ValueError(f"a cut is a prefix length >= 0, got {cut}")
        k = np.asarray(c["k"])
        keep = k <= cut
        d = dict(c, k=k[keep].tolist(), x=(k[keep] / max(cut, 1)).tolist(), x_full=np.asarray(c["x"])[keep].tolist(),
                 loss=np.asarray(c["loss"])[keep].tolist(), cut=cut)
        if "total" in c:
            d["total"] = np.asarray(c["total"])[keep].tolist()
        if "types" in c:
            d["types"] = list(c["types"])[:cut]
        out.append(d)
    return out


def drops(curves: Sequence[dict]) -> np.ndarray:
    """float[n]: each curve's first minus last L-hat (positive when the loss fell; nats)."""
    return np.asarray([float(c["loss"][0]) - float(c["loss"][-1]) for c in curves], np.float64)


def curve_shape(band: dict, curves: Sequence[dict] | None = None) -> dict:
    """The shape of a mean curve (`mean_band`'s {"x", "mean", "low", "high"} over grid points j):

    - "peak_x": x of the highest mean (the first such point);
    - "falls_from": x_j of the first point j at or after the peak from which the curve never rises
      above its band: mean[i] <= min(high[j..i-1]) for every i > j (a missing high counts as the
      mean itself, i.e. strictly non-increasing); the last grid point qualifies trivially;
    - "monotone_share": the share of consecutive grid steps with mean[j+1] < mean[j];
    - "drop": first minus last L-hat, the t interval of the per-curve drops (`drops`) when `curves`
      are given, else the band's mean[0] - mean[-1] with NaN bounds.
    NaN everywhere for an empty band."""
    m = np.asarray(band["mean"], np.float64)
    if m.size == 0:
        return {"peak_x": math.nan, "falls_from": math.nan, "monotone_share": math.nan,
                "drop": Interval(math.nan, math.nan, math.nan, 0, 0.95, "t")}
    x = np.asarray(band["x"], np.float64)
    high = np.asarray(band["high"], np.float64)
    high = np.where(np.isfinite(high), high, m)
    peak = int(np.argmax(m))
    falls = len(m) - 1
    for j in range(peak, len(m)):
        run = np.minimum.accumulate(high[j:])  # run[i - j] = min(high[j..i])
        if all(m[i] <= run[i - 1 - j] for i in range(j + 1, len(m))):
            falls = j
            break
    share = float(np.mean(m[1:] < m[:-1])) if m.size > 1 else math.nan
    if curves is not None:
        drop = mean_interval(drops(curves), nan_policy="omit")
    else:
        drop = Interval(float(m[0] - m[-1]), math.nan, math.nan, 1, 0.95, "t")
    return {"peak_x": float(x[peak]), "falls_from": float(x[falls]), "monotone_share": share, "drop": drop}


def _event_changes(curve: dict, events: Sequence[dict], floor: float, gap: int,
                   control_types: Sequence[str] | None = None):
    """(relative change at each event: [(kind, value)], control values: float[]) of one curve
    probed at every token; token i's change is |L(k=i+1) - L(k=i)| / max(L(k=i), floor)."""
    k = np.asarray(curve["k"])
    if (k != np.arange(len(k))).any():
        raise ValueError("reflection statistics need curves probed at every token (k = 0, 1, ..., T)")
    r = relative_changes(curve["loss"], floor)
    T = r.size
    taken = np.zeros(T, bool)
    at = []
    for e in events:
        i = int(e["index"])
        if not 0 <= i < T:
            continue  # past the curve (e.g. after the leak cut)
        at.append((str(e["kind"]), float(r[i])))
        taken[max(0, i - gap):i + gap + 1] = True
    if control_types is not None:
        types = list(curve["types"])[:T]
        taken |= ~np.isin(np.asarray(types + [""] * (T - len(types)), dtype=object), list(control_types))
    return at, r[~taken]


def matched_reflection_changes(curves: Sequence[dict], events_per_curve: Sequence[Sequence[dict]], *,
                               floor: float = REFLECTION_FLOOR, gap: int = 2, level: float = 0.95,
                               resamples: int = 2000, control_types: Sequence[str] | None = None) -> dict:
    """E5 with matched controls. curves: probed at every token (k = 0..T); events_per_curve: per
    curve a list of {"index": trajectory token index of the event word, "kind": "corrected",
    "confirmed", "silent", "alternatively", ...}. The statistic is the paper's relative change
    caused by token i, |L_{i+1} - L_i| / max(L_i, floor) with L_i the L-hat after i tokens
    (floor `REFLECTION_FLOOR` = 0.05 nats by default: see there).

    The control of an event is its own trajectory: every token of the same curve farther than
    `gap` tokens from any event (same model, question, length and style; `gap` keeps the event's
    own neighbourhood out); with `control_types` only tokens of those types (the curve's "types",
    e.g. ("connective",): other structural words) count as controls. Per event the excess = change at the event minus the mean (or median)
    change of its curve's controls.

    Returns {"floor", "gap", "kinds": {kind: {"n", "mean", "median" (bootstrap), "control_mean",
    "control_median", "excess_mean" (t interval of excess over the curve's control mean),
    "excess_median" (bootstrap median of excess over the curve's control median)}},
    "paired": {"corrected_vs_confirmed", "silent_vs_corrected": t interval of the per-curve mean
    excess of the first kind minus the second, over curves that have both kinds; None without
    such curves}}. Intervals are `metareason.stats.Interval`s."""
    if len(curves) != len(events_per_curve):
        raise ValueError(f"one event list per curve: {len(curves)} curves, {len(events_per_curve)} event lists")
    if not floor > 0:
        raise ValueError(f"floor must be > 0, got {floor}")
    vals: dict[str, list[float]] = {}
    ctl_mean: dict[str, list[float]] = {}
    ctl_median: dict[str, list[float]] = {}
    per_curve: list[dict[str, list[float]]] = []
    for c, evs in zip(curves, events_per_curve):
        at, ctl = _event_changes(c, evs, floor, gap, control_types)
        cm = float(ctl.mean()) if ctl.size else math.nan
        cmed = float(np.median(ctl)) if ctl.size else math.nan
        mine: dict[str, list[float]] = {}
        for kind, v in at:
            vals.setdefault(kind, []).append(v)
            ctl_mean.setdefault(kind, []).append(cm)
            ctl_median.setdefault(kind, []).append(cmed)
            mine.setdefault(kind, []).append(v - cm)
        per_curve.append(mine)

    def boot_median(v):
        v = np.asarray(v, np.float64)
        return bootstrap_interval(v[np.isfinite(v)], np.median, level, resamples=resamples)

    kinds = {}
    for kind, v in sorted(vals.items()):
        v, cm, cmed = np.asarray(v), np.asarray(ctl_mean[kind]), np.asarray(ctl_median[kind])
        kinds[kind] = {"n": int(v.size), "mean": mean_interval(v, level, nan_policy="omit"),
                       "median": boot_median(v),
                       "control_mean": mean_interval(cm, level, nan_policy="omit"),
                       "control_median": float(np.nanmedian(cmed)) if np.isfinite(cmed).any() else math.nan,
                       "excess_mean": mean_interval(v - cm, level, nan_policy="omit"),
                       "excess_median": boot_median(v - cmed)}

    def paired(a, b):
        rows = [(np.mean(d[a]), np.mean(d[b])) for d in per_curve if d.get(a) and d.get(b)]
        if not rows:
            return None
        return paired_difference([r[0] for r in rows], [r[1] for r in rows], level, nan_policy="omit")

    return {"floor": float(floor), "gap": int(gap), "kinds": kinds,
            "paired": {"corrected_vs_confirmed": paired("corrected", "confirmed"),
                       "silent_vs_corrected": paired("silent", "corrected")}}
