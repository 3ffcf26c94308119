"""Checkpoints: exact round trip, kept N deep, a damaged newest one detected and skipped."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metareason.runs.checkpoint import CheckpointDamaged, Checkpointer, abstract_like


def _state(seed):
    k = jax.random.key(seed)
    return {"w": jax.random.normal(k, (4, 3)), "step": jnp.asarray(seed, jnp.int32),
            "nested": (jnp.arange(5.0) * seed, {"b": jnp.ones(2, jnp.bfloat16) * seed})}


def test_round_trip_and_keep(tmp_path):
    ckpt = Checkpointer(tmp_path / "ck", keep=2)
    for s in (1, 2, 3):
        ckpt.save(s, _state(s), {"data": {"pos": s}, "note": "x"})
    assert ckpt.steps() == [2, 3]
    step, state, extra = ckpt.restore_latest(abstract_like(_state(0)))
    assert step == 3 and extra == {"data": {"pos": 3}, "note": "x"}
    jax.tree.map(np.testing.assert_array_equal, state, _state(3))
    assert sorted(p.name for p in (tmp_path / "ck" / "checksums").iterdir()) == ["2.json", "3.json"]
    ckpt.close()


def test_damaged_newest_falls_back_to_previous(tmp_path, capsys):
    ckpt = Checkpointer(tmp_path / "ck", keep=3)
    ckpt.save(1, _state(1), {"k": 1})
    ckpt.save(2, _state(2), {"k": 2})
    files = sorted((p for p in (tmp_path / "ck" / "2").rglob("*") if p.is_file()), key=lambda p: -p.stat().st_size)
    with open(files[0], "r+b") as f:  # truncate the largest file of the newest step
        f.truncate(max(f.seek(0, 2) // 2, 1))
    step, state, extra = ckpt.restore_latest(abstract_like(_state(0)))
    assert step == 1 and extra == {"k": 1}
    jax.tree.map(np.testing.assert_array_equal, state, _state(1))
    out = capsys.readouterr().out
    assert "checkpoint step 2" in out and "damaged" in out and "truncated" in out


def test_all_damaged_is_an_error_and_empty_is_none(tmp_path):
    ckpt = Checkpointer(tmp_path / "ck")
    assert ckpt.restore_latest(abstract_like(_state(0))) is None
    ckpt.save(5, _state(5), {})
    for p in (tmp_path / "ck" / "5").rglob("*"):
        if p.is_file() and p.stat().st_size > 0:
            p.write_bytes(b"")
    with pytest.raises(CheckpointDamaged, match="no intact checkpoint.*step 5"):
        ckpt.restore_latest(abstract_like(_state(0)))


def _two_steps(tmp_path):
    ckpt = Checkpointer(tmp_path / "ck", keep=3)
    ckpt.save(1, _state(1), {"k": 1})
    ckpt.save(2, _state(2), {"k": 2})
    return ckpt


def _flip_a_bit(step_dir):
    f = max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    b = bytearray(f.read_bytes())
    b[len(b) // 2] ^= 0x01
    f.write_bytes(bytes(b))


@pytest.mark.parametrize("manifest", [None, b"", b"\x00{garbage", b"[1, 2]", b'{"a": 3}'])
def test_a_missing_or_unreadable_checksum_is_damage_moved_aside_on_resume(tmp_path, capsys, manifest):
    ckpt = _two_steps(tmp_path)
    sums = tmp_path / "ck" / "checksums" / "2.json"
    if manifest is None:  # a kill between orbax's commit and the checksum write, then one flipped bit
        sums.unlink()
        _flip_a_bit(tmp_path / "ck" / "2")
    else:
        sums.write_bytes(manifest)
    with pytest.raises(CheckpointDamaged, match="step 2 .* is damaged .*checksum"):
        ckpt.restore(abstract_like(_state(0)), 2)
    assert ckpt.restore(abstract_like(_state(0)))[0] == 1 and ckpt.steps() == [1, 2]  # `restore` moves nothing
    step, state, extra = ckpt.restore_latest(abstract_like(_state(0)))
    assert step == 1 and extra == {"k": 1} and ckpt.steps() == [1]
    jax.tree.map(np.testing.assert_array_equal, state, _state(1))
    assert (tmp_path / "ck" / "damaged-2-0").is_dir() and not (tmp_path / "ck" / "2").exists()
    assert (tmp_path / "ck" / "checksums" / "damaged-2-0.json").exists() == (manifest is not None)
    assert "moved damaged checkpoint step 2 aside to " + str(tmp_path / "ck" / "damaged-2-0") in capsys.readouterr().out
    ckpt.save(2, _state(2), {"k": 2})  # the step can be saved again, and the damaged copy stays
    assert ckpt.restore_latest(abstract_like(_state(0)))[0] == 2 and (tmp_path / "ck" / "damaged-2-0").is_dir()
    ckpt.save(3, _state(3), {})  # pruning the manifests leaves the damaged one's alone
    assert (tmp_path / "ck" / "checksums" / "damaged-2-0.json").exists() == (manifest is not None)
    ckpt.close()


def test_all_damaged_moves_nothing(tmp_path):
    ckpt = _two_steps(tmp_path)
    for s in (1, 2):
        (tmp_path / "ck" / "checksums" / f"{s}.json").unlink()
    with pytest.raises(CheckpointDamaged, match="no intact checkpoint.*step 2: no checksum.*step 1: no checksum"):
        ckpt.restore_latest(abstract_like(_state(0)))
    assert ckpt.steps() == [1, 2] and not list((tmp_path / "ck").glob("damaged-*"))


@pytest.mark.parametrize("keep", [0, -2])
def test_keep_below_one_is_refused(tmp_path, keep):
    with pytest.raises(ValueError, match=f"keep must be at least 1 checkpoint, got {keep}$"):
        Checkpointer(tmp_path / "ck", keep=keep)


def test_a_failed_save_is_one_line_at_once(tmp_path):
    """The folder turns unwritable during a run: the save fails in one line within seconds (no
    orbax thread left stalling) and close() returns."""
    import os
    import subprocess
    import time
    ckpt = _two_steps(tmp_path)
    ck = tmp_path / "ck"
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(ck)], capture_output=True).returncode != 0:
            pytest.skip("running as root and chattr +i is not available here")
        undo = ["chattr", "-i", str(ck)]
    else:
        ck.chmod(0o555)
        undo = ["chmod", "755", str(ck)]
    try:
        t0 = time.perf_counter()
        with pytest.raises(OSError) as err:
            ckpt.save(3, _state(3), {})
        with pytest.raises(OSError, match="is not writable"):
            ckpt.check_writable()
        ckpt.close()
        seconds = time.perf_counter() - t0
    finally:
        subprocess.run(undo, check=True)
    assert seconds < 10, f"took {seconds:.1f} s"
    assert "\n" not in str(err.value) and f"could not save checkpoint step 3 in {ck}" in str(err.value)
