"""E4 / E12 between the two modes of one model: /think vs /no_think prompts, matched token counts,
the forced answers equal the sampler's budget forcing; the same for a tiny Hugging Face model."""

import jax
import numpy as np
import pytest

from metareason.format import LabFormat
from metareason.model import init
from metareason.probe import ProbeBatch, answer_loss_per_prefix
from metareason.probe.efficiency import budget_forced_answers, mode_efficiency, mode_prompt, mode_table
from metareason.tasks.lab import LabConfig, lab_records
from metareason.tokenize.lab import LAB_VOCAB
from metareason.train.presets import model_preset


def _ref_nll(params, config, ctx, probe_head, answer):
    probe = np.concatenate([probe_head, answer])[None]
    targets = np.arange(probe.shape[1])[None] >= len(probe_head)
    ref = answer_loss_per_prefix(params, ProbeBatch(ctx[None], [len(ctx)], [[len(ctx)]], probe, targets), config=config)
    return float(ref.mean[0, 0])


@pytest.mark.slow  # ~20-50 s on the shared 2 cores (compilations)
def test_lab_modes_matched_tokens_and_budget_forcing():
    config = model_preset("lab-tiny")
    params = init(config, jax.random.key(2))
    lab = LabConfig(families=("arith",), style="long", mode="think", train_size=5, eval_size=3)
    records = list(lab_records(lab, "test"))
    summaries = [next(lab_records(LabConfig(families=("arith",), style="summary", train_size=5, eval_size=3),
                                  "test"))["trajectory"]] * 3
    raw = mode_efficiency(params, config, records, budgets=(2, 5), summaries=summaries, max_thinking=12)
    rows, fmt = raw["rows"], LabFormat()
    assert list(rows) == ["no_think", "think@2", "think@5", "think", "summary", "think@summary"]
    full = np.asarray(rows["think"]["tokens"])
    assert rows["no_think"]["tokens"] == [0, 0, 0]
    for b in (2, 5):
        assert rows[f"think@{b}"]["tokens"] == np.minimum(full, b).tolist()
    n_summary = len(LAB_VOCAB.encode(summaries[0]))
    assert rows["summary"]["tokens"] == [n_summary] * 3
    assert rows["think@summary"]["tokens"] == np.minimum(full, n_summary).tolist()
    # the no-thinking row is the /no_think prompt's forced answer: NLL against the probe reference
    force = np.asarray(fmt.force_tokens, np.int32)
    for i, r in enumerate(records):
        ctx = np.asarray(mode_prompt(fmt, r, "no_think"), np.int32)
        assert ctx[-2] == LAB_VOCAB.ids["/no_think"]
        ans = np.asarray(LAB_VOCAB.encode(r["answer"]), np.int32)
        assert abs(_ref_nll(params, config, ctx, force, ans) - rows["no_think"]["nll"][i]) < 1e-4
    # the budget rows' answers equal the sampler's budget forcing (Forcing inside the decode loop)
    think = [np.asarray(mode_prompt(fmt, r, "think"), np.int32) for r in records]
    forced = budget_forced_answers(params, config, think, force, end_think=LAB_VOCAB.end_think_id,
                                   close_id=LAB_VOCAB.ids["}"], budget=5)
    want = [int(fmt.verdict([*force, *a], r).correct) for a, r in zip(forced, records)]
    assert rows["think@5"]["correct"] == want
    table = {t["row"]: t for t in mode_table(raw)}
    assert table["no_think"]["minus_baseline"] is None and table["think"]["n"] == 3
    acc = table["think@5"]["accuracy"]
    assert acc["low"] <= np.mean(want) <= acc["high"]


@pytest.mark.slow
def test_hf_modes_empty_think_block(tmp_path):
    from reference import CHATML, tiny_hf_dir, write_tiny_tokenizer
    from metareason.format import HFFormat
    from metareason.runs import load
    from metareason.tokenize import HFTokenizer

    model_dir, config, params, _ = tiny_hf_dir(tmp_path)
    model = load(model_dir)
    fmt = model.format
    rec = {"question": "What is 12 + 35?", "answer": "47"}
    # Qwen3-style template (enable_thinking=False writes the empty block) == the fallback's block
    plain = write_tiny_tokenizer(tmp_path / "plain", CHATML.replace("enable_thinking is defined", "false"), None)
    other = HFFormat(HFTokenizer.from_dir(plain))
    a, b = mode_prompt(fmt, rec, "no_think"), mode_prompt(other, rec, "no_think")
    assert fmt.decode(a).endswith("assistant\n<think>\n\n</think>\n\n") and a == b
    assert mode_prompt(fmt, rec, "think") == fmt.prompt(rec)
    raw = mode_efficiency(model.params, model.config, [rec, {**rec, "answer": "46"}], budgets=(3,),
                          summaries=["12 + 35 = 47.", "47"], fmt=fmt, max_thinking=6)
    rows = raw["rows"]
    full = np.asarray(rows["think"]["tokens"])
    assert rows["think@3"]["tokens"] == np.minimum(full, 3).tolist()
    summ = [len(fmt.tok.encode(s)) for s in ["12 + 35 = 47.", "47"]]
    assert rows["summary"]["tokens"] == summ
    assert rows["think@summary"]["tokens"] == np.minimum(full, summ).tolist()
    # no_think: the template alone after the closed block; its NLL against the probe reference
    ctx = np.asarray(mode_prompt(fmt, rec, "no_think"), np.int32)
    ex = fmt.probe_example(rec["question"], "", "47", delimiter=True)
    ans2 = ex.probe[ex.targets]
    ref = _ref_nll(model.params, model.config, ctx, np.asarray(fmt.template_tokens, np.int32), ans2)
    assert abs(ref - rows["no_think"]["nll"][0]) < 1e-4
