"""Two processes on localhost, joined by `jax.distributed`, train a step, save a checkpoint, and
a fresh pair restores it and continues, matching the first pair (and, with -m slow, one process
alone on the same 4-device mesh)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("multihost_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run(phase: str, ckpt: Path, processes: int) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="2" if processes > 1 else "4")
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if not f.startswith("--xla_force_host_platform_device_count"))
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, str(WORKER), phase, str(ckpt), str(processes), str(i), port],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(processes)]
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=300))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    lines = [l for l in outs[0][0].splitlines() if l.startswith("RESULT ")]
    assert lines, outs[0][1][-3000:]
    return json.loads(lines[0][len("RESULT "):])


def test_two_processes_train_checkpoint_and_resume(tmp_path):
    first = _run("train", tmp_path / "ckpt", 2)
    assert first["processes"] == 2 and first["devices"] == 4
    resumed = _run("resume", tmp_path / "ckpt", 2)
    assert resumed["restored_step"] == 1 and resumed["sharding_kept"]
    assert resumed["params1"] == first["params1"]  # restored bit for bit
    assert resumed["params2"] == first["params2"] and resumed["loss2"] == first["loss2"]


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    pair = _run("train", tmp_path / "pair", 2)
    alone = _run("train", tmp_path / "alone", 1)  # the same 4-device mesh in one process
    assert alone["devices"] == 4
    assert abs(alone["loss1"] - pair["loss1"]) < 1e-6 and abs(alone["loss2"] - pair["loss2"]) < 1e-5
