"""The two-mode lab: /think and /no_think markers, LabConfig.mode / mix, and defaults unchanged."""

import dataclasses
import hashlib

import numpy as np
import pytest

from metareason.data.records import normalize_record
from metareason.format import LabFormat
from metareason.tasks.lab import LabConfig, encode_example, lab_records, prompt_tokens
from metareason.tokenize.lab import LAB_VOCAB

# computed at main (before the modes) with the same loop: the default records' ids are unchanged
MAIN_HASH = "9162705f17f984440e081d522fa8ae5aa6ccb6ba2e50151c28af228bf874982d"


def _hash(cfg, mode_from_record=False):
    h = hashlib.sha256()
    for split in ("train", "test"):
        for r in lab_records(cfg, split):
            e = encode_example(r["question"], r["trajectory"], r["answer"], mode=r["mode"] if mode_from_record else "")
            h.update(e["tokens"].tobytes())
            h.update(e["loss_mask"].tobytes())
    return h.hexdigest()


def test_defaults_reproduce_main_token_ids():
    cfg = LabConfig(train_size=20, eval_size=5, seed=3)
    assert _hash(cfg, mode_from_record=True) == MAIN_HASH
    assert LAB_VOCAB.tokens[-2:] == ("/think", "/no_think") and LAB_VOCAB.size == 89
    assert cfg.fingerprint() == LabConfig(train_size=20, eval_size=5, seed=3, mode="", mix=()).fingerprint()
    assert cfg.fingerprint() != dataclasses.replace(cfg, mode="think").fingerprint()


def test_mode_prompts_differ_only_in_marker():
    q = "compute 12 + 35"
    base, think, no = (prompt_tokens(q, mode=m) for m in ("", "think", "no_think"))
    assert think == base[:-1] + [LAB_VOCAB.ids["/think"], LAB_VOCAB.think_id]
    assert no == base[:-1] + [LAB_VOCAB.ids["/no_think"], LAB_VOCAB.think_id]
    diff = [i for i, (a, b) in enumerate(zip(think, no)) if a != b]
    assert len(think) == len(no) and diff == [len(base) - 1]
    fmt = LabFormat()
    assert fmt.prompt({"question": q, "mode": "no_think"}) == no and fmt.prompt({"question": q}) == base
    ex = encode_example(q, "", "47", mode="no_think")
    assert ex["tokens"][:len(no)].tolist() == no and ex["loss_mask"][:len(no)].sum() == 0
    assert ex["tokens"][len(no)] == LAB_VOCAB.end_think_id  # empty thinking block


def test_mix_fractions_are_exact_and_questions_unchanged():
    cfg = LabConfig(families=("arith", "linear"), style="long", mode="think", train_size=50, eval_size=5,
                    mix=(("summary", "think", 0.2), ("none", "no_think", 0.3)))
    plain = LabConfig(families=("arith", "linear"), style="long", mode="think", train_size=50, eval_size=5)
    mixed, ref = list(lab_records(cfg, "train")), list(lab_records(plain, "train"))
    assert [r["question"] for r in mixed] == [r["question"] for r in ref]
    for fam in ("arith", "linear"):
        rows = [r for r in mixed if r["family"] == fam]
        kinds = [(r["style"], r["mode"]) for r in rows]
        assert kinds.count(("summary", "think")) == 10 and kinds.count(("none", "no_think")) == 15
        assert kinds.count(("long", "think")) == 25
    for r, q in zip(mixed, ref):
        if r["style"] == "none":
            assert r["trajectory"] == "" and r["mode"] == "no_think"
        elif r["style"] == "long":
            assert r["trajectory"] == q["trajectory"]
    assert {r["mode"] for r in lab_records(cfg, "test")} == {"think"}  # mix is the train split's only
    assert normalize_record(mixed[0])["mode"] == mixed[0]["mode"]
    assert "mode" not in normalize_record({**mixed[0], "mode": ""})


@pytest.mark.parametrize("kw, word", [(dict(mode="think_hard"), "mode"), (dict(mix=(("long", "think"),)), "entries"),
                                      (dict(mix=(("weird", "think", 0.1),)), "style"),
                                      (dict(mix=(("none", "no_think", 0.0),)), "fraction"),
                                      (dict(mix=(("none", "no_think", 0.7), ("summary", "think", 0.5))), "sum")])
def test_bad_modes_one_line(kw, word):
    with pytest.raises(ValueError, match=word) as err:
        LabConfig(**kw)
    assert "\n" not in str(err.value)


def test_mixed_sft_runs_and_evaluates_each_mode(tmp_path):
    """SFT on the two-mode mix through train_sft (lab-tiny, a few steps), then greedy evaluation
    prompted in each mode: the prompts the model sees carry the chosen marker."""
    import json

    from metareason.runs.load import lab_config_from_json
    from metareason.train.evaluation import lab_accuracy
    from metareason.train.sft import SFTConfig, train_sft
    from metareason.train.state import OptimizerConfig
    from metareason.runs import load

    lab = LabConfig(families=("arith",), style="long", mode="think", train_size=40, eval_size=4,
                    mix=(("summary", "think", 0.2), ("none", "no_think", 0.2)))
    cfg = SFTConfig(out=tmp_path / "run", model="lab-tiny", steps=3, batch_size=2, seq_len=288,
                    optimizer=OptimizerConfig(lr=1e-3), eval_every=0, eval_questions=2, checkpoint_every=3,
                    final_eval=False, seed=0, lab=lab)
    summary = train_sft(cfg)
    assert summary["steps"] == 3
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["lab"]
    assert lab_config_from_json(saved) == lab
    run = load(tmp_path / "run")
    recs = list(lab_records(lab, "test"))[:2]
    from metareason.data import build_lab
    built = list(build_lab(lab, tmp_path / "run" / "data")["train"])  # what training read: modes survive tfds
    kinds = [(r["style"], r.get("mode", "")) for r in built]
    assert kinds.count(("none", "no_think")) == 8 and kinds.count(("summary", "think")) == 8
    assert kinds.count(("long", "think")) == 24
    fmt = LabFormat()
    ex = fmt.example(next(r for r in built if r.get("mode") == "no_think"))
    assert LAB_VOCAB.ids["/no_think"] in ex["tokens"].tolist()
    for mode in ("think", "no_think"):
        acc = lab_accuracy(run.params, run.config, [{**r, "mode": mode} for r in recs], max_new_tokens=16)
        assert acc["n"] == 2
