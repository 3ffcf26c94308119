"""The device benchmark scripts parse (bash -n) and their one summary table renders from the
committed H200 results. No benchmark is run or timed here (timings live in benchmarks/)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["gpu.sh", "tpu.sh"])
def test_device_scripts_parse(script):
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / script)], check=True)


def test_summary_table_renders_the_h200_results():
    files = sorted((ROOT / "benchmarks" / "results").glob("*h200*.json"))
    assert files
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "summary.py"), *map(str, files)],
                         check=True, capture_output=True, text=True).stdout
    assert "decode B=32" in out and "SFT step" in out and "forward cudnn" in out
    assert "35% of bandwidth bound" in out  # sample_qwen2-1.5b_h200.json: 0.354


def test_summary_reads_a_grpo_result(tmp_path):
    import json
    side = {"ours": {"step_s_median": 0.5, "rollout_s_median": 0.1, "rollout_tokens_per_s": 20480.0},
            "tunix": {"step_s_median": 1.0, "rollout_s_median": 0.3, "rollout_tokens_per_s": 6826.0},
            "ratio_step": 2.0, "ratio_rollout_tokens_per_s": 3.0, "backend": "cpu", "device": "cpu", "model": "tiny",
            "settings": {"questions": 4, "group": 8, "new": 64, "repeats": 5}}
    (tmp_path / "grpo.json").write_text(json.dumps(side))
    (tmp_path / "other.json").write_text("{}")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "summary.py"), str(tmp_path)],
                         check=True, capture_output=True, text=True)
    assert "GRPO step" in out.stdout and "2.00x" in out.stdout and "3.00x" in out.stdout
    assert "other.json" in out.stderr
