"""The SFT run end to end: resume after SIGKILL is bitwise exact; a non-finite step stops
the run naming step and batch and keeps the last good checkpoint; config mismatches refuse."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from metareason.train import sft
from metareason.model.presets import model_preset
from metareason.runs import Checkpointer, abstract_like
from metareason.train.presets import train_presets

STEPS = 40  # the kill lands at a checkpoint between steps 8 and 24
ARGS = ["--preset", "tiny", "--steps", str(STEPS), "--checkpoint-every", "4", "--no-final-eval", "--log-every", "4"]


def _run(out, *extra, wait=True):
    cmd = [sys.executable, "-m", "metareason.cli", "train", *ARGS, "--out", str(out), *extra]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if wait:
        subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
        return None
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _final_state(out):
    cfg = train_presets()["tiny"]
    from metareason.model import init
    from metareason.train.state import init_state, make_optimizer
    template = init_state(init(model_preset(cfg.model), jax.random.key(0)), make_optimizer(cfg.optimizer, STEPS), 0)
    step, state, extra = Checkpointer(Path(out) / "checkpoints").restore_latest(abstract_like(template))
    return step, state, extra


def test_resume_after_sigkill_is_bitwise_exact(tmp_path):
    _run(tmp_path / "straight")
    proc = _run(tmp_path / "killed", wait=False)
    kill_after = random.Random().randint(2, 6)  # a random number of checkpoints
    deadline = time.time() + 240
    ck = tmp_path / "killed" / "checkpoints"
    while time.time() < deadline and proc.poll() is None:
        sums = list((ck / "checksums").glob("*.json")) if ck.exists() else []
        if len(sums) >= 1 and max(int(p.stem) for p in sums) >= 4 * kill_after:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    _run(tmp_path / "killed", "--resume")
    step_a, a, extra_a = _final_state(tmp_path / "straight")
    step_b, b, extra_b = _final_state(tmp_path / "killed")
    assert step_a == step_b == STEPS and extra_a == extra_b
    jax.tree.map(np.testing.assert_array_equal, a, b)
    rows = [json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(4, STEPS + 1, 4))  # no duplicated or lost rows


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real = sft.make_train_step

    def poisoned(config, optimizer):  # reports a non-finite step at step 7, as the real guard does
        step = real(config, optimizer)

        def wrapped(state, batch):
            new, m = step(state, batch)
            if int(new.step) == 7:
                return state, dict(m, finite=np.bool_(False), loss=np.float32("nan"))
            return new, m
        return wrapped

    monkeypatch.setattr(sft, "make_train_step", poisoned)
    cfg = train_presets()["tiny"]
    cfg.out, cfg.steps, cfg.checkpoint_every, cfg.final_eval = tmp_path / "run", 20, 4, False
    with pytest.raises(sft.TrainingDiverged, match=r"non-finite loss \(nan\).*at step 7 \(batch 6 of the data "
                                                   r"stream\).*last good checkpoint is step 4"):
        sft.train_sft(cfg)
    assert Checkpointer(tmp_path / "run" / "checkpoints").steps() == [4]


def test_resume_refuses_a_different_config_and_fresh_run_refuses_an_existing_one(tmp_path):
    cfg = train_presets()["tiny"]
    cfg.out, cfg.steps, cfg.final_eval = tmp_path / "run", 4, False
    sft.train_sft(cfg)
    with pytest.raises(ValueError, match="already holds a run; pass --resume"):
        sft.train_sft(cfg)
    cfg.resume, cfg.batch_size = True, 2
    with pytest.raises(ValueError, match="differs in: batch_size"):
        sft.train_sft(cfg)
