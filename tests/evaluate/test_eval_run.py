"""`metareason eval` end to end: a lab model and a Hugging Face model; the table's Pass@k equals
brute-force enumeration over the written samples; a resumed run equals an uninterrupted one."""

import json

import jax
import numpy as np
import pytest

from metareason.evaluate.run import EvalConfig, EvalError, run_eval
from metareason.model import init
from metareason.tasks.lab import LabConfig
from metareason.model.presets import model_preset
from metareason.runs import LoadedModel, ProvenanceError
from reference import tiny_hf_dir, tree_hash
from test_passk import brute_mg_pass, brute_pass

LAB = LabConfig(families=("arith", "pointer"), difficulty=(1,), train_size=30, eval_size=3)


@pytest.fixture(scope="module")
def lab_model():
    config = model_preset("lab-tiny")
    return LoadedModel.wrap(config, init(config, jax.random.key(0)), lab=LAB)


def _rows(out):
    return [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]


def test_lab_eval_rows_metrics_and_resume(tmp_path, lab_model):
    cfg = EvalConfig(model=tmp_path, data=("lab:test", "lab:test:linear"), out=tmp_path / "a", n=4, k=(1, 2, 4),
                     max_new_tokens=24, batch_size=8)
    res = run_eval(cfg, model=lab_model)
    rows = _rows(tmp_path / "a")
    assert len(rows) == 6 + 3 and all(len(r["correct"]) == 4 == len(r["outputs"]) for r in rows)
    assert {r["family"] for r in rows if r["dataset"] == "lab:test:linear"} == {"linear"}  # a family never trained
    for name, d in res["datasets"].items():
        mine = [r for r in rows if r["dataset"] == name]
        for k in (1, 2, 4):
            want = np.mean([brute_pass(4, sum(r["correct"]), k) for r in mine])
            assert d[f"pass@{k}"]["mean"] == pytest.approx(want)
            assert d[f"mg-pass@{k}"]["mean"] == pytest.approx(np.mean([brute_mg_pass(4, sum(r["correct"]), k)
                                                                       for r in mine]))
        assert d["reward"]["mean"] == pytest.approx(np.mean([np.mean(r["rewards"]) for r in mine]))
    assert "| lab:test | 6 |" in (tmp_path / "a" / "table.md").read_text()
    # resume: drop two rows (one in the middle of a batch) and a half-written line
    b = tmp_path / "b"
    b.mkdir()
    (b / "provenance.json").write_bytes((tmp_path / "a" / "provenance.json").read_bytes())  # a's, moved
    kept = [r for i, r in enumerate(rows) if i not in (1, 4)]
    (b / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept) + '{"dataset": "lab:te')
    run_eval(EvalConfig(**{**cfg.__dict__, "out": b}), model=lab_model)
    key = lambda r: (r["dataset"], r["id"])  # noqa: E731
    assert sorted(_rows(b), key=key) == sorted(rows, key=key)


def test_lab_model_reads_a_file_of_lab_questions(tmp_path, lab_model):
    run_eval(EvalConfig(model=tmp_path, data=("lab:test",), out=tmp_path / "a", n=2, k=(1,), max_new_tokens=8,
                        batch_size=4), model=lab_model)
    from metareason.tasks.lab import lab_records
    f = tmp_path / "q.jsonl"
    f.write_text("".join(json.dumps({k: r[k] for k in ("id", "question", "answer", "family")}) + "\n"
                         for r in lab_records(LAB, "test")))
    run_eval(EvalConfig(model=tmp_path, data=(str(f),), out=tmp_path / "b", n=2, k=(1,), max_new_tokens=8,
                        batch_size=4), model=lab_model)
    a, b = _rows(tmp_path / "a"), _rows(tmp_path / "b")
    assert [r["id"] for r in a] == [r["id"] for r in b]
    assert [r["outputs"] for r in a] == [r["outputs"] for r in b]   # same questions, same key: same samples


def test_hf_eval_scores_garbage_as_wrong_format(tmp_path):
    model_dir, _, _, data = tiny_hf_dir(tmp_path)
    res = run_eval(EvalConfig(model=model_dir, data=(str(data),), out=tmp_path / "out", n=2, k=(1, 2),
                              max_new_tokens=16, batch_size=4, temperature=1.0))
    rows = _rows(tmp_path / "out")
    assert rows and all(set(r["rewards"]) <= {-1.0, -0.5, 0.0, 1.0} for r in rows)
    assert res["datasets"][str(data)]["questions"] == len(rows)


@pytest.mark.parametrize("kw, msg", [(dict(k=(9,)), r"every k must be in \[1, n=8\]"),
                                     (dict(n=4, k=(2,), batch_size=2), "must hold the n=4 samples"),
                                     (dict(data=()), "at least one dataset")])
def test_bad_config(tmp_path, kw, msg):
    with pytest.raises(EvalError, match=msg):
        EvalConfig(model=tmp_path, **kw)


@pytest.mark.parametrize("data, msg", [(("lab:train",), "expected lab:SPLIT"), (("lab:heldout",), "no questions")])
def test_bad_datasets(tmp_path, lab_model, data, msg):
    with pytest.raises(EvalError, match=msg):
        run_eval(EvalConfig(model=tmp_path, data=data, out=tmp_path / "o", n=2, k=(1,)), model=lab_model)


# -- provenance: a folder's samples are reused only by the evaluation that wrote them ------------

SMALL = dict(data=("lab:test",), n=1, k=(1,), max_new_tokens=8, batch_size=4)


@pytest.fixture(scope="module")
def other_lab_model():
    """Model B: lab-tiny with other weights."""
    config = model_preset("lab-tiny")
    return LoadedModel.wrap(config, init(config, jax.random.key(1)), lab=LAB)


@pytest.mark.parametrize("change, field", [("model", "model.params"), (dict(temperature=0.5), "temperature"),
                                           (dict(max_new_tokens=4), "max_new_tokens"),
                                           (dict(n=2, k=(1, 2)), "n"), (dict(seed=1), "seed")])
def test_stale_samples_are_refused_with_nothing_changed(tmp_path, lab_model, other_lab_model, change, field):
    out = tmp_path / "e"
    run_eval(EvalConfig(model=tmp_path, out=out, **SMALL), model=lab_model)
    before = tree_hash(out)
    kw, model = ({}, other_lab_model) if change == "model" else (change, lab_model)
    cfg = EvalConfig(model=tmp_path, out=out, **{**SMALL, **kw})
    with pytest.raises(ProvenanceError, match=rf"differs in: ([a-z_.]+, )*{field}\b.*--overwrite"):
        run_eval(cfg, model=model)
    assert tree_hash(out) == before  # the earlier samples (n = 1 included) are kept as they were
    # --overwrite: the old folder moves aside untouched, the new one holds the new evaluation only
    res = run_eval(EvalConfig(**{**cfg.__dict__, "overwrite": True}), model=model)
    assert tree_hash(tmp_path / "e.old-1") == before
    fresh = run_eval(EvalConfig(**{**cfg.__dict__, "out": tmp_path / "fresh"}), model=model)
    assert _rows(out) == _rows(tmp_path / "fresh") and res["datasets"] == fresh["datasets"]


def test_hf_model_b_into_model_a_folder_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    model_a, _, _, data = tiny_hf_dir(tmp_path / "a")
    model_b, _, _, _ = tiny_hf_dir(tmp_path / "b", initializer_range=0.2)
    cfg = EvalConfig(model=model_a, data=(str(data),), out=tmp_path / "out", n=1, k=(1,), max_new_tokens=8,
                     batch_size=4)
    run_eval(cfg)
    before = tree_hash(tmp_path / "out")
    with pytest.raises(ProvenanceError, match=r"differs in: model\.config, model\.files\)"):
        run_eval(EvalConfig(**{**cfg.__dict__, "model": model_b}))
    with pytest.raises(ProvenanceError, match=r"differs in: think_prefix"):
        run_eval(EvalConfig(**{**cfg.__dict__, "think_prefix": "<think>\n"}))
    assert tree_hash(tmp_path / "out") == before


def test_same_settings_reuse_the_samples(tmp_path, lab_model, monkeypatch):
    out = tmp_path / "e"
    first = run_eval(EvalConfig(model=tmp_path, out=out, **SMALL), model=lab_model)
    rows = _rows(out)

    def no_sampling(*a, **k):
        raise AssertionError("sampled again although every question is in samples.jsonl")

    import metareason.sample
    monkeypatch.setattr(metareason.sample, "generate_all", no_sampling)
    again = run_eval(EvalConfig(model=tmp_path, out=out, **{**SMALL, "k": (1,)}), model=lab_model)
    assert _rows(out) == rows and again["datasets"] == first["datasets"]


def test_an_unrelated_samples_file_is_not_overwritten(tmp_path, lab_model):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "samples.jsonl").write_text('{"dataset": "lab:test", "id": "q1", "correct": [true]}\n')
    before = tree_hash(out)
    with pytest.raises(ProvenanceError, match="not empty and was not written by metareason eval"):
        run_eval(EvalConfig(model=tmp_path, out=out, **SMALL), model=lab_model)
    assert tree_hash(out) == before
