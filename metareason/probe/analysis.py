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

from metareason.stats import mean_interval, paired_difference

__all__ = ["ema", "on_grid", "mean_band", "spearman", "trend", "trend_summary", "relative_changes",
           "token_type_changes", "delimiter_effect"]


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


def token_type_changes(curves: Sequence[dict], *, offsets: Sequence[int] = (0,)) -> dict:
    """Relative change of L-hat caused by each trajectory token, grouped by token type, for
    curves probed at every token (k = 0..T). offsets: also the change `o` tokens after a token
    of each type (the neighbourhood of reflection words).

    Returns {type: {offset: (mean, low, high, n, median)}} plus "all" (every token), and "ratio":
    {type: mean change at offset 0 / mean change of all tokens}. The mean is the paper's
    statistic; it is dominated by tokens after which L-hat is already near 0 (a small
    denominator), so the median is reported beside it."""
    by: dict[str, dict[int, list[float]]] = {}
    everything: list[float] = []
    for c in curves:
        k = np.asarray(c["k"])
        T = len(c["types"])
        if len(k) != T + 1 or (k != np.arange(T + 1)).any():
            raise ValueError("token-type statistics need curves probed at every token (cut rule 'every', every=1)")
        r = relative_changes(c["loss"])
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
