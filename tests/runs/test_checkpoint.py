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
