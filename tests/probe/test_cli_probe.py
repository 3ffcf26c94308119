"""`metareason probe` on a Hugging Face directory and `metareason demo` on a tiny budget, end to end."""

import json

import numpy as np
import pytest

from metareason.cli import main
from metareason.probe import ProbeBatch, answer_loss_per_prefix
from metareason.probe.run import boxed_answer


def test_boxed_answer():
    assert boxed_answer("so \\boxed{1} then \\boxed{\\frac{1}{2}} .") == "\\frac{1}{2}"
    assert boxed_answer("no box") is None and boxed_answer("\\boxed{open") is None


def test_probe_hf_directory(tmp_path):
    from reference import ANSWER_ROWS as rows
    from reference import tiny_hf_dir
    from metareason.tokenize import HFTokenizer

    model_dir, config, params, data = tiny_hf_dir(tmp_path)
    out = tmp_path / "probe"
    main(["probe", "--model", str(model_dir), "--data", str(data), "--out", str(out)])
    curves = [json.loads(x) for x in (out / "curves.jsonl").read_text().splitlines()]
    assert sorted(c["group"] for c in curves) == ["correct (generations)", "correct (reference)",
                                                  "incorrect (generations)"]
    res = json.loads((out / "results.json").read_text())
    assert {"E2", "E3", "E4", "E5"} <= set(res["figures"]) and (out / "summary.md").exists()
    # the written curve is the probe of the tokenized texts: check one point against the reference
    tok = HFTokenizer.from_dir(model_dir)
    c = next(c for c in curves if c["group"] == "incorrect (generations)")
    prompt = tok.encode(tok.apply_chat_template([{"role": "user", "content": rows[0]["question"]}],
                                                add_generation_prompt=True, tokenize=False))
    traj = tok.encode(rows[0]["generations"][1])
    head, ans = tok.encode("\n\n**Final Answer**\n\\boxed{"), tok.encode("47")
    k = c["k"][len(c["k"]) // 2]
    ctx = np.asarray([prompt + traj])
    probe = np.asarray([head + ans])
    targets = np.arange(probe.shape[1])[None] >= len(head)
    ref = answer_loss_per_prefix(params, ProbeBatch(ctx, [ctx.shape[1]], [[len(prompt) + k]], probe, targets),
                                 config=config)
    assert c["loss"][len(c["k"]) // 2] == pytest.approx(float(ref.mean[0, 0]), rel=1e-4)


def test_probe_rejects_a_non_model(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:  # the CLI prints the FileNotFoundError as one line
        main(["probe", "--model", str(tmp_path)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("metareason: ") and "neither a training run" in err


def test_demo_tiny(tmp_path, monkeypatch):
    import dataclasses

    from metareason.model import presets
    # lab-tiny with 320 positions, not 1024 (the demo trains on 256-token rows): the untrained model never
    # ends its thinking, so E12's "full" row decodes all the room the context leaves; ~12 CPU-s less
    monkeypatch.setitem(presets.MODEL_PRESETS, "lab-tiny",
                        dataclasses.replace(presets.MODEL_PRESETS["lab-tiny"], max_position_embeddings=320))
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--steps", "12", "--max-questions", "4", "--samples", "1",
            "--landscape-grid", "3", "--model", "lab-tiny", "--eval-questions", "2",
            "--budgets", "0", "6"]
    main(argv)
    report = (out / "report.md").read_text()
    for key in ("E1", "E2", "E3", "E4", "E5", "E12"):
        assert f"| {key} |" in report
    for fig in ("e1_landscape", "e2_descent", "e3_incorrect", "e4_delimiter", "e5_token_types", "e12_efficiency"):
        assert (out / "probe" / f"{fig}.png").stat().st_size > 1000
    mtime = (out / "model" / "summary.json").stat().st_mtime
    main(argv[:argv.index("--landscape-grid")] + ["--landscape-grid", "0", "--samples", "0"])  # reuses the model
    assert (out / "model" / "summary.json").stat().st_mtime == mtime


@pytest.mark.parametrize("name, where", [("load_model", "metareason.load"), ("run_demo", "metareason.demo.run_demo"),
                                         ("DemoConfig", "metareason.demo.DemoConfig")])
def test_moved_names_say_where(name, where):
    import metareason.probe.run as probe_run
    with pytest.raises(AttributeError, match=rf"^metareason.probe.run.{name} moved to {where}"):
        getattr(probe_run, name)
