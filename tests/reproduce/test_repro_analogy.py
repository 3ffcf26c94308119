"""reproduce/analogy.py: the units a budget lists, and summarise on synthetic raw results."""

import numpy as np
import pytest

from metareason.reproduce.analogy import ANALOGY_THRESHOLD, summarise, trajectories, units
from metareason.reproduce.base import get_budget


def _raw(rng, drop, cos, n=6):
    a = np.linspace(-1, 1, 5)
    return {"drop": list(drop + 0.05 * rng.normal(size=n)), "cos_closest": list(cos + 0.02 * rng.normal(size=n)),
            "cos_pinv": list(0.01 + 0.01 * rng.normal(size=n)), "null_share": list(cos + 0 * rng.normal(size=n)),
            "logit_error_closest": [1e-5] * n, "t_closest": [2.0] * n,
            "plane": {"alphas": a.tolist(), "betas": a.tolist(), "surface": np.add.outer(a, a).tolist(),
                      "coords": [[0, 0], [0.5, 0.1], [1, 0]], "residual": [0, 0, 0], "k": [0, 3, 6]}}


def test_units_share_the_lab_model():
    b = get_budget("smoke")
    us = units(b)
    keys = [u.key for u in us]
    assert keys == ["lab-model/seed-0", "analogy/seed-0", "lab-model/seed-1", "analogy/seed-1"]
    assert us[1].needs == ("lab-model/seed-0",) and us[1].settings["trajectories"] == trajectories(b) == 2
    assert trajectories(get_budget("lab")) == 8


@pytest.mark.parametrize("drop,cos,want", [
    (0.8, 0.9, ("supported", "supported")),       # clearly descending, clearly aligned
    (-0.8, 0.1, ("contradicted", "contradicted")),  # ascending, nearly orthogonal
    (0.0, ANALOGY_THRESHOLD, ("inconclusive", "inconclusive")),  # straddling 0 / the threshold
])
def test_summarise_verdicts(tmp_path, drop, cos, want):
    b = get_budget("lab")
    rng = np.random.default_rng(0)
    raws = {f"analogy/seed-{s}": _raw(rng, drop, cos) for s in b.seeds}
    figs = tmp_path / "figures"
    e1, eq4 = summarise(b, raws, figs)
    assert (e1.verdict, eq4.verdict) == want
    assert e1.seeds == eq4.seeds == 3 and e1.n == 6
    d = np.asarray([raws[f"analogy/seed-{s}"]["drop"] for s in b.seeds])
    assert e1.measured.estimate == pytest.approx(d.mean())
    c = np.asarray([raws[f"analogy/seed-{s}"]["cos_closest"] for s in b.seeds])
    assert eq4.measured.estimate == pytest.approx(c.mean() - ANALOGY_THRESHOLD)
    assert eq4.extra["cos_pinv"]["mean"] == pytest.approx(
        np.mean([raws[f"analogy/seed-{s}"]["cos_pinv"] for s in b.seeds]))
    assert (tmp_path / e1.figure).exists() and e1.figure.startswith("figures/")


def test_nothing_measured_is_inconclusive(tmp_path):
    res = summarise(get_budget("smoke"), {}, tmp_path)
    assert [r.verdict for r in res] == ["inconclusive", "inconclusive"]
