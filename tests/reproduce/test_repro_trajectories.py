"""E2, E3, E5 of `metareason reproduce` summarised from synthetic raw results."""

import numpy as np
import pytest

from metareason.reproduce.base import get_budget
from metareason.reproduce.trajectories import (E2, E3, E5, EXPERIMENTS, collect, per_seed_grid, probe_key, probe_unit,
                                               summarise)
from metareason.stats import bootstrap_interval

BUDGET = get_budget("smoke")  # seeds (0, 1)


def _item(qid, loss, cut, events=None, sid=None):
    return {"id": sid or qid, "question": qid, "loss": [float(v) for v in loss], "cut": cut, "events": events}


def _raw(seed, *, fall=True, acc=0.8):
    rng = np.random.default_rng(seed)
    groups = {"correct": [], "twin": [], "own-correct": [], "own-incorrect": []}
    for q in range(6):
        T = 12
        noise = rng.normal(0, 0.01, T + 1)
        # correct: falls before the cut at 8 (when fall), then drops to ~0 after the answer leaks
        pre = np.linspace(3.0, 1.0 if fall else 3.5, 9)
        loss = np.concatenate([pre, [0.5, 0.1, 0.05, 0.05]]) + noise
        ev = [{"index": 3, "kind": "corrected"}, {"index": 6, "kind": "confirmed"}]
        loss[4] = loss[3] * 0.5  # the corrected reflection word at token 3 moves L-hat by half
        groups["correct"].append(_item(f"q{q}", loss, 8, ev))
        groups["twin"].append(_item(f"q{q}", 3.0 + noise, T, []))
        groups["own-correct"].append(_item(f"q{q}", loss, 8, sid=f"q{q}-s0"))
        groups["own-incorrect"].append(_item(f"q{q}", 3.0 + noise, T, sid=f"q{q}-s1"))
    return {"groups": groups, "sampled": 100, "sampled_correct": int(100 * acc), "twin_style": "incorrect-long",
            "questions": 6}


def test_per_seed_grid_truncates_to_the_smallest_seed():
    g = per_seed_grid([[1, 2, 3], [4, np.nan, 5], []])
    assert g.tolist() == [[1, 2], [4, 5]]


def test_summaries_on_synthetic_raws(tmp_path):
    raws = {probe_key(s): _raw(s) for s in BUDGET.seeds}
    (e2,) = summarise("E2", BUDGET, raws, tmp_path / "figures")
    # E2's measure: first minus last on the leak-cut curve = loss[0] - loss[8], two-level bootstrap
    want = np.stack([[it["loss"][0] - it["loss"][8] for it in raws[probe_key(s)]["groups"]["correct"]]
                     for s in BUDGET.seeds])
    ref = bootstrap_interval(want, resamples=4000)
    assert e2.measured.estimate == pytest.approx(ref.estimate) and e2.measured.low == pytest.approx(ref.low)
    assert e2.verdict == "supported" and e2.seeds == 2 and e2.n == 6
    assert e2.extra["uncut_drop"]["mean"] > e2.measured.estimate  # the uncut curve also counts the leak
    assert e2.extra["mean_cut_fraction"] == pytest.approx(8 / 12)
    assert e2.figure == "figures/e2_trajectories.png" and (tmp_path / e2.figure).exists()
    assert e2.extra["shape_cut"]["peak_x"] == 0.0
    (e3,) = summarise("E3", BUDGET, raws, tmp_path / "figures")
    d = np.stack([[c["loss"][0] - c["loss"][8] - (t["loss"][0] - t["loss"][-1]) for c, t in
                   zip(raws[probe_key(s)]["groups"]["correct"], raws[probe_key(s)]["groups"]["twin"])]
                  for s in BUDGET.seeds])
    assert e3.measured.estimate == pytest.approx(d.mean()) and e3.verdict == "supported"
    (e5,) = summarise("E5", BUDGET, raws, tmp_path / "figures")
    assert e5.verdict == "supported" and e5.n == 6  # the twins have no events: 6 curves per seed
    pooled = e5.extra["pooled"]["kinds"]
    assert pooled["corrected"]["n"] == 12 and pooled["corrected"]["mean"]["mean"] == pytest.approx(0.5, abs=0.02)
    assert e5.extra["pooled"]["paired"]["corrected_vs_confirmed"]["mean"] > 0.3


def test_rising_curves_contradict_and_chance_warns(tmp_path):
    raws = {probe_key(s): _raw(s, fall=False, acc=0.0) for s in BUDGET.seeds}
    (e2,) = E2.summarise(BUDGET, raws, tmp_path)
    assert e2.verdict == "contradicted" and "not shown above chance" in e2.note
    assert e2.extra["uncut_drop"]["mean"] > 0  # uncut, the leak makes it look like descent
    raws = {probe_key(s): _raw(s, acc=0.0) for s in BUDGET.seeds}
    (e2,) = E2.summarise(BUDGET, raws, tmp_path)
    assert e2.verdict == "inconclusive" and e2.measured.low > 0


def test_units_share_the_lab_model_and_probe_keys():
    for exp in EXPERIMENTS:
        keys = [u.key for u in exp.units(BUDGET)]
        assert keys == ["lab-model/seed-0", "lab-model/seed-1", "probe-trajectories/seed-0",
                        "probe-trajectories/seed-1"]
    u = probe_unit(BUDGET, 1)
    assert u.needs == ("lab-model/seed-1",) and u.settings["twin_style"] == "incorrect-long"
    with pytest.raises(ValueError, match="unknown twin style 'incorrect'"):
        collect(None, questions=1, samples=0, twin_style="incorrect")
    assert {e.name for e in (E2, E3, E5)} == {"E2", "E3", "E5"}


def test_collect_on_a_tiny_random_lab_model():
    import jax

    from metareason.format import LabFormat
    from metareason.model import init
    from metareason.model.presets import model_preset
    from metareason.probe.analysis import leak_cut
    from metareason.runs import LoadedModel
    from metareason.tasks.lab import LabConfig
    from metareason.reproduce.trajectories import collect

    lab = LabConfig(families=("arith",), style="long", difficulty=(1,), train_size=30, eval_size=3)
    config = model_preset("lab-tiny")
    model = LoadedModel.wrap(config, init(config, jax.random.key(0)), lab=lab)
    raw = collect(model, questions=2, samples=1, max_rounds=1)
    g = raw["groups"]
    assert len(g["correct"]) == 2 and len(g["twin"]) == 2 and raw["sampled"] == 2
    assert raw["sampled_correct"] == len(g["own-correct"]) <= 2
    fmt = LabFormat()
    from metareason.tasks.lab import lab_records
    recs = list(lab_records(lab, "test", twins=True))[:2]
    for it, tw, r in zip(g["correct"], g["twin"], recs):
        ex = fmt.probe_example(r["question"], r["twin"]["correct"], r["answer"])
        assert len(it["loss"]) == len(ex.trajectory) + 1 and it["question"] == str(r["id"])
        # the twins share every token before the slip, so L-hat (for the true answer) agrees there
        # (the slipped value's first digits may still agree: the curves part at or after the slip)
        slip = r["twin"]["slip"]
        np.testing.assert_allclose(it["loss"][:slip + 1], tw["loss"][:slip + 1], rtol=1e-5, atol=1e-5)
        n = min(len(it["loss"]), len(tw["loss"]))
        assert not np.allclose(it["loss"][slip + 1:n], tw["loss"][slip + 1:n])
        # the cut, from the text: where the answer's tokens first appear in the trajectory's tokens
        traj, ans = fmt.vocab.encode(r["trajectory"]), fmt.vocab.encode(r["answer"])
        assert it["cut"] == leak_cut(traj, ans) < len(traj)  # the long style states the answer before the end
