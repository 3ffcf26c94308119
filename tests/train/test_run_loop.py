"""The run loop on a toy step (state: a running sum of the batches, closed form n(n+1)/2): what it
checkpoints, logs and evaluates, where it stops on a non-finite step, and that a resumed loop ends
where an uninterrupted one does."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from metareason.runs import Checkpointer
from metareason.train import MetricsWriter, TrainingDiverged, resume, run_loop


def _step(state, batch):
    new = {"total": state["total"] + batch, "count": state["count"] + 1}
    return new, {"loss": new["total"], "grad_norm": jnp.float32(batch), "finite": jnp.isfinite(new["total"])}


def _loop(out, state, start, steps, *, stop_after=None, batches=None, **kw):
    ckpt = Checkpointer(out / "checkpoints", keep=10)
    metrics = MetricsWriter(out, start_step=start)
    if batches is None:
        batches = (jnp.float32(s + 1) for s in range(start, stop_after or steps))
    try:
        return run_loop(state, _step, batches, start_step=start, num_steps=steps, checkpointer=ckpt, metrics=metrics,
                        log_every=3, checkpoint_every=4, desc="toy",
                        train_row=lambda done, st, window, sec: {"loss": float(window[-1]["loss"]),
                                                                 "window": len(window)},
                        checkpoint_extra=lambda done: {"done": done}, **kw)
    finally:
        metrics.close()


def _rows(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _zero():
    return {"total": jnp.float32(0), "count": jnp.int32(0)}


def test_checkpoints_metrics_and_evaluation(tmp_path):
    state = _loop(tmp_path, _zero(), 0, 10, evaluate=lambda st: {"total": float(st["total"])}, eval_every=5)
    assert float(state["total"]) == 55 and int(state["count"]) == 10
    assert Checkpointer(tmp_path / "checkpoints").steps() == [4, 8, 10]
    rows = _rows(tmp_path)
    train = [(r["step"], r["loss"], r["window"]) for r in rows if r["split"] == "train"]
    assert train == [(3, 6.0, 3), (6, 21.0, 3), (9, 45.0, 3), (10, 55.0, 1)]
    assert [(r["step"], r["total"]) for r in rows if r["split"] == "validation"] == [(5, 15.0)]  # not at the end


def test_resume_ends_where_an_uninterrupted_loop_does(tmp_path):
    _loop(tmp_path, _zero(), 0, 10, stop_after=6)  # "killed" after step 6: the batches run out
    ckpt = Checkpointer(tmp_path / "checkpoints", keep=10)
    start, state, extra = resume(ckpt, _zero(), enabled=True, out=tmp_path)
    ckpt.close()
    assert start == 4 and extra == {"done": 4} and float(state["total"]) == 10
    state = _loop(tmp_path, state, start, 10)
    assert float(state["total"]) == 55 and int(state["count"]) == 10
    assert [r["step"] for r in _rows(tmp_path) if r["split"] == "train"] == [3, 6, 9, 10]


def test_a_non_finite_step_stops_naming_it_and_keeps_the_last_good_checkpoint(tmp_path):
    batches = iter([jnp.float32(x) for x in (1, 2, 3, 4, 5, np.inf, 7)])
    with pytest.raises(TrainingDiverged, match=r"non-finite loss \(inf\) or gradient norm \(inf\) at step 6 "
                                               r"\(batch 5\); nothing from it was committed, the last good "
                                               r"checkpoint is step 4 in "):
        _loop(tmp_path, _zero(), 0, 7, batches=batches)
    assert Checkpointer(tmp_path / "checkpoints").steps() == [4]


def test_resume_disabled_starts_fresh(tmp_path):
    ckpt = Checkpointer(tmp_path / "checkpoints")
    assert resume(ckpt, _zero(), enabled=True, out=tmp_path)[0] == 0  # nothing saved yet
    ckpt.save(4, {"total": jnp.float32(10), "count": jnp.int32(4)}, {})
    assert resume(ckpt, _zero(), enabled=False, out=tmp_path)[0] == 0
    ckpt.close()


def test_a_non_finite_update_with_a_finite_loss_stops_before_it_is_saved_or_logged(tmp_path):
    def step(state, batch):  # the loss is finite, the update is not (as with an infinite learning rate)
        new = {"total": state["total"] + batch, "count": state["count"] + 1,
               "moment": state["moment"] * batch}
        return new, {"loss": jnp.float32(1), "grad_norm": jnp.float32(1), "finite": jnp.bool_(True)}

    ckpt = Checkpointer(tmp_path / "checkpoints", keep=10)
    metrics = MetricsWriter(tmp_path)
    batches = iter([jnp.float32(x) for x in (1, 2, 3, 4, np.inf, 6)])
    with pytest.raises(TrainingDiverged, match=r"non-finite params or optimizer state after the update at step 5 "
                                               r"\(batch 4\).*neither logged nor saved, the last good checkpoint "
                                               r"is step 4 in "):
        run_loop({**_zero(), "moment": jnp.ones(3)}, step, batches, start_step=0, num_steps=6, checkpointer=ckpt,
                 metrics=metrics, log_every=1, checkpoint_every=1, train_row=lambda d, st, w, s: {"loss": 1.0})
    metrics.close()
    assert Checkpointer(tmp_path / "checkpoints").steps() == [1, 2, 3, 4]
    assert [r["step"] for r in _rows(tmp_path)] == [1, 2, 3, 4]


def test_metrics_jsonl_is_strict_json(tmp_path):
    metrics = MetricsWriter(tmp_path)
    metrics.write(1, "train", {"loss": float("nan"), "lr": np.float32(np.inf), "gap": -np.inf, "ok": 0.5,
                               "n": 3, "per": {"a": np.nan}})
    metrics.close()
    line = (tmp_path / "metrics.jsonl").read_text()
    assert json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in metrics.jsonl")) == {
        "step": 1, "split": "train", "loss": None, "lr": None, "gap": None, "ok": 0.5, "n": 3, "per": {"a": None}}


@pytest.mark.parametrize("field", ["log_every", "checkpoint_every"])
def test_every_below_one_is_refused(tmp_path, field):
    with pytest.raises(ValueError, match=f"{field} must be at least 1, got 0$"):
        run_loop(_zero(), _step, iter([]), start_step=0, num_steps=4, checkpointer=Checkpointer(tmp_path / "ck"),
                 metrics=None, train_row=None, **{"log_every": 1, "checkpoint_every": 1, field: 0})
