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


def test_rl_then_eval_from_the_command_line(tmp_path, capsys):
    run = tmp_path / "grpo"
    main(["rl", "--preset", "tiny", "--out", str(run), "--steps", "2", "--no-final-eval"])
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    main(["eval", "--model", str(run), "--data", "lab:test", "--n", "2", "--k", "1", "2", "--max-new-tokens", "16",
          "--batch-size", "8", "--out", str(tmp_path / "eval")])
    res = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert res["datasets"]["lab:test"]["questions"] == 16     # 8 per family, arith and pointer
    assert "| lab:test | 16 |" in capsys.readouterr().out
