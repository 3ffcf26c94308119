"""The verdict rule (metareason.reproduce.base.verdict) on synthetic differences whose intervals come
from metareason.stats, checked against the rule written out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metareason.reproduce.base import VERDICTS, verdict
from metareason.stats import Interval, mean_interval, paired_difference


def _interval(values) -> Interval:
    return mean_interval(np.asarray(values, dtype=float))


@pytest.mark.parametrize("shift,expected", [(1.0, "supported"), (-1.0, "contradicted"), (0.0, "inconclusive")])
def test_paired_synthetic_differences(shift, expected):
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, size=200)
    b = a + shift + rng.normal(0.0, 0.3, size=200)  # b - a ~ shift +- 0.3: a 95% interval of width ~0.08
    diff = paired_difference(b, a)
    assert (diff.low > 0) == (shift > 0) and (diff.high < 0) == (shift < 0)
    assert verdict(diff, +1) == expected
    # the same data read with the opposite claim: supported and contradicted swap
    assert verdict(diff, -1) == {"supported": "contradicted", "contradicted": "supported"}.get(expected, expected)


def test_straddling_zero_is_inconclusive_and_bounds_are_strict():
    assert verdict(Interval(0.1, -0.01, 0.2, 10, 0.95, "t"), 1) == "inconclusive"
    assert verdict(Interval(-0.1, -0.2, 0.01, 10, 0.95, "t"), 1) == "inconclusive"
    # an interval touching 0 is not entirely on one side
    assert verdict(Interval(0.1, 0.0, 0.2, 10, 0.95, "t"), 1) == "inconclusive"
    assert verdict(Interval(-0.1, -0.2, 0.0, 10, 0.95, "t"), 1) == "inconclusive"
    assert verdict(Interval(0.1, 1e-12, 0.2, 10, 0.95, "t"), 1) == "supported"


def test_direction_minus_one():
    neg = _interval([-1.0, -1.2, -0.9, -1.1, -1.05])
    pos = _interval([1.0, 1.2, 0.9, 1.1, 1.05])
    assert neg.high < 0 < pos.low
    assert verdict(neg, -1) == "supported" and verdict(pos, -1) == "contradicted"
    assert verdict(neg, 1) == "contradicted" and verdict(pos, 1) == "supported"
    with pytest.raises(ValueError, match="direction must be"):
        verdict(pos, 0)


def test_at_chance_never_supports_but_can_contradict():
    pos, neg = _interval([1.0, 1.1, 0.9]), _interval([-1.0, -1.1, -0.9])
    assert verdict(pos, 1, at_chance=True) == "inconclusive"
    assert verdict(neg, 1, at_chance=True) == "contradicted"
    assert verdict(neg, -1, at_chance=True) == "inconclusive"
    assert verdict(pos, -1, at_chance=True) == "contradicted"


def test_nan_one_value_and_none_are_inconclusive():
    one = _interval([3.0])  # one value cannot give an interval
    assert math.isnan(one.low) and verdict(one, 1) == "inconclusive"
    assert verdict(Interval(0.5, float("nan"), 0.9, 5, 0.95, "t"), 1) == "inconclusive"
    assert verdict(Interval(0.5, 0.1, float("inf"), 5, 0.95, "t"), 1) == "inconclusive"
    assert verdict(None, 1) == "inconclusive" and verdict(None, -1) == "inconclusive"


def test_rule_matches_a_brute_force_reading_on_random_intervals():
    rng = np.random.default_rng(1)
    for _ in range(500):
        lo, hi = np.sort(rng.normal(0, 1, size=2))
        d = int(rng.choice([1, -1]))
        chance = bool(rng.integers(2))
        iv = Interval((lo + hi) / 2, float(lo), float(hi), 10, 0.95, "t")
        side = [x * d for x in (lo, hi)]
        expected = ("contradicted" if max(side) < 0 else
                    "supported" if min(side) > 0 and not chance else "inconclusive")
        got = verdict(iv, d, at_chance=chance)
        assert got == expected and got in VERDICTS
