"""Analyses against independent references (scipy, closed forms, hand-made curves)."""

import math

import numpy as np
import pytest
from scipy import stats

from metareason.probe.analysis import (delimiter_effect, ema, mean_band, relative_changes, spearman, token_type_changes,
                                       trend_summary)
from metareason.stats import mean_interval


def test_ema_closed_form():
    v = np.array([4.0, 2.0, 8.0, 0.0])
    a = 0.25
    want = [4.0, 0.25 * 2 + 0.75 * 4, None, None]
    want[2] = 0.25 * 8 + 0.75 * want[1]
    want[3] = 0.75 * want[2]
    np.testing.assert_allclose(ema(v, a), want)
    # a constant sequence is a fixed point; alpha 1 is the identity
    np.testing.assert_allclose(ema(np.full(7, 3.0), 0.01), 3.0)
    np.testing.assert_allclose(ema(v, 1.0), v)
    with pytest.raises(ValueError, match="alpha"):
        ema(v, 0.0)


@pytest.mark.parametrize("seed", range(5))
def test_spearman_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, 40).astype(float)  # many ties
    y = 0.3 * x + rng.normal(size=40)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert math.isnan(spearman(x, np.ones(40)))


def test_mean_ci_matches_scipy_t_interval():
    v = np.random.default_rng(0).normal(2.0, 3.0, 25)
    m, lo, hi = mean_interval(v)[:3]  # was probe.analysis.mean_ci (moved to metareason.stats)
    want = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    assert m == pytest.approx(v.mean()) and (lo, hi) == pytest.approx(want)


def curve(loss, types=None):
    k = np.arange(len(loss))
    return {"k": k.tolist(), "x": (k / (len(loss) - 1)).tolist(), "loss": list(loss),
            "types": types or ["word"] * (len(loss) - 1)}


def test_trend_summary_and_band():
    falling = [curve([5, 4, 3, 2, 1]), curve([3, 3.5, 2, 1, 0.5])]
    rising = [curve([1, 2, 3, 2.5, 4])]
    s = trend_summary(falling + rising)
    assert s["n"] == 3 and s["share_falling"] == pytest.approx(2 / 3)
    assert s["share_last_below_first"] == pytest.approx(2 / 3)
    band = mean_band(falling, points=5)
    np.testing.assert_allclose(band["mean"], [4, 3.75, 2.5, 1.5, 0.75])
    assert all(lo <= m <= hi for lo, m, hi in zip(band["low"], band["mean"], band["high"]))


def test_token_type_changes_by_hand():
    # token 1 (a reflection word) halves the loss; the others change it by 10%
    c = curve([1.0, 0.9, 0.45, 0.405], ["word", "reflection", "word"])
    r = relative_changes(c["loss"])
    np.testing.assert_allclose(r, [0.1, 0.5, 0.1])
    out = token_type_changes([c], offsets=(0, 1))
    assert out["reflection"][0][0] == pytest.approx(0.5)
    assert out["reflection"][1][0] == pytest.approx(0.1)   # the token after it
    assert out["all"][0][0] == pytest.approx(0.7 / 3)
    assert out["ratio"]["reflection"] == pytest.approx(0.5 / (0.7 / 3))
    with pytest.raises(ValueError, match="every token"):
        token_type_changes([dict(c, k=[0, 2, 3, 4])])


def test_delimiter_effect_pairs():
    without = [curve([3, 2, 1]), curve([4, 2, 2])]
    with_d = [curve([2, 1, 0.5]), curve([3, 1, 1])]
    e = delimiter_effect(without, with_d)
    assert e["start"][0] == pytest.approx(-1.0) and e["end"][0] == pytest.approx(-0.75)
