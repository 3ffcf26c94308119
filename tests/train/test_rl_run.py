"""The GRPO run end to end: an interrupted run resumes bitwise exactly; a non-finite step stops
naming the step and keeps the last good checkpoint; a GRPO run loads like an SFT run."""

import json

import jax
import numpy as np
import pytest

from metareason.train import rl
from metareason import load
from metareason.runs import Checkpointer
from metareason.train import TrainingDiverged, load_run
from metareason.train.presets import rl_presets


def _cfg(out, **kw):
    cfg = rl_presets()["tiny"]
    cfg.out, cfg.final_eval, cfg.epochs_per_batch, cfg.minibatches = out, False, 2, 2
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def test_interrupted_run_resumes_exactly(tmp_path, monkeypatch):
    rl.train_grpo(_cfg(tmp_path / "straight"))
    real, calls = rl.sample_rollouts, []

    def dies_at_step_4(*a, **kw):  # killed while sampling step 4: checkpoint 2 is the newest
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(rl, "sample_rollouts", dies_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        rl.train_grpo(_cfg(tmp_path / "killed"))
    assert Checkpointer(tmp_path / "killed" / "checkpoints").steps() == [2]
    monkeypatch.setattr(rl, "sample_rollouts", real)
    rl.train_grpo(_cfg(tmp_path / "killed", resume=True))
    a, b = load_run(tmp_path / "straight"), load_run(tmp_path / "killed")
    assert a[3] == b[3] == 6
    jax.tree.map(np.testing.assert_array_equal, a[2], b[2])
    rows = [json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    straight = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["reward"] for r in rows] == [r["reward"] for r in straight]
    assert isinstance(a[0], rl.GRPOConfig) and a[1].num_layers == 2   # loads through sft.load_run


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real = rl.make_train_step

    def poisoned(config, optimizer, loss_fn):  # a non-finite 11th optimizer step: step 2, its 2nd pass
        step = real(config, optimizer, loss_fn)

        def wrapped(state, batch):
            new, m = step(state, batch)
            if int(new.step) == 11:
                return state, dict(m, finite=np.bool_(False), loss=np.float32("nan"))
            return new, m
        return wrapped

    monkeypatch.setattr(rl, "make_train_step", poisoned)
    with pytest.raises(TrainingDiverged, match=r"non-finite loss \(nan\).*at step 2 \(rollout batch 1, pass 1\).*last good checkpoint is step 1 in"):
        rl.train_grpo(_cfg(tmp_path / "run", epochs_per_batch=4, minibatches=2, checkpoint_every=1))
    assert Checkpointer(tmp_path / "run" / "checkpoints").steps() == [1]


def test_grpo_on_a_hugging_face_model_and_a_question_file(tmp_path):
    from reference import ANSWER_ROWS, tiny_hf_dir

    model_dir, config, params, data = tiny_hf_dir(tmp_path)
    cfg = _cfg(tmp_path / "run", init=str(model_dir), data=str(data), steps=2, max_new_tokens=12,
               questions_per_step=2, group_size=2, minibatches=1, epochs_per_batch=1)
    rl.train_grpo(cfg)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(-1 <= r["reward"] <= 1 for r in rows)
    got = load_run(tmp_path / "run")
    assert got[1] == config and got[3] == 2 and len(ANSWER_ROWS) >= 2
    # the run keeps the model's tokenizer: it loads as a HF model
    copied = tmp_path / "run" / "tokenizer" / "tokenizer.json"
    assert copied.read_bytes() == (model_dir / "tokenizer.json").read_bytes()
    m = load(tmp_path / "run")
    assert m.kind == "hf" and m.step == 2 and m.run_config["data"] == str(data)
    with pytest.raises(ValueError, match="needs --data FILE"):
        rl.train_grpo(_cfg(tmp_path / "run2", init=str(model_dir)))


@pytest.mark.parametrize("kw, msg", [(dict(update_n=5), r"update_n must be in \[0, group_size=4\]"),
                                     (dict(minibatches=3), "minibatches=3 must divide"),
                                     (dict(advantage="ppo"), "unknown advantage")])
def test_bad_config(tmp_path, kw, msg):
    base = dict(rl_presets()["tiny"].__dict__)
    base.update(kw)
    with pytest.raises(ValueError, match=msg):
        rl.GRPOConfig(**base)
