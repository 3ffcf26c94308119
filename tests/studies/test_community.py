"""E8 harness (metareason.studies.community): tiny random Hugging Face Qwen2 folders evaluated and
probed on one data file; the table's numbers against independent computations (Pass@k from the
samples by math.comb, the probe's curve against the slow per-prefix reference, Spearman by scipy)."""

import json
import math

import numpy as np
import pytest
import scipy.stats

from metareason.studies.community import (CommunityError, ModelEntry, check_models, compare_models, model_summary,
                                          paradigm_difference, probe_summary, write_random_hf_model)


def _pass_ref(n, c, k):
    return 1 - math.comb(n - c, k) / math.comb(n, k)


def _mg_ref(n, c, k):
    """(2/k) sum_{i=ceil(k/2)+1}^{k} P(X >= i), X hypergeometric (k draws of n with c correct)."""
    def at_least(i):
        return sum(math.comb(c, j) * math.comb(n - c, k - j) for j in range(i, k + 1)) / math.comb(n, k)
    return 2 / k * sum(at_least(i) for i in range(math.ceil(k / 2) + 1, k + 1))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from metareason.tasks.lab import LabConfig, lab_records

    tmp = tmp_path_factory.mktemp("community")
    recs = list(lab_records(LabConfig(families=("arith",), style="long", difficulty=(1, 1), train_size=10,
                                      eval_size=40, seed=0), "test"))
    recs = [r for r in recs if len(r["answer"]) == 1][:3]  # one-digit answers: a random model hits some
    data = tmp / "data.jsonl"
    data.write_text("".join(json.dumps({k: r[k] for k in ("id", "question", "answer", "trajectory")}) + "\n"
                            for r in recs))
    corpus = [r["question"] + " " + r["trajectory"] for r in recs]
    models = [ModelEntry(f"m{i}", write_random_hf_model(tmp / f"m{i}", corpus, seed=i), p)
              for i, p in enumerate(["off-policy", "on-policy", "on-policy"])]
    res = compare_models(models, str(data), tmp / "out", n=8, ks=(1, 2, 8), probe_questions=2, max_new_tokens=6)
    return tmp, data, models, recs, res


def test_table_matches_samples_by_hand(run):
    tmp, data, models, recs, res = run
    per_model = {}
    for m in models:
        rows = [json.loads(line) for line in (tmp / "out" / "models" / m.name / "eval" / "samples.jsonl")
                .read_text().splitlines()]
        assert [r["id"] for r in rows] == [r["id"] for r in recs]
        row = res["models"][m.name]
        assert row["paradigm"] == m.paradigm
        for k in (1, 2, 8):
            ref = {r["id"]: _pass_ref(len(r["correct"]), sum(r["correct"]), k) for r in rows}
            assert row["per_question"][f"pass@{k}"] == pytest.approx(ref, abs=1e-12)
            assert row["eval"][f"pass@{k}"]["mean"] == pytest.approx(np.mean(list(ref.values())), abs=1e-12)
            assert 0 <= row["eval"][f"pass@{k}"]["low"] <= row["eval"][f"pass@{k}"]["high"] <= 1
            mg = [_mg_ref(len(r["correct"]), sum(r["correct"]), k) for r in rows]
            assert row["eval"][f"mg-pass@{k}"]["mean"] == pytest.approx(np.mean(mg), abs=1e-12)
        per_model[m.name] = np.array([_pass_ref(8, sum(r["correct"]), 8) for r in rows])
    # off-policy minus the mean of the two on-policy models, paired per question
    diff = per_model["m0"] - (per_model["m1"] + per_model["m2"]) / 2
    assert res["off_minus_on"]["pass@8"]["mean"] == pytest.approx(diff.mean(), abs=1e-12)
    table = (tmp / "out" / "table.md").read_text()
    assert "| m0 | off-policy | 3 |" in table and "| m2 | on-policy | 3 |" in table
    assert (tmp / "out" / "fig4_community.png").stat().st_size > 1000
    saved = json.loads((tmp / "out" / "comparison.json").read_text())
    assert saved["models"]["m1"]["eval"]["pass@2"] == res["models"]["m1"]["eval"]["pass@2"]


def test_probe_curve_and_summary_by_hand(run):
    from metareason.probe.loss import ProbeBatch, answer_loss_per_prefix
    from metareason.runs import load

    tmp, data, models, recs, res = run
    curves = [json.loads(line) for line in (tmp / "out" / "models" / "m1" / "probe" / "curves.jsonl")
              .read_text().splitlines()]
    curves = [c for c in curves if c["group"] == "correct (reference)"]
    assert len(curves) == 2 and res["models"]["m1"]["probe"]["group"] == "correct (reference)"
    # one curve against the slow reference: one forward pass per prefix
    c = next(c for c in curves if c["id"] == recs[0]["id"])
    model = load(models[1].path)
    ex = model.format.probe_example(recs[0]["question"], recs[0]["trajectory"], recs[0]["answer"])
    P = len(ex.prompt)
    ks = np.asarray(c["k"])[::7]  # every 7th cut keeps the reference fast
    batch = ProbeBatch(np.concatenate([ex.prompt, ex.trajectory])[None].astype(np.int32),
                       np.asarray([P + len(ex.trajectory)], np.int32), (P + ks)[None].astype(np.int32),
                       np.asarray(ex.probe, np.int32)[None], np.asarray(ex.targets)[None])
    ref = np.asarray(answer_loss_per_prefix(model.params, batch, config=model.config).mean)[0]
    np.testing.assert_allclose(np.asarray(c["loss"])[::7], ref, rtol=2e-4, atol=2e-5)
    # the summary: Spearman by scipy, drop = first - last
    summ = res["models"]["m1"]["probe"]
    rho = [scipy.stats.spearmanr(c["k"], c["loss"]).statistic for c in curves]
    assert summ["falling"]["mean"] == pytest.approx(np.mean(np.asarray(rho) < 0))
    assert summ["drop"]["mean"] == pytest.approx(np.mean([c["loss"][0] - c["loss"][-1] for c in curves]), rel=1e-9)


def test_rerun_reuses_and_other_settings_refused(run):
    from metareason.runs.provenance import ProvenanceError

    tmp, data, models, recs, res = run
    curves = tmp / "out" / "models" / "m0" / "probe" / "curves.jsonl"
    samples = tmp / "out" / "models" / "m0" / "eval" / "samples.jsonl"
    before = (curves.stat().st_mtime_ns, samples.read_bytes())
    again = compare_models(models[:2], str(data), tmp / "out", n=8, ks=(1, 2), probe_questions=2, max_new_tokens=6)
    assert curves.stat().st_mtime_ns == before[0] and samples.read_bytes() == before[1]
    assert again["models"]["m0"]["eval"]["pass@2"] == res["models"]["m0"]["eval"]["pass@2"]
    with pytest.raises(ProvenanceError, match="max_new_tokens"):
        compare_models(models[:2], str(data), tmp / "out", n=8, ks=(1, 2), probe_questions=2, max_new_tokens=7)


def test_model_summary_on_written_samples(tmp_path):
    """Known correctness counts (not a model's): Pass@k and mG-Pass@k by math.comb, curves by hand."""
    (tmp_path / "eval").mkdir()
    (tmp_path / "probe").mkdir()
    counts = [0, 3, 8, 5, 1]
    rows = [{"dataset": "d.jsonl", "id": f"q{i}", "correct": [j < c for j in range(8)], "lengths": [10] * 8}
            for i, c in enumerate(counts)]
    rows.append({"dataset": "other", "id": "x", "correct": [True] * 8, "lengths": [1] * 8})
    (tmp_path / "eval" / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    curves = [{"group": "correct (reference)", "k": [0, 1, 2, 3], "loss": [3.0, 2.0, 2.5, 1.0]},
              {"group": "correct (reference)", "k": [0, 1, 2], "loss": [1.0, 1.5, 2.0]},
              {"group": "correct (reference)", "k": [0, 1, 2], "loss": [2.0, 1.0, 0.5]},
              {"group": "incorrect (generations)", "k": [0, 1], "loss": [9.0, 0.0]}]
    (tmp_path / "probe" / "curves.jsonl").write_text("".join(json.dumps(c) + "\n" for c in curves))
    s = model_summary(tmp_path / "eval", tmp_path / "probe", "d.jsonl", (1, 4, 8))
    assert s["eval"]["questions"] == 5
    for k in (1, 4, 8):
        assert s["eval"][f"pass@{k}"]["mean"] == pytest.approx(np.mean([_pass_ref(8, c, k) for c in counts]))
        assert s["eval"][f"mg-pass@{k}"]["mean"] == pytest.approx(np.mean([_mg_ref(8, c, k) for c in counts]))
    assert s["eval"]["pass@8"]["mean"] == pytest.approx(0.8)
    assert s["eval"]["pass@1"]["mean"] == pytest.approx(17 / 40)
    p = s["probe"]
    assert p["n"] == 3 and p["falling"]["mean"] == pytest.approx(2 / 3) and 0 <= p["falling"]["low"]
    drops = [2.0, -1.0, 1.5]
    assert p["drop"]["mean"] == pytest.approx(np.mean(drops))
    half = scipy.stats.t.ppf(0.975, 2) * np.std(drops, ddof=1) / np.sqrt(3)
    assert p["drop"]["high"] - p["drop"]["mean"] == pytest.approx(half)


def test_paradigm_difference_pairs_shared_questions():
    rows = {"a": {"paradigm": "off-policy", "per_question": {"pass@1": {"q1": 1.0, "q2": 0.5, "q3": 0.0}}},
            "b": {"paradigm": "off-policy", "per_question": {"pass@1": {"q1": 0.0, "q2": 0.5}}},
            "c": {"paradigm": "on-policy", "per_question": {"pass@1": {"q1": 0.25, "q2": 0.0, "q3": 1.0}}},
            "d": {"paradigm": "base", "per_question": {"pass@1": {"q1": 9.0, "q2": 9.0}}}}
    iv = paradigm_difference(rows, "pass@1")
    assert iv.n == 2 and iv.estimate == pytest.approx(((0.5 - 0.25) + (0.5 - 0.0)) / 2)
    assert paradigm_difference({"a": rows["a"], "d": rows["d"]}, "pass@1") is None
    assert probe_summary([])["n"] == 0


def test_bad_input_one_line(tmp_path):
    good = tmp_path / "m"
    good.mkdir()
    (good / "config.json").write_text("{}")
    cases = [([], "no models"),
             ([ModelEntry("a", good, "rl")], "unknown paradigm 'rl'"),
             ([ModelEntry("a", tmp_path / "nope", "base")], "is not a directory"),
             ([ModelEntry("a", tmp_path, "base")], "has no config.json"),
             ([ModelEntry("a", good, "base"), ModelEntry("a", good, "on-policy")], "given twice"),
             ([ModelEntry("a/b", good, "base")], "model name")]
    for models, msg in cases:
        with pytest.raises(CommunityError, match=msg) as e:
            check_models(models)
        assert "\n" not in str(e.value)
    with pytest.raises(CommunityError, match="NAME:PARADIGM:PATH"):
        ModelEntry.parse("only-a-name")
    assert ModelEntry.parse("x:base:/a:b") == ModelEntry("x", __import__("pathlib").Path("/a:b"), "base")
    with pytest.raises(CommunityError, match="is not a file"):
        compare_models([ModelEntry("a", good, "base")], str(tmp_path / "missing.jsonl"), tmp_path / "out")
    with pytest.raises(CommunityError, match="every k"):
        compare_models([ModelEntry("a", good, "base")], "champ", tmp_path / "out", n=2, ks=(4,))


def test_command_line_bad_model_is_one_line(tmp_path, capsys):
    from metareason.studies.community import main

    assert main(["--model", f"a:rl:{tmp_path}", "--data", "x.jsonl", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: model a: unknown paradigm 'rl' (known: off-policy, on-policy, base)"
