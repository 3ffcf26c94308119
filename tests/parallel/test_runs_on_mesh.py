"""`metareason train` and `metareason rl` runs on a mesh of the 8 fake CPU devices follow the
one-device run, and a run resumes on a different mesh than it was saved from."""

from __future__ import annotations

import dataclasses
import json
import shutil

import jax
import numpy as np
import pytest

from metareason.train import rl, sft
from metareason.train.presets import rl_presets, train_presets


def _rows(out, split="train"):
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r.get("split", split) == split]


def _close(a, b, tol):
    diffs = [float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
    assert max(diffs) < tol, max(diffs)


def _sft(out, mesh, **kw):
    cfg = train_presets()["tiny"]
    cfg.out, cfg.mesh, cfg.steps, cfg.final_eval, cfg.log_every, cfg.checkpoint_every = out, mesh, 6, False, 1, 3
    for k, v in kw.items():
        setattr(cfg, k, v)
    sft.train_sft(cfg)


@pytest.mark.slow  # ~30 s; test_multihost trains, checkpoints and resumes by default
def test_sft_on_meshes_and_resume_on_another(tmp_path, capsys):
    _sft(tmp_path / "one", "")
    # on the mesh, also the long-sequence numerics (chunked attention and loss, remat): same losses
    overrides = "remat=full,attention_impl=chunked,attention_chunk=32,loss_chunk=48"
    _sft(tmp_path / "mesh", "2x2x2", model_overrides=overrides)
    saved = json.loads((tmp_path / "mesh" / "model_config.json").read_text())
    assert (saved["attention_impl"], saved["loss_chunk"], saved["remat"]) == ("chunked", 48, "full")
    one, mesh = _rows(tmp_path / "one"), _rows(tmp_path / "mesh")
    np.testing.assert_allclose([r["loss"] for r in mesh], [r["loss"] for r in one], rtol=1e-5)
    _close(sft.load_run(tmp_path / "mesh")[2], sft.load_run(tmp_path / "one")[2], 1e-4)
    # lose the last checkpoint of the 2x2x2 run, resume it on a 1x4x2 mesh
    shutil.copytree(tmp_path / "mesh", tmp_path / "moved")
    shutil.rmtree(tmp_path / "moved" / "checkpoints" / "6")
    (tmp_path / "moved" / "checkpoints" / "checksums" / "6.json").unlink()
    saved = json.loads((tmp_path / "moved" / "config.json").read_text())
    (tmp_path / "moved" / "config.json").write_text(json.dumps(dict(saved, out=str(tmp_path / "moved"))))
    _sft(tmp_path / "moved", "1x4x2", resume=True, model_overrides=overrides)
    assert "resumed from step 3" in capsys.readouterr().out  # not a fresh start that happens to agree
    moved = _rows(tmp_path / "moved")
    assert [r["step"] for r in moved] == list(range(1, 7))
    np.testing.assert_allclose([r["loss"] for r in moved], [r["loss"] for r in one], rtol=1e-5)
    _close(sft.load_run(tmp_path / "moved")[2], sft.load_run(tmp_path / "one")[2], 1e-4)


@pytest.mark.slow  # the GRPO step itself on a mesh runs by default in test_mesh.py
def test_grpo_on_a_mesh(tmp_path):
    def run(out, mesh):
        cfg = rl_presets()["tiny"]
        cfg.out, cfg.mesh, cfg.final_eval, cfg.steps = out, mesh, False, 3
        # a fresh tiny model never answers right, so every advantage is 0 and the policy gradient
        # is rounding noise (which Adam would blow up to full steps); the entropy bonus gives
        # the updates a real direction to compare
        cfg.loss = dataclasses.replace(cfg.loss, entropy_coef=0.05)
        rl.train_grpo(cfg)

    run(tmp_path / "one", "")
    run(tmp_path / "mesh", "1x4x2")
    one, mesh = _rows(tmp_path / "one"), _rows(tmp_path / "mesh")
    assert [r["reward"] for r in mesh] == [r["reward"] for r in one]  # the same rollouts
    np.testing.assert_allclose([r["loss"] for r in mesh], [r["loss"] for r in one], rtol=1e-4, atol=1e-6)
    _close(rl.load_grpo_run(tmp_path / "mesh")[2], rl.load_grpo_run(tmp_path / "one")[2], 1e-4)


@pytest.mark.slow  # the probe itself on a mesh runs by default in test_mesh.py
def test_probe_of_a_hugging_face_model_on_a_mesh(tmp_path):
    """`metareason probe --mesh`: the model imported into shards (tensor 4 x fsdp 2) and probed there
    writes the curves of the one-device probe."""
    from reference import tiny_hf_dir

    from metareason.cli import main

    model_dir, _, _, data = tiny_hf_dir(tmp_path)
    for name, mesh in (("one", []), ("mesh", ["--mesh", "1x2x4"])):
        main(["probe", "--model", str(model_dir), "--data", str(data), "--out", str(tmp_path / name), *mesh])
    one, mesh = ([json.loads(x) for x in (tmp_path / n / "curves.jsonl").read_text().splitlines()]
                 for n in ("one", "mesh"))
    assert [c["group"] for c in mesh] == [c["group"] for c in one]
    for a, b in zip(mesh, one):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5, atol=1e-6)
