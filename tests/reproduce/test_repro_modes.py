"""reproduce E4 / E12 on the two modes of one model: summarise on synthetic raws (no training),
the recommended two-mode lab, and the units' keys and dependencies."""

import numpy as np
import pytest

from metareason.reproduce.base import BUDGETS, Budget
from metareason.reproduce.modes import E4, E12, TWO_MODE_MIX, probe_unit, two_mode_lab
from metareason.stats import bootstrap_interval

BUDGET = Budget("test", seeds=(0, 1, 2), samples=1, ks=(1,), questions=20, probe_questions=20, scale=0.01)


def _raw(rng, q, *, think_nll, no_think_nll, no_delim_nll, acc):
    rows = {}
    for name, tokens, p, nll in [("no_think", 0, acc["no_think"], no_think_nll), ("think@4", 4, acc["think"] * 0.5, 2.0),
                                 ("think", 30, acc["think"], think_nll), ("summary", 6, acc["summary"], 1.0),
                                 ("think@summary", 6, acc["think"] * 0.6, 1.5)]:
        rows[name] = {"tokens": [tokens] * q, "correct": (rng.random(q) < p).astype(int).tolist(),
                      "nll": (nll + 0.1 * rng.standard_normal(q)).tolist()}
    return {"rows": rows, "budgets": [4], "n": q,
            "end_nll_no_delimiter": (no_delim_nll + 0.1 * rng.standard_normal(q)).tolist(),
            "ids": [f"q{i}" for i in range(q)]}


def _raws(kind, **kw):
    rng = np.random.default_rng(0)
    return {f"{kind}/seed-{s}": _raw(rng, 20, **kw) for s in BUDGET.seeds}


def test_summarise_supports_and_contradicts(tmp_path):
    acc = {"no_think": 0.2, "think": 0.9, "summary": 0.8}
    raws = _raws("e4", think_nll=0.5, no_think_nll=2.0, no_delim_nll=3.0, acc=acc)
    a, b = E4.summarise(BUDGET, raws, tmp_path / "figures")
    # the measured value is the two-level bootstrap of the pooled per-question differences
    d = np.stack([np.asarray(raws[f"e4/seed-{s}"]["rows"]["no_think"]["nll"])
                  - np.asarray(raws[f"e4/seed-{s}"]["rows"]["think"]["nll"]) for s in BUDGET.seeds])
    assert a.measured == bootstrap_interval(d) and a.measured.n == 60
    assert (a.verdict, b.verdict) == ("supported", "supported") and a.n == 20 and a.seeds == 3
    assert abs(b.measured.estimate - (0.5 - 3.0)) < 0.1
    assert (tmp_path / a.figure).is_file()
    (e12,) = E12.summarise(BUDGET, _raws("e12", think_nll=0.5, no_think_nll=2.0, no_delim_nll=3.0, acc=acc),
                           tmp_path / "figures")
    assert e12.verdict == "supported" and abs(e12.measured.estimate - 0.6) < 0.15
    assert [c["row"] for c in e12.extra["curve"]][:2] == ["no_think", "think@4"]
    assert (tmp_path / e12.figure).is_file()
    # reversed: no-thinking better than the summary, the delimiter raises the loss -> contradicted
    bad = {"no_think": 0.9, "think": 0.9, "summary": 0.1}
    (e12,) = E12.summarise(BUDGET, _raws("e12", think_nll=0.5, no_think_nll=2.0, no_delim_nll=0.1, acc=bad), tmp_path)
    assert e12.verdict == "contradicted"
    _, b = E4.summarise(BUDGET, _raws("e4", think_nll=0.5, no_think_nll=2.0, no_delim_nll=0.1, acc=bad), tmp_path)
    assert b.verdict == "contradicted"
    # a model at chance cannot support
    chance = {"no_think": 0.0, "think": 0.0, "summary": 0.0}
    a, _ = E4.summarise(BUDGET, _raws("e4", think_nll=0.5, no_think_nll=2.0, no_delim_nll=3.0, acc=chance), tmp_path)
    assert a.verdict == "inconclusive"


def test_units_and_two_mode_lab():
    units = E12.units(BUDGETS["smoke"])
    keys = [u.key for u in units]
    assert keys == ["lab-model/seed-0", "e12/seed-0", "lab-model/seed-1", "e12/seed-1"]
    assert units[1].needs == ("lab-model/seed-0",) and units[1].settings["budgets"][0] == 4
    assert probe_unit(BUDGETS["smoke"], 0, "e4").settings["summaries"] is False
    with pytest.raises(ValueError, match="kind"):
        probe_unit(BUDGETS["smoke"], 0, "e5")
    lab = two_mode_lab(3)
    assert lab.seed == 3 and lab.mode == "think" and lab.mix == TWO_MODE_MIX
