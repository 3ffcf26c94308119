"""A damaged newest checkpoint, end to end on the tiny SFT run: the run falls back to the previous
step, moves the damaged one aside (renamed, not deleted) and finishes, bitwise equal to the clean
run; a non-finite update is never saved nor logged as NaN; an unwritable checkpoint folder and
keep_checkpoints < 1 are refused in one line."""

import dataclasses
import json
import math
import os
import shutil
import subprocess
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from metareason.model.presets import model_preset
from metareason.runs import Checkpointer
from metareason.runs.load import restore_params
from metareason.train import sft
from metareason.train.presets import train_presets


def _cfg(out, **kw):
    cfg = train_presets()["tiny"]
    cfg.out, cfg.steps, cfg.checkpoint_every, cfg.log_every, cfg.final_eval = Path(out), 12, 4, 4, False
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def _params(run, step=None):
    return restore_params(run, model_preset(train_presets()["tiny"].model), step)[1]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A finished 12-step run (checkpoints 4, 8, 12) and its final params."""
    run = tmp_path_factory.mktemp("clean") / "run"
    sft.train_sft(_cfg(run))
    return run, _params(run)


def _copy(src, run):
    """A copy of the clean run at `run` (config.json's `out` pointed at it, while the output path
    is still part of a run's identity)."""
    shutil.copytree(src, run)
    cfg = json.loads((run / "config.json").read_text())
    if "out" in cfg:
        cfg["out"] = str(run)
        (run / "config.json").write_text(json.dumps(cfg, indent=2))
    return run


def _largest(step_dir):
    return max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _truncate(ck):
    f = _largest(ck / "12")
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _flip_bytes(ck):
    f = _largest(ck / "12")
    b = bytearray(f.read_bytes())
    for i in range(len(b) // 3, len(b) // 3 + 8):
        b[i] ^= 0xFF
    f.write_bytes(bytes(b))


def _delete_file(ck):
    _largest(ck / "12").unlink()


def _empty_folder(ck):
    shutil.rmtree(ck / "12")
    (ck / "12").mkdir()


def _garbage_checksum(ck):
    (ck / "checksums" / "12.json").write_bytes(b"\x00{not json")


def _bit_flip_without_checksum(ck):
    """A kill between orbax's commit and the checksum write, then one flipped bit in the params."""
    (ck / "checksums" / "12.json").unlink()
    f = _largest(ck / "12")
    b = bytearray(f.read_bytes())
    b[len(b) // 2] ^= 0x01
    f.write_bytes(bytes(b))


@pytest.mark.parametrize("damage", [_truncate, _flip_bytes, _delete_file, _empty_folder, _garbage_checksum,
                                    _bit_flip_without_checksum], ids=lambda f: f.__name__.strip("_"))
def test_a_damaged_newest_checkpoint_is_moved_aside_and_the_run_finishes(clean, tmp_path, damage, capsys):
    src, final = clean
    run = _copy(src, tmp_path / "run")
    ck = run / "checkpoints"
    damage(ck)
    damaged_files = sorted(str(p.relative_to(ck / "12")) for p in (ck / "12").rglob("*"))
    sft.train_sft(_cfg(run, resume=True))
    out = capsys.readouterr().out
    assert "checkpoint step 12" in out and "damaged" in out and "resumed from step 8" in out
    aside = ck / "damaged-12-0"
    assert aside.is_dir() and sorted(str(p.relative_to(aside)) for p in aside.rglob("*")) == damaged_files
    assert str(aside) in out  # the warning says where it went
    assert Checkpointer(ck).steps() == [4, 8, 12]
    jax.tree.map(np.testing.assert_array_equal, _params(run), final)  # bitwise: the clean run's step 12


def test_a_second_fall_back_past_the_same_step_gets_a_new_name(clean, tmp_path):
    src, final = clean
    run = _copy(src, tmp_path / "run")
    ck = run / "checkpoints"
    for n in range(2):
        _truncate(ck)
        sft.train_sft(_cfg(run, resume=True))
        assert (ck / f"damaged-12-{n}").is_dir()
    jax.tree.map(np.testing.assert_array_equal, _params(run), final)


def _strict_rows(run):
    def refuse(name):
        raise ValueError(f"metrics.jsonl holds {name}")
    return [json.loads(line, parse_constant=refuse) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("lr", [math.inf, math.nan])
def test_a_non_finite_learning_rate_leaves_no_nan_checkpoint_and_no_nan_metric(tmp_path, lr):
    cfg = _cfg(tmp_path / "run", checkpoint_every=1, log_every=1)
    cfg.optimizer = dataclasses.replace(cfg.optimizer, lr=lr)
    with pytest.raises((sft.TrainingDiverged, ValueError), match="non-finite|finite"):
        sft.train_sft(cfg)
    ck = tmp_path / "run" / "checkpoints"
    for step in (Checkpointer(ck).steps() if ck.exists() else []):
        for leaf in jax.tree.leaves(_params(tmp_path / "run", step)):
            assert np.isfinite(np.asarray(leaf)).all(), f"checkpoint {step} holds non-finite params"
    if (tmp_path / "run" / "metrics.jsonl").exists():
        _strict_rows(tmp_path / "run")


def _read_only(path):
    """Makes `path` unwritable, also for root (chattr +i); undoes it on exit."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("running as root and chattr +i is not available here")
        return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)
    path.chmod(0o555)
    return lambda: path.chmod(0o755)


@pytest.mark.parametrize("with_checksums_folder", [False, True])
def test_an_unwritable_checkpoint_folder_fails_in_seconds_in_one_line(tmp_path, with_checksums_folder):
    from metareason.runs import defaults_json, open_run_dir

    cfg = _cfg(tmp_path / "run", steps=4)
    # the folder is this run's own (its provenance.json), only its checkpoints/ cannot be written
    open_run_dir(cfg.out, cfg.to_json(), False, defaults_json(sft.SFTConfig), created_by="train", inputs=(cfg.init,))
    ck = tmp_path / "run" / "checkpoints"
    (ck / "checksums").mkdir(parents=True) if with_checksums_folder else ck.mkdir(parents=True)
    undo = _read_only(ck)
    try:
        t0 = time.perf_counter()
        with pytest.raises(OSError) as err:
            sft.train_sft(cfg)
        seconds = time.perf_counter() - t0
    finally:
        undo()
    assert seconds < 10, f"took {seconds:.1f} s"
    msg = str(err.value)
    assert "\n" not in msg and str(ck) in msg and "not writable" in msg


@pytest.mark.parametrize("field", ["keep_checkpoints", "checkpoint_every"])
@pytest.mark.parametrize("value", [0, -1])
def test_keep_and_checkpoint_every_below_one_are_refused(tmp_path, field, value):
    with pytest.raises(ValueError, match=f"{field} must be at least 1, got {value}$"):
        sft.train_sft(_cfg(tmp_path / "run", **{field: value}))
    assert not (tmp_path / "run").exists()  # refused before anything is written
