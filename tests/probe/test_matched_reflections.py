"""E5 against matched controls with a floored relative change (issue 18)."""

import math

import numpy as np
import pytest

from metareason.probe.analysis import matched_reflection_changes, token_type_changes


def _curve(loss):
    k = np.arange(len(loss))
    return {"k": k.tolist(), "x": (k / (len(loss) - 1)).tolist(), "loss": list(map(float, loss)),
            "types": ["word"] * (len(loss) - 1)}


def _brute(loss, i, floor):
    return abs(loss[i + 1] - loss[i]) / max(loss[i], floor)


def test_matched_changes_against_hand_computation():
    a = [2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 0.9, 0.9, 0.01, 0.01, 0.01]
    b = [3.0, 3.0, 3.0, 3.0, 1.5, 1.5, 1.5, 1.5, 1.2, 1.2, 1.2]
    ev_a = [{"index": 1, "kind": "corrected"}, {"index": 7, "kind": "confirmed"}]
    ev_b = [{"index": 3, "kind": "corrected"}, {"index": 7, "kind": "confirmed"}, {"index": 50, "kind": "silent"}]
    floor = 0.05
    res = matched_reflection_changes([_curve(a), _curve(b)], [ev_a, ev_b], floor=floor, gap=1, resamples=200)
    assert res["floor"] == floor
    k = res["kinds"]
    assert set(k) == {"corrected", "confirmed"}  # the silent event lies past the curve
    corr = [_brute(a, 1, floor), _brute(b, 3, floor)]
    conf = [_brute(a, 7, floor), _brute(b, 7, floor)]
    assert k["corrected"]["mean"].estimate == pytest.approx(np.mean(corr))
    assert k["corrected"]["median"].estimate == pytest.approx(np.median(corr))
    # controls: tokens farther than gap = 1 from any event
    ctl_a = [_brute(a, i, floor) for i in range(10) if min(abs(i - 1), abs(i - 7)) > 1]
    ctl_b = [_brute(b, i, floor) for i in range(10) if min(abs(i - 3), abs(i - 7)) > 1]
    excess = [corr[0] - np.mean(ctl_a), corr[1] - np.mean(ctl_b)]
    assert k["corrected"]["excess_mean"].estimate == pytest.approx(np.mean(excess))
    assert k["corrected"]["excess_median"].estimate == pytest.approx(
        np.median([corr[0] - np.median(ctl_a), corr[1] - np.median(ctl_b)]))
    pair = res["paired"]["corrected_vs_confirmed"]
    assert pair.estimate == pytest.approx(np.mean([corr[0] - conf[0], corr[1] - conf[1]]))
    assert res["paired"]["silent_vs_corrected"] is None
    # without the floor the 0.9 -> 0.01 token of `a` dominates; with it the change is 0.89 / 0.9
    assert _brute(a, 7, floor) == pytest.approx(0.89 / 0.9)


def test_floor_bounds_the_near_zero_tail():
    loss = [1.0, 0.5, 1e-6, 2e-6, 2e-6]
    res = matched_reflection_changes([_curve(loss)], [[{"index": 2, "kind": "corrected"}]], floor=0.05, gap=0)
    assert res["kinds"]["corrected"]["mean"].estimate == pytest.approx(1e-6 / 0.05)


def test_matched_needs_every_token_and_pairs():
    with pytest.raises(ValueError, match="every token"):
        matched_reflection_changes([{"k": [0, 2], "x": [0, 1], "loss": [1, 2]}], [[]])
    with pytest.raises(ValueError, match="one event list per curve"):
        matched_reflection_changes([_curve([1, 2])], [])


def test_token_type_changes_floor_keeps_old_default():
    c = _curve([1.0, 1e-4, 2e-4])
    old = token_type_changes([c])
    assert old["all"][0][0] == pytest.approx(np.mean([0.9999, 1.0]))
    new = token_type_changes([c], floor=0.05)
    assert new["all"][0][0] == pytest.approx(np.mean([0.9999, 1e-4 / 0.05]))
    assert math.isclose(new["all"][0][4], np.median([0.9999, 1e-4 / 0.05]))


def test_control_types_restrict_the_controls():
    loss = [1.0, 0.5, 0.5, 0.25, 0.25, 1.0]
    c = _curve(loss)
    c["types"] = ["word", "reflection", "connective", "word", "connective"]
    ev = [{"index": 1, "kind": "corrected"}]
    res = matched_reflection_changes([c], [ev], floor=0.05, gap=0, control_types=("connective",), resamples=10)
    ctl = [_brute(loss, 2, 0.05), _brute(loss, 4, 0.05)]  # tokens 2 and 4 are the connectives
    assert res["kinds"]["corrected"]["control_mean"].estimate == pytest.approx(np.mean(ctl))
    assert res["kinds"]["corrected"]["excess_mean"].estimate == pytest.approx(0.0 - np.mean(ctl))
