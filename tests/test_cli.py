"""The README's main job (`metareason selfcheck`) end to end, in-process."""

import json

from metareason.cli import main


def test_selfcheck_writes_a_passing_report(tmp_path):
    main(["selfcheck", "--out", str(tmp_path / "sc"), "--families", "qwen2", "qwen3", "--seq-len", "9"])
    report = json.loads((tmp_path / "sc" / "report.json").read_text())
    assert report["passed"] and set(report["families"]) == {"qwen2", "qwen3"}
    for r in report["families"].values():
        assert r["reload_bit_exact"] and r["cache_vs_full_max_abs"] < 1e-4
        assert (tmp_path / "sc" / "qwen2" / "model.safetensors").exists()
