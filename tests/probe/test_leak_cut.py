"""The answer-leak cut, truncated curves and the mean curve's shape (issue 18)."""

import math

import numpy as np
import pytest

from metareason.probe.analysis import curve_shape, cut_curves, drops, leak_cut, mean_band, trend_summary


def test_leak_cut_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(500):
        t = rng.integers(0, 4, rng.integers(0, 15)).tolist()
        a = rng.integers(0, 4, rng.integers(1, 4)).tolist()
        cut = leak_cut(t, a)
        # brute force: the shortest prefix p such that t[:p + len(a)] contains a
        hits = [i for i in range(len(t)) if t[i:i + len(a)] == a]
        assert cut == (hits[0] if hits else len(t))
        # the prefix before the cut never contains the answer; the cut itself starts it
        pre = t[:cut]
        assert not any(pre[i:i + len(a)] == a for i in range(len(pre)))
        if cut < len(t):
            assert t[cut:cut + len(a)] == a


def test_leak_cut_examples_and_errors():
    assert leak_cut([5, 1, 2, 9, 1, 2], [1, 2]) == 1
    assert leak_cut([5, 1, 3], [1, 2]) == 3
    assert leak_cut([], [1]) == 0
    with pytest.raises(ValueError, match="answer token"):
        leak_cut([1, 2], [])


def _curve(loss, types=None):
    T = len(loss) - 1
    k = np.arange(T + 1)
    return {"k": k.tolist(), "x": (k / T).tolist(), "loss": list(loss), "types": types or ["word"] * T}


def test_cut_curves_keeps_prefixes_up_to_the_cut():
    c = _curve([5.0, 4.0, 6.0, 3.0, 1.0], ["a", "b", "c", "d"])
    c["total"] = [10.0, 8.0, 12.0, 6.0, 2.0]
    (d,) = cut_curves([c], [2])
    assert d["k"] == [0, 1, 2] and d["loss"] == [5.0, 4.0, 6.0] and d["total"] == [10.0, 8.0, 12.0]
    assert d["types"] == ["a", "b"] and d["x"] == [0.0, 0.5, 1.0] and d["x_full"] == [0.0, 0.25, 0.5]
    assert d["cut"] == 2
    (z,) = cut_curves([c], [0])
    assert z["k"] == [0] and z["loss"] == [5.0]
    (full,) = cut_curves([c], [4])
    assert full["loss"] == c["loss"]
    # E2's statistics on cut curves: the uncut curve falls, the pre-leak prefix rises
    assert trend_summary([c])["share_last_below_first"] == 1.0
    assert trend_summary(cut_curves([c], [2]))["share_last_below_first"] == 0.0
    assert drops(cut_curves([c], [2]))[0] == -1.0
    with pytest.raises(ValueError, match="one cut per curve"):
        cut_curves([c], [1, 2])


def test_cut_curves_on_sparse_k():
    c = {"k": [0, 3, 6, 8], "x": [0, 3 / 8, 6 / 8, 1], "loss": [1, 2, 3, 4]}
    (d,) = cut_curves([c], [5])
    assert d["k"] == [0, 3] and d["loss"] == [1, 2] and d["x"] == [0, 0.6]


def test_curve_shape_on_known_curves():
    x = [0, 0.25, 0.5, 0.75, 1.0]
    # rises to 0.25, then falls monotonically
    band = {"x": x, "mean": [1, 3, 2, 1.5, 1], "low": [math.nan] * 5, "high": [math.nan] * 5}
    s = curve_shape(band)
    assert s["peak_x"] == 0.25 and s["falls_from"] == 0.25 and s["monotone_share"] == 0.75
    assert s["drop"].estimate == 0.0
    # a late bump after the peak: without a band the fall starts after it
    band = {"x": x, "mean": [4, 3, 2, 2.5, 1], "low": [0] * 5, "high": [4, 3, 2, 2.5, 1]}
    s = curve_shape(band)
    assert s["peak_x"] == 0 and s["falls_from"] == 0.75 and s["monotone_share"] == 0.75
    # ... a wide enough band tolerates the bump (2.5 <= high 2.6 of the point before)
    band["high"] = [4.5, 3.5, 2.6, 2.6, 1.2]
    assert curve_shape(band)["falls_from"] == 0.0
    # with curves, the drop is the t interval of first - last
    curves = [_curve([3, 2, 1]), _curve([4, 4, 2]), _curve([2, 1, 1])]
    s = curve_shape(mean_band(curves, points=3), curves)
    assert s["drop"].estimate == pytest.approx(5 / 3) and s["drop"].n == 3 and s["drop"].low < 5 / 3
    assert s["monotone_share"] == 1.0
    assert math.isnan(curve_shape({"x": [], "mean": [], "low": [], "high": []})["peak_x"])
