"""metareason.stats against independent references: scipy's t distribution, the Wilson formula
written out here, the t interval as the large-sample limit of the bootstrap, and brute force."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from metareason.stats import (Interval, StatsError, bootstrap_interval, mean_interval, paired_difference,
                              rate_interval)


@pytest.mark.parametrize("n, level", [(2, 0.95), (4, 0.95), (25, 0.9), (300, 0.99)])
def test_mean_interval_is_scipys_t_interval(n, level):
    v = np.random.default_rng(n).normal(2.0, 3.0, n)
    iv = mean_interval(v, level)
    want = sps.t.interval(level, n - 1, loc=v.mean(), scale=sps.sem(v))
    assert isinstance(iv, Interval) and iv.method == "t" and iv.n == n and iv.level == level
    assert iv.estimate == pytest.approx(v.mean(), abs=1e-12)
    assert (iv.low, iv.high) == pytest.approx(want, abs=1e-12)
    # the textbook numbers: t_{0.975, 3} = 3.182446305284263
    x = np.array([1.0, 2.0, 3.0, 4.0])
    half = 3.182446305284263 * np.std(x, ddof=1) / 2
    np.testing.assert_allclose(mean_interval(x)[:3], [2.5, 2.5 - half, 2.5 + half], rtol=1e-12)


def test_mean_interval_edge_cases():
    one = mean_interval([3.0])
    assert one.estimate == 3.0 and math.isnan(one.low) and math.isnan(one.high) and one.n == 1
    assert mean_interval([5.0, 5.0, 5.0])[:3] == (5.0, 5.0, 5.0)
    # omit: drops NaN / inf, and nothing left is an all-NaN interval with n = 0
    a = mean_interval([1.0, np.nan, 2.0, np.inf, 3.0], nan_policy="omit")
    assert a == mean_interval([1.0, 2.0, 3.0])
    none = mean_interval([np.nan], nan_policy="omit")
    assert none.n == 0 and all(math.isnan(v) for v in none[:3])
    assert mean_interval([], nan_policy="omit").n == 0


def _wilson(k, n, z):
    """The Wilson score interval written out independently: the roots in p of (k - n p)^2 = z^2 n p (1 - p)."""
    a = n * n + z * z * n
    b = -(2 * k * n + z * z * n)
    c = k * k
    disc = math.sqrt(b * b - 4 * a * c)
    return (-b - disc) / (2 * a), (-b + disc) / (2 * a)


@pytest.mark.parametrize("k, n", [(0, 10), (10, 10), (8, 10), (1, 1), (0, 1), (3, 7), (50, 100), (0, 500)])
def test_rate_interval_is_wilson_and_stays_in_0_1(k, n):
    iv = rate_interval(k, n)
    lo, hi = _wilson(k, n, sps.norm.ppf(0.975))
    assert iv.estimate == k / n and iv.n == n and iv.method == "wilson"
    assert (iv.low, iv.high) == pytest.approx((lo, hi), abs=1e-12)
    assert 0.0 <= iv.low <= iv.estimate <= iv.high <= 1.0 and iv.high > iv.low
    if k == 0:
        assert iv.low == 0.0
    if k == n:
        assert iv.high == 1.0


def test_rate_interval_known_value():
    # the Wilson score interval of 8/10 at 95%: (0.4902, 0.9433)
    np.testing.assert_allclose(rate_interval(8, 10)[1:3], [0.49016, 0.94332], atol=1e-4)
    assert rate_interval(np.int64(3), np.int64(4)).estimate == 0.75


def test_bootstrap_of_the_mean_converges_to_the_t_interval():
    # n = 4000 normal values: the percentile bootstrap's bounds differ from the t interval's by the
    # Monte Carlo error of a 2.5% quantile of 10^4 resamples plus O(1/n) skewness terms; both are
    # well below 5% of the interval's width (measured over seeds 0-4: at most 2.1%)
    z = np.random.default_rng(0).normal(1.0, 2.0, 4000)
    t, b = mean_interval(z), bootstrap_interval(z, seed=3)
    width = t.high - t.low
    assert b.method == "bootstrap" and b.n == 4000 and b.estimate == pytest.approx(t.estimate, abs=1e-12)
    assert abs(b.low - t.low) < 0.05 * width and abs(b.high - t.high) < 0.05 * width
    # a small normal sample (the old lab test): within 10% of the width
    z = np.random.default_rng(0).normal(size=400)
    t, b = mean_interval(z), bootstrap_interval(z)
    assert abs(b.low - t.low) < 0.1 * (t.high - t.low) and abs(b.high - t.high) < 0.1 * (t.high - t.low)


def test_bootstrap_is_reproducible_by_seed_and_stays_in_the_support():
    v = np.random.default_rng(1).exponential(size=50)
    assert bootstrap_interval(v, seed=7) == bootstrap_interval(v, seed=7)
    assert bootstrap_interval(v, seed=7) != bootstrap_interval(v, seed=8)
    # a skewed, bounded sample: the t interval leaves the support, the bootstrap does not
    skew = np.r_[np.full(60, 1e-4), 0.5]
    assert mean_interval(skew).low < 0 < bootstrap_interval(skew).low
    # another statistic: the median's bootstrap against a brute-force reimplementation
    rng = np.random.default_rng(11)
    idx = rng.integers(0, v.size, (200, v.size))
    want = np.quantile(np.median(v[idx], axis=1), [0.025, 0.975])
    got = bootstrap_interval(v, np.median, resamples=200, seed=11)
    assert got.estimate == np.median(v) and got[1:3] == pytest.approx(tuple(want), abs=1e-12)


def test_two_level_bootstrap_over_seeds_and_questions():
    # brute force: draw seeds, then questions within each drawn seed, one resample at a time
    rng0 = np.random.default_rng(2)
    x = rng0.normal(size=(3, 5)) + np.array([[0.0], [1.0], [3.0]])  # 3 seeds x 5 questions
    R, seed = 300, 4
    got = bootstrap_interval(x, resamples=R, seed=seed)
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, 3, (R, 3))
    qs = rng.integers(0, 5, (R, 3, 5))
    means = [np.mean([x[seeds[r, g], qs[r, g, j]] for g in range(3) for j in range(5)]) for r in range(R)]
    assert got.method == "two-level bootstrap" and got.n == 15 and got.estimate == pytest.approx(x.mean())
    assert got[1:3] == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])), abs=1e-12)
    # seeds that disagree widen the interval beyond the one-level bootstrap over the 15 values
    flat = bootstrap_interval(x.ravel(), resamples=2000, seed=seed)
    two = bootstrap_interval(x, resamples=2000, seed=seed)
    assert two.high - two.low > 1.5 * (flat.high - flat.low)


@pytest.mark.parametrize("method", ["t", "bootstrap"])
def test_paired_difference_is_the_interval_of_the_differences(method):
    rng = np.random.default_rng(5)
    a = rng.normal(size=40)
    b = a - 0.3 + 0.1 * rng.normal(size=40)  # strongly correlated arms: pairing narrows the interval
    d = paired_difference(a, b, method=method, seed=2)
    ref = mean_interval(a - b) if method == "t" else bootstrap_interval(a - b, seed=2)
    assert d[:5] == ref[:5] and d.method == f"paired {ref.method}"
    assert d.estimate == pytest.approx(0.3, abs=0.05)
    unpaired = mean_interval(a).high - mean_interval(a).low
    assert d.high - d.low < 0.2 * unpaired


def test_as_dict():
    iv = rate_interval(3, 4)
    assert iv.as_dict() == {"mean": 0.75, "low": iv.low, "high": iv.high, "n": 4, "level": 0.95, "method": "wilson"}


@pytest.mark.parametrize("call, msg", [
    (lambda: mean_interval([]), "empty"),
    (lambda: bootstrap_interval([]), "empty"),
    (lambda: paired_difference([], []), "empty"),
    (lambda: mean_interval([1.0, 2.0], level=1.0), r"level must be in \(0, 1\)"),
    (lambda: mean_interval([1.0, 2.0], level=0), r"level must be in \(0, 1\)"),
    (lambda: bootstrap_interval([1.0, 2.0], level=95), r"level must be in \(0, 1\)"),
    (lambda: rate_interval(1, 2, level=-0.5), r"level must be in \(0, 1\)"),
    (lambda: rate_interval(3, 2), "0 <= successes <= n"),
    (lambda: rate_interval(0, 0), "n >= 1"),
    (lambda: mean_interval([1.0, np.nan]), "non-finite"),
    (lambda: mean_interval([[1.0, 2.0]]), "1-D"),
    (lambda: mean_interval([1.0], nan_policy="ignore"), "unknown nan_policy"),
    (lambda: paired_difference([1.0, 2.0], [1.0]), "one shape"),
    (lambda: paired_difference([1.0, 2.0], [1.0, 3.0], method="jackknife"), "unknown paired method"),
    (lambda: bootstrap_interval([1.0, 2.0], resamples=0), "resamples"),
    (lambda: bootstrap_interval([1.0, 2.0], statistic=lambda v, axis: v), "reduce the last axis"),
])
def test_bad_input_is_a_one_line_error(call, msg):
    with pytest.raises(StatsError, match=msg) as err:
        call()
    assert "\n" not in str(err.value) and isinstance(err.value, ValueError)
