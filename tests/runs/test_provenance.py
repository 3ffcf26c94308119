"""Output folders and their provenance.json: a folder is reused only for an equal fingerprint; a
folder the command did not write is refused with nothing changed on disk; `--overwrite` moves the
old folder aside; a copied run folder resumes to the same result as the original."""

import dataclasses
import json
import os
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from metareason.runs import ProvenanceError, fingerprint, load, model_identity, open_output
from metareason.runs.provenance import differences
from metareason.train import sft
from metareason.train.presets import train_presets
from reference import tiny_hf_dir, tree_hash


def _tiny(out, **kw) -> sft.SFTConfig:
    cfg = train_presets()["tiny"]
    cfg.out, cfg.steps, cfg.final_eval, cfg.checkpoint_every, cfg.log_every = Path(out), 8, False, 4, 4
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


# -- the gate itself ------------------------------------------------------------------------------

def test_open_output_reuses_an_equal_fingerprint_and_names_what_differs(tmp_path):
    fp = fingerprint("eval", model={"config": "c1", "params": "p1"}, data=[{"spec": "lab:test"}],
                     settings={"n": 1, "temperature": 1.0})
    out = open_output(tmp_path / "e", fp, resume=True, overwrite=False, created_by="eval")
    saved = json.loads((out / "provenance.json").read_text())
    assert saved == {"created_by": "eval", "fingerprint": fp}
    (out / "samples.jsonl").write_text("kept\n")
    assert open_output(tmp_path / "e", fp, resume=True, overwrite=False, created_by="eval") == out
    other = fingerprint("eval", model={"config": "c1", "params": "p2"}, data=[{"spec": "lab:test"}],
                        settings={"n": 2, "temperature": 1.0})
    before = tree_hash(out)
    with pytest.raises(ProvenanceError, match=r"differs in: model\.params, n\).*--overwrite"):
        open_output(tmp_path / "e", other, resume=True, overwrite=False, created_by="eval")
    with pytest.raises(ProvenanceError, match="holds the output of metareason eval, not compare"):
        open_output(tmp_path / "e", fp, resume=True, overwrite=False, created_by="compare")
    assert tree_hash(out) == before
    assert differences({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 1, "c": 4}, "e": 3}) == ["a.c", "d", "e"]


def test_overwrite_moves_the_old_folder_aside_never_deletes(tmp_path):
    fp1, fp2 = fingerprint("probe", settings={"every": 1}), fingerprint("probe", settings={"every": 2})
    out = open_output(tmp_path / "p", fp1, resume=True, overwrite=False, created_by="probe")
    (out / "results.json").write_text("one")
    first = tree_hash(out)
    open_output(tmp_path / "p", fp2, resume=True, overwrite=True, created_by="probe")
    assert tree_hash(tmp_path / "p.old-1") == first
    assert json.loads((out / "provenance.json").read_text())["fingerprint"] == fp2
    assert sorted(os.listdir(out)) == ["provenance.json"]
    (out / "results.json").write_text("two")
    second = tree_hash(out)
    open_output(tmp_path / "p", fp1, resume=True, overwrite=True, created_by="probe")
    assert tree_hash(tmp_path / "p.old-1") == first and tree_hash(tmp_path / "p.old-2") == second


def test_unrelated_folders_inputs_and_the_current_directory_are_refused(tmp_path, monkeypatch):
    fp = fingerprint("eval", settings={"n": 1})
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "samples.jsonl").write_text('{"dataset": "x", "id": "1"}\n')
    before = tree_hash(tmp_path)
    with pytest.raises(ProvenanceError, match="is not empty and was not written by metareason eval"):
        open_output(mine, fp, resume=True, overwrite=False, created_by="eval")
    with pytest.raises(ProvenanceError, match="is .or holds. the input"):
        open_output(mine, fp, resume=True, overwrite=True, created_by="eval", inputs=[mine / "model"])
    monkeypatch.chdir(mine)
    with pytest.raises(ProvenanceError, match="not empty"):
        open_output("", fp, resume=True, overwrite=False, created_by="eval")
    with pytest.raises(ProvenanceError, match="would move the current directory"):
        open_output("", fp, resume=True, overwrite=True, created_by="eval")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "provenance.json").write_text("{not json")
    before = tree_hash(tmp_path)
    with pytest.raises(ProvenanceError, match="unreadable"):
        open_output(tmp_path / "broken", fp, resume=True, overwrite=False, created_by="eval")
    assert tree_hash(tmp_path) == before


# -- train / rl: nothing of another folder is overwritten ----------------------------------------

def test_train_refuses_folders_it_did_not_create_and_changes_nothing(tmp_path, monkeypatch):
    (tmp_path / "hf").mkdir()
    model_dir, _, _, data = tiny_hf_dir(tmp_path / "hf")
    unrelated = tmp_path / "notes"
    unrelated.mkdir()
    (unrelated / "config.json").write_text('{"mine": 1}')
    (unrelated / "metrics.jsonl").write_text('{"step": 1}\n')
    cases = [(_tiny(unrelated), "was not written by metareason train"),
             (_tiny(model_dir), "was not written by metareason train"),                  # an HF model folder
             (_tiny(model_dir, init=str(model_dir), data=str(data)), "is .or holds. the input"),  # --out = --init
             (_tiny(Path("")), "was not written by metareason train")]                   # --out "": the cwd
    monkeypatch.chdir(unrelated)
    for cfg, msg in cases:
        before = tree_hash(tmp_path)
        with pytest.raises(ProvenanceError, match=msg):
            sft.train_sft(cfg)
        assert tree_hash(tmp_path) == before, cfg.out
    assert load(model_dir).kind == "hf"  # still loads


def test_train_overwrite_moves_the_old_run_aside(tmp_path):
    sft.train_sft(_tiny(tmp_path / "run", steps=4))
    first = tree_hash(tmp_path / "run")
    with pytest.raises(ProvenanceError, match="differs in: batch_size"):
        sft.train_sft(_tiny(tmp_path / "run", steps=4, batch_size=2, resume=True))
    assert tree_hash(tmp_path / "run") == first
    sft.train_sft(_tiny(tmp_path / "run", steps=4, batch_size=2, overwrite=True))
    assert tree_hash(tmp_path / "run.old-1") == first
    assert json.loads((tmp_path / "run" / "config.json").read_text())["batch_size"] == 2


def test_a_copied_run_resumes_like_the_original(tmp_path):
    orig, copy = tmp_path / "orig", tmp_path / "elsewhere" / "copy"
    sft.train_sft(_tiny(orig))
    shutil.copytree(orig, copy)
    assert model_identity(load(orig)) == model_identity(load(copy))  # the path is not the model's identity
    for run in (orig, copy):  # both fall back to step 4 and train 5..8 again
        shutil.rmtree(run / "checkpoints" / "8")
        (run / "checkpoints" / "checksums" / "8.json").unlink()
        assert load(run).step == 4
        sft.train_sft(_tiny(run, resume=True))
    a, b = load(orig), load(copy)
    assert a.step == b.step == 8
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert json.loads((copy / "config.json").read_text())["out"] == str(copy)


# -- probe: its folder names the model, data and settings ------------------------------------------

def test_probe_refuses_another_model_or_settings_with_nothing_changed(tmp_path):
    from metareason.probe.run import ProbeConfig, run_probe

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    model_a, _, _, data = tiny_hf_dir(tmp_path / "a")
    model_b, _, _, _ = tiny_hf_dir(tmp_path / "b", initializer_range=0.2)
    cfg = ProbeConfig(model=model_a, data=str(data), out=tmp_path / "probe", max_questions=1, every=2)
    run_probe(cfg)
    saved = json.loads((tmp_path / "probe" / "provenance.json").read_text())
    assert saved["created_by"] == "probe" and saved["fingerprint"]["every"] == 2
    before = tree_hash(tmp_path / "probe")
    for change, field in [(dict(model=model_b), r"model\.config, model\.files\)"), (dict(every=1), r"every\)"),
                          (dict(model_overrides="compute_dtype=bfloat16"), r"model\.config, model_overrides\)")]:
        with pytest.raises(ProvenanceError, match=rf"differs in: {field}"):
            run_probe(dataclasses.replace(cfg, **change))
        assert tree_hash(tmp_path / "probe") == before
    for inside in (model_a, data, tmp_path / "a"):  # the model, the data file, a folder holding them
        with pytest.raises(ProvenanceError, match="is .or holds. the input"):
            run_probe(dataclasses.replace(cfg, out=inside))
    with pytest.raises(ProvenanceError, match="is a file"):
        run_probe(dataclasses.replace(cfg, out=model_a / "config.json"))
    assert tree_hash(tmp_path / "probe") == before


def test_a_run_written_before_provenance_existed_is_adopted_on_resume(tmp_path):
    run = tmp_path / "run"
    sft.train_sft(_tiny(run, steps=4))
    (run / "provenance.json").unlink()  # as a run of an earlier version left it: config.json + checkpoints
    with pytest.raises(ProvenanceError, match="already holds a run; pass --resume"):
        sft.train_sft(_tiny(run, steps=4))
    with pytest.raises(ProvenanceError, match="differs in: batch_size"):
        sft.train_sft(_tiny(run, steps=4, batch_size=2, resume=True))
    assert not (run / "provenance.json").exists()
    sft.train_sft(_tiny(run, steps=4, resume=True))
    assert json.loads((run / "provenance.json").read_text())["created_by"] == "train"


# -- experiment scripts -----------------------------------------------------------------------------

def test_experiments_write_under_runs_and_refuse_stale_runs(tmp_path):
    import sys

    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root / "experiments"))
    import common

    a = common.parser("doc", "sft_vs_grpo").parse_args([])
    assert a.out == root / "runs" / "experiments" / "sft_vs_grpo"  # git-ignored; never experiments/results/
    a = common.parser("doc", "sft_vs_grpo").parse_args(["--out", str(tmp_path / "res"), "--quick"])
    common.open_results(a)
    (tmp_path / "res" / "results.json").write_text("{}")
    before = tree_hash(tmp_path / "res")
    b = common.parser("doc", "sft_vs_grpo").parse_args(["--out", str(tmp_path / "res"), "--n", "4"])
    with pytest.raises(ProvenanceError, match=r"differs in: n, quick\)"):
        common.open_results(b)
    assert tree_hash(tmp_path / "res") == before
    # a finished run in --work is reused only with the same config
    cfg = _tiny(tmp_path / "work" / "sft", steps=4)
    common.sft(cfg, "sft")
    with pytest.raises(SystemExit, match="differs in: batch_size"):
        common.sft(_tiny(tmp_path / "work" / "sft", steps=4, batch_size=2), "sft")
