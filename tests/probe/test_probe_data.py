"""`metareason probe` data handling: examples longer than --max-tokens are skipped and counted,
generation ids survive into the curves, and named datasets (lab:SPLIT:FAMILY, champ) resolve."""

import json

import jax
import pytest

from metareason.cli import main, parse_config
from metareason.model import init
from metareason.model.presets import model_preset
from metareason.probe.run import run_probe
from metareason.runs import LoadedModel
from metareason.tasks.lab import LabConfig
from reference import tiny_hf_dir


def _curves(out):
    return [json.loads(x) for x in (out / "curves.jsonl").read_text().splitlines()]


def test_long_example_is_skipped_and_generation_ids_kept(tmp_path):
    model_dir, config, params, _ = tiny_hf_dir(tmp_path)  # context 256
    rows = [{"id": "q1", "question": "What is 12 + 35?", "answer": "47",
             "generations": ["the sum is 47. \\boxed{47}", "it is 46. \\boxed{46}", "so 47 \\boxed{47}"]},
            {"id": "long", "question": "What is 1 + 1?", "answer": "2", "trajectory": "1 + 1 = 2. " * 200}]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "probe"
    main(["probe", "--model", str(model_dir), "--data", str(data), "--out", str(out), "--every", "4"])
    res = json.loads((out / "results.json").read_text())
    assert res["skipped"]["count"] == 1 and res["skipped"]["max_tokens"] == 256
    assert res["skipped"]["by_group"]["correct (reference)"] == 1
    assert "Skipped 1 example(s)" in (out / "summary.md").read_text()
    curves = _curves(out)
    assert sorted((c["id"], c["generation"]) for c in curves) == [("q1-g0", 0), ("q1-g1", 1), ("q1-g2", 2)]
    # a smaller --max-tokens skips more, and says so; none fitting is one clear error
    with pytest.raises(SystemExit) as stop:
        main(["probe", "--model", str(model_dir), "--data", str(data), "--out", str(tmp_path / "p2"),
              "--max-tokens", "8"])
    assert stop.value.code == 2


def test_lab_family_spec_resolves(tmp_path):
    lab = LabConfig(families=("arith", "pointer"), difficulty=(1,), train_size=30, eval_size=3)
    config = model_preset("lab-tiny")
    model = LoadedModel.wrap(config, init(config, jax.random.key(0)), lab=lab)
    cfg = parse_config("probe", ["--model", str(tmp_path), "--data", "lab:test:arith", "--max-questions", "2",
                                 "--samples", "0", "--landscape-grid", "0", "--out", str(tmp_path / "p")])
    res = run_probe(cfg, model=model)
    curves = _curves(tmp_path / "p")
    assert {c["family"] for c in curves} == {"arith"} and len({c["id"] for c in curves}) == 2
    assert res["skipped"]["count"] == 0 and "2 questions from lab:test:arith" in res["source"]


def test_champ_resolves_for_a_hugging_face_model(tmp_path):
    from metareason.data.named import champ_records

    model_dir, *_ = tiny_hf_dir(tmp_path, max_position_embeddings=4096)
    out = tmp_path / "probe"
    main(["probe", "--model", str(model_dir), "--data", "champ", "--max-questions", "2", "--every", "256",
          "--out", str(out)])
    first = [r["id"] for r in champ_records()][:2]
    res = json.loads((out / "results.json").read_text())
    assert sorted(c["id"] for c in _curves(out)) == sorted(first) and res["skipped"]["count"] == 0
    assert res["groups"]["correct (reference)"] == 2 and "2 questions from champ" in res["source"]
    # with --max-tokens 450 the longer problem (about 500 trajectory tokens) is skipped, not fatal
    main(["probe", "--model", str(model_dir), "--data", "champ", "--max-questions", "2", "--every", "256",
          "--max-tokens", "450", "--out", str(tmp_path / "p2")])
    res = json.loads((tmp_path / "p2" / "results.json").read_text())
    assert res["skipped"]["count"] == 1 and res["groups"]["correct (reference)"] == 1
    assert [c["id"] for c in _curves(tmp_path / "p2")] == [first[1]]


def test_named_records_specs():
    from metareason.data.named import DatasetError, named_records
    from metareason.tasks.lab import lab_records

    lab = LabConfig(families=("arith", "pointer"), difficulty=(1,), train_size=30, eval_size=3)
    assert named_records("lab", lab=lab) == named_records("lab:test", lab=lab) == list(lab_records(lab, "test"))
    assert {r["family"] for r in named_records("lab:test:pointer", lab=lab)} == {"pointer"}
    champ = named_records("champ")
    assert len(champ) == 270 and champ[0]["source"] == "champ" and champ[0]["trajectory"]
    for spec, kw, msg in [("lab:test", {}, "needs a lab model"), ("champ", {"lab": lab}, "lab model reads"),
                          ("lab:train", {"lab": lab}, "expected lab:SPLIT")]:
        with pytest.raises(DatasetError, match=msg):
            named_records(spec, **kw)
