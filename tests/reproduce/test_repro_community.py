"""E8 in `metareason reproduce` (metareason.reproduce.community): the verdict rule on synthetic raw
results (by hand: the paired per-question difference, the margin), the full budget's commands, and
one unit run end to end on tiny random models."""

import dataclasses
import math

import numpy as np
import pytest

from metareason.reproduce import community as e8
from metareason.reproduce.base import get_budget
from metareason.stats import bootstrap_interval


def _raw(off, on, *, random=False, metric="pass@8"):
    """A unit's raw result: off / on are lists of per-model per-question values."""
    models = {}
    for p, vals in (("off-policy", off), ("on-policy", on)):
        for j, v in enumerate(vals):
            models[f"{p}-{j}"] = {"paradigm": p, "path": "x", "probe": {"drop": {"mean": 0.5}, "falling": {"mean": 1.0}},
                                  "per_question": {metric: {f"q{i}": float(x) for i, x in enumerate(v)}}}
    models["base-0"] = {"paradigm": "base", "path": "x", "probe": None,
                        "per_question": {metric: {f"q{i}": 0.0 for i in range(len(off[0]))}}}
    return {"random_models": random, "models": models}


def test_rule_on_synthetic_raws(tmp_path):
    budget = get_budget("lab")
    assert e8.claim_k(budget) == 8 and e8.claim_k(get_budget("smoke")) == 4
    rng = np.random.default_rng(0)
    q = 40
    # off-policy equal to on-policy up to small noise: not worse -> supported
    base = rng.uniform(0.2, 0.8, (3, q))
    raws = {f"e8-community/seed-{s}": _raw([base[s] + 0.01, base[s] - 0.01], [base[s]]) for s in range(3)}
    raws["other/unit"] = {"ignored": True}
    [r] = e8.summarise(budget, raws, tmp_path / "figures")
    # by hand: per question mean(off) - mean(on) = 0 exactly here
    assert r.measured.estimate == pytest.approx(0.0, abs=1e-12)
    assert r.verdict == "supported" and r.n == q and r.seeds == 3
    assert r.figure == "figures/e8_community.png" and (tmp_path / r.figure).is_file()  # relative to the report
    # off-policy 30 points worse on every question: contradicted
    raws = {f"e8-community/seed-{s}": _raw([base[s] - 0.3], [base[s]]) for s in range(3)}
    [r] = e8.summarise(budget, raws, tmp_path)
    assert r.measured.estimate == pytest.approx(-0.3) and r.verdict == "contradicted"
    # noisy differences around -margin: inconclusive; interval equals the two-level bootstrap of the grid
    noise = rng.normal(-e8.MARGIN, 0.3, (3, q))
    raws = {f"e8-community/seed-{s}": _raw([base[s] + noise[s], base[s] + noise[s]], [base[s]]) for s in range(3)}
    [r] = e8.summarise(budget, raws, tmp_path)
    order = [int(i[1:]) for i in sorted(f"q{i}" for i in range(q))]  # questions in id order, as summarise pairs them
    ref = bootstrap_interval(noise[:, order])
    assert r.measured.estimate == pytest.approx(noise.mean())
    assert r.measured.low == pytest.approx(ref.low, abs=1e-9) and r.measured.high == pytest.approx(ref.high, abs=1e-9)
    assert r.verdict == "inconclusive"
    assert r.extra["difference_plus_margin"]["low"] == pytest.approx(ref.low + e8.MARGIN)


def test_random_models_never_support(tmp_path):
    budget = get_budget("smoke")
    raws = {f"e8-community/seed-{s}": _raw([[0.0] * 6], [[0.0] * 6], random=True, metric="pass@4") for s in (0, 1)}
    [r] = e8.summarise(budget, raws, tmp_path)
    assert r.verdict == "inconclusive" and r.note.startswith(e8.RANDOM_NOTE)
    assert r.measured.estimate == 0 and r.n == 6 and r.seeds == 2
    # same numbers from real models that all score 0: still at chance
    raws = {k: dict(v, random_models=False) for k, v in raws.items()}
    [r] = e8.summarise(budget, raws, tmp_path)
    assert r.verdict == "inconclusive" and "= 0 on every question" in r.note


def test_full_budget_lists_commands(tmp_path):
    [unit] = e8.community_units(get_budget("full"))
    assert unit.key == "e8-community/full"
    raw = unit.run(tmp_path, {})
    assert raw["missing"] and "python -m metareason.studies.community" in raw["commands"][0]
    for m in e8.FULL_MODELS:
        assert f"{m.name}:{m.paradigm}:{m.path}" in raw["commands"][0]
    [r] = e8.summarise(get_budget("full"), {unit.key: raw}, tmp_path)
    assert r.measured is None and r.verdict == "inconclusive" and r.extra["commands"] == raw["commands"]
    assert {m.paradigm for m in e8.FULL_MODELS} == {"off-policy", "on-policy", "base"}


def test_smoke_unit_runs_on_random_models(tmp_path):
    tiny = dataclasses.replace(get_budget("smoke"), seeds=(3,), samples=2, ks=(1, 2), questions=2, probe_questions=2)
    units = e8.community_units(tiny)
    assert [u.key for u in units] == ["e8-community/seed-3"]
    raw = units[0].run(tmp_path / "u", {})
    assert raw["random_models"] is True
    assert sorted(m["paradigm"] for m in raw["models"].values()) == ["off-policy"] * 2 + ["on-policy"] * 2
    for m in raw["models"].values():
        assert len(m["per_question"]["pass@2"]) == 2 and m["probe"]["n"] == 2
        assert all(0 <= v <= 1 for v in m["per_question"]["pass@2"].values())
    again = units[0].run(tmp_path / "u", {})  # resumes: the same models, the same numbers
    assert again["models"] == raw["models"]
    [r] = e8.summarise(tiny, {units[0].key: raw}, tmp_path)
    assert r.verdict == "inconclusive" and r.seeds == 1 and r.n == 2 and not math.isnan(r.measured.estimate)
