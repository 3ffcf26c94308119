"""Intervals, all of one type: means over items, percentile bootstrap (one or two levels), rates
and paired differences (numpy and scipy only; the bottom layer).

Every function returns an `Interval(estimate, low, high, n, level, method)`, a NamedTuple (so
`interval[:3]` is (estimate, low, high)); `Interval.as_dict()` is the form written to results
files.

- `mean_interval(values)`: Student-t interval of the mean of n items (questions, trajectories).
- `bootstrap_interval(values, statistic)`: percentile bootstrap of any statistic of a sample
  float[n], or, for float[G, m] (G seeds x m questions), the two-level bootstrap that resamples
  seeds, then questions within each resampled seed.
- `rate_interval(successes, n)`: Wilson score interval of a proportion (always inside [0, 1]).
- `paired_difference(a, b)`: interval of the mean of the per-item differences a_i - b_i (t or
  bootstrap), for two arms measured on the same items.

Bad input (no values, a level outside (0, 1), non-finite values unless `nan_policy="omit"`)
raises `StatsError`, a ValueError with a one-line message.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import numpy as np

__all__ = ["Interval", "StatsError", "mean_interval", "bootstrap_interval", "rate_interval", "paired_difference",
           "NAN_POLICIES"]

NAN_POLICIES = ("raise", "omit")


class StatsError(ValueError):
    """Bad input to an interval (one line, names what is wrong)."""


class Interval(NamedTuple):
    """A point estimate with a `level` confidence interval [low, high] from n values.

    estimate: the statistic of the sample (the mean; the proportion for a rate); low, high: the
    bounds (NaN when n values cannot give an interval, e.g. one value); n: the number of values
    (items; successes + failures for a rate; seeds x questions for the two-level bootstrap);
    level: e.g. 0.95; method: "t", "bootstrap", "two-level bootstrap", "wilson", or "paired "
    followed by the method of the differences."""

    estimate: float
    low: float
    high: float
    n: int
    level: float
    method: str

    def as_dict(self) -> dict[str, Any]:
        """{"mean", "low", "high", "n", "level", "method"}: the estimate is written under "mean",
        the key every results file of the project (eval, experiments, lab tables) uses for it."""
        return {"mean": self.estimate, "low": self.low, "high": self.high, "n": self.n, "level": self.level,
                "method": self.method}


def _check_level(level: float) -> float:
    if not (isinstance(level, (int, float, np.floating)) and 0 < level < 1):
        raise StatsError(f"level must be in (0, 1), e.g. 0.95, got {level!r}")
    return float(level)


def _values(values: Any, nan_policy: str, *, ndim: tuple[int, ...] = (1,), what: str = "values") -> np.ndarray:
    """values as float64 (1-D, or one of `ndim`), checked; with nan_policy "omit" the non-finite
    ones dropped (1-D only)."""
    if nan_policy not in NAN_POLICIES:
        raise StatsError(f"unknown nan_policy {nan_policy!r} (known: {', '.join(NAN_POLICIES)})")
    try:
        x = np.asarray(values, np.float64)
    except (TypeError, ValueError):
        raise StatsError(f"{what} must be numbers in a rectangular array") from None
    if x.ndim not in ndim:
        raise StatsError(f"{what} must be {' or '.join(f'{d}-D' for d in ndim)}, got shape {x.shape}")
    finite = np.isfinite(x)
    if nan_policy == "omit":
        return x[finite] if x.ndim == 1 else x
    if x.size == 0:
        raise StatsError(f"{what} are empty: an interval needs at least one value")
    if not finite.all():
        raise StatsError(f"{what} hold {int((~finite).sum())} non-finite number(s) (pass nan_policy='omit' to "
                         f"drop them)")
    return x


def _nothing(level: float, method: str) -> Interval:
    return Interval(math.nan, math.nan, math.nan, 0, level, method)


def mean_interval(values: Any, level: float = 0.95, *, nan_policy: str = "raise") -> Interval:
    """The Student-t interval of the mean of n items: mean +- t_{(1+level)/2, n-1} s / sqrt(n),
    s the sample standard deviation (ddof 1).

    values: float[n]. One value gives NaN bounds. nan_policy "omit": non-finite values are
    dropped and no value left gives an all-NaN interval with n = 0 (for reports over optional
    data); "raise" (default): an empty or non-finite input is an error."""
    level = _check_level(level)
    x = _values(values, nan_policy)
    if x.size == 0:
        return _nothing(level, "t")
    m = float(x.mean())
    if x.size < 2:
        return Interval(m, math.nan, math.nan, 1, level, "t")
    from scipy import stats

    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return Interval(m, m - half, m + half, int(x.size), level, "t")


def _statistic_of(statistic: Callable, sample: np.ndarray) -> np.ndarray:
    """statistic(sample, axis=-1), checked to reduce the last axis."""
    try:
        out = np.asarray(statistic(sample, axis=-1), np.float64)
    except TypeError:
        raise StatsError("statistic must take (values, axis=-1) like np.mean or np.median") from None
    if out.shape != sample.shape[:-1]:
        raise StatsError(f"statistic must reduce the last axis (float[B, n] -> float[B]), got shape {out.shape} "
                         f"from {sample.shape}")
    return out


def bootstrap_interval(values: Any, statistic: Callable = np.mean, level: float = 0.95, *, resamples: int = 10000,
                       seed: int = 0, nan_policy: str = "raise") -> Interval:
    """Percentile bootstrap interval of `statistic` (np.mean, np.median, or any function of
    (values, axis=-1)): the (1 - level)/2 and (1 + level)/2 quantiles of the statistic over
    `resamples` resamples drawn with `np.random.default_rng(seed)` (reproducible by seed).

    values float[n] (items): each resample draws n items with replacement. values float[G, m]
    (G seeds x m questions): the two-level bootstrap, each resample draws G seeds with replacement,
    then m questions with replacement within each drawn seed, and takes the statistic of the G x m
    values drawn. The estimate is the statistic of all the values. Fewer than two values give NaN
    bounds. nan_policy "omit" (1-D only): non-finite values dropped, none left gives NaN."""
    level = _check_level(level)
    if int(resamples) != resamples or resamples < 1:
        raise StatsError(f"resamples must be a whole number >= 1, got {resamples!r}")
    x = _values(values, nan_policy, ndim=(1, 2))
    if x.ndim == 2 and nan_policy == "omit":
        raise StatsError("nan_policy='omit' needs 1-D values (a seeds x questions grid cannot drop cells)")
    method = "bootstrap" if x.ndim == 1 else "two-level bootstrap"
    if x.size == 0:
        return _nothing(level, method)
    estimate = float(_statistic_of(statistic, x.reshape(1, -1))[0])
    if x.size < 2:
        return Interval(estimate, math.nan, math.nan, 1, level, method)
    rng = np.random.default_rng(seed)
    stats = np.empty(int(resamples))
    chunk = max(1, min(1000, 10_000_000 // x.size))  # bounds the memory to about 10^7 indices
    for s in range(0, int(resamples), chunk):
        b = min(chunk, int(resamples) - s)
        if x.ndim == 1:
            sample = x[rng.integers(0, x.size, (b, x.size))]
        else:
            G, m = x.shape
            seeds = rng.integers(0, G, (b, G))
            questions = rng.integers(0, m, (b, G, m))
            sample = x[seeds[..., None], questions].reshape(b, G * m)
        stats[s:s + b] = _statistic_of(statistic, sample)
    low, high = np.quantile(stats, [0.5 - level / 2, 0.5 + level / 2])
    return Interval(estimate, float(low), float(high), int(x.size), level, method)


def rate_interval(successes: int, n: int, level: float = 0.95) -> Interval:
    """The Wilson score interval of a proportion p = successes / n:

        (p + z^2 / 2n -+ z sqrt(p (1 - p) / n + z^2 / 4n^2)) / (1 + z^2 / n),  z = Phi^-1((1 + level) / 2)

    which contains p and lies inside [0, 1] (the bounds are held to both against rounding: at n
    successes the upper bound is exactly 1), with a positive width even at 0 or n successes."""
    level = _check_level(level)
    if (int(successes) != successes or int(n) != n or n < 1 or not 0 <= successes <= n):
        raise StatsError(f"a rate needs whole numbers 0 <= successes <= n and n >= 1, got {successes} of {n}")
    from scipy import stats

    k, n = int(successes), int(n)
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low, high = float(np.clip(min(centre - half, p), 0, 1)), float(np.clip(max(centre + half, p), 0, 1))
    return Interval(p, low, high, n, level, "wilson")


def paired_difference(a: Any, b: Any, level: float = 0.95, *, method: str = "t", resamples: int = 10000,
                      seed: int = 0, nan_policy: str = "raise") -> Interval:
    """The interval of the mean of the per-item differences d_i = a_i - b_i (a and b measured on
    the same items, in the same order): `mean_interval(d)` (method "t") or
    `bootstrap_interval(d)` (method "bootstrap"; a and b float[G, m] give the two-level one).
    nan_policy "omit" drops the items whose difference is not finite."""
    if method not in ("t", "bootstrap"):
        raise StatsError(f"unknown paired method {method!r} (known: t, bootstrap)")
    try:
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    except (TypeError, ValueError):
        raise StatsError("a and b must be numbers in rectangular arrays") from None
    if a.shape != b.shape:
        raise StatsError(f"paired values must have one shape, got a {a.shape} and b {b.shape}")
    d = a - b
    if method == "t":
        iv = mean_interval(d, level, nan_policy=nan_policy)
    else:
        iv = bootstrap_interval(d, np.mean, level, resamples=resamples, seed=seed, nan_policy=nan_policy)
    return iv._replace(method=f"paired {iv.method}")
