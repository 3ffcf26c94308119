"""`metareason compare` end to end on a Hugging Face directory: the rows it writes are checked
against the probe's per-prefix reference, and a rerun resumes instead of recomputing."""

import dataclasses
import json

import numpy as np
import pytest

from metareason.cli import main
from metareason.probe import ProbeBatch, answer_loss_per_prefix


def test_compare_hf_directory_and_resume(tmp_path):
    from metareason.tokenize import HFTokenizer

    from reference import ANSWER_ROWS as rows
    from reference import tiny_hf_dir

    model_dir, config, params, data = tiny_hf_dir(tmp_path, initializer_range=0.2)
    out = tmp_path / "compare"
    args = ["compare", "--model", str(model_dir), "--data", str(data), "--out", str(out), "--steps", "3",
            "--max-tokens", "10"]
    main(args)
    written = [json.loads(x) for x in (out / "compare.jsonl").read_text().splitlines()]
    assert sorted(r["group"] for r in written) == ["correct (generations)", "correct (reference)", "incorrect"]
    res = json.loads((out / "results.json").read_text())
    assert set(res["groups"]) == {"correct (generations)", "correct (reference)", "incorrect"}
    assert (out / "summary.md").exists() and all((out / f"{k}.png").exists() for k in res["figures"])
    # one row checked against the probe's per-prefix reference on the tokenized texts
    tok = HFTokenizer.from_dir(model_dir)
    r = next(r for r in written if r["group"] == "incorrect")
    prompt = tok.encode(tok.apply_chat_template([{"role": "user", "content": rows[0]["question"]}],
                                                add_generation_prompt=True, tokenize=False))
    traj = tok.encode(rows[0]["generations"][1])[:10]
    head, ans = tok.encode("\n\n**Final Answer**\n\\boxed{"), tok.encode("47")
    ks = np.asarray(r["k"])
    assert ks.tolist() == list(range(len(traj) + 1))
    ctx = np.asarray([prompt + traj])
    probe = np.asarray([head + ans])
    batch = ProbeBatch(ctx, [ctx.shape[1]], [len(prompt) + ks], probe, np.arange(probe.shape[1])[None] >= len(head))
    ref = np.asarray(answer_loss_per_prefix(params, batch, config=config).mean[0])
    np.testing.assert_allclose(r["loss_in_context"], ref, rtol=1e-4)
    np.testing.assert_allclose(r["loss_patched"], ref, rtol=1e-3)
    assert r["answer_gd"][0] == pytest.approx(ref[0], rel=1e-4) and len(r["answer_gd"]) == 4
    assert r["answer_gd"][-1] < r["answer_gd"][0]
    # resume: drop the last row, rerun; the others are kept as written, the dropped one is recomputed
    lines = (out / "compare.jsonl").read_text().splitlines()
    (out / "compare.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    main(args)
    again = (out / "compare.jsonl").read_text().splitlines()
    assert again[:-1] == lines[:-1] and len(again) == len(lines)
    np.testing.assert_allclose(json.loads(again[-1])["loss_in_context"], json.loads(lines[-1])["loss_in_context"],
                               rtol=1e-6)


def test_compare_rejects_bad_options(tmp_path, capsys):
    # checked when the flags are parsed, printed as one line with exit code 2
    for flags, msg in ((["--subset", "attention"], "metareason: --subset must be 'all' or 'mlp', got 'attention'\n"),
                       (["--steps", "0"], "metareason: --steps must be an integer >= 1, got 0\n")):
        with pytest.raises(SystemExit) as stop:
            main(["compare", "--model", str(tmp_path), *flags])
        assert stop.value.code == 2 and capsys.readouterr().err == msg


def test_prop21_on_model_equals_the_explicit_construction():
    """The closed form against building W_v' = G^+ (G + t0^T t0) W_v and running linear attention
    with and without the extra token, on a random model's first block."""
    from metareason.studies.prop21 import prop21_on_model
    from metareason.model import rms_norm
    from metareason.probe.inputs import Example
    from reference import TINY, random_params

    config = TINY["llama3"]  # GQA: 8 query heads on 2 kv heads
    params = random_params(config, seed=4)
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, config.vocab_size, 9)
    emb = np.asarray(params["embed_tokens"]["embedding"])
    norm = lambda ids: np.asarray(rms_norm(emb[ids], params["layers"]["input_layernorm"]["scale"][0],  # noqa
                                           config.rms_norm_eps), np.float64)
    X = norm(prompt)
    a = params["layers"]["self_attn"]
    G = config.num_heads // config.num_kv_heads
    wq, wo = np.asarray(a["q_proj"]["kernel"][0], np.float64), np.asarray(a["o_proj"]["kernel"][0], np.float64)
    wk = np.repeat(np.asarray(a["k_proj"]["kernel"][0], np.float64), G, axis=1)
    wv = np.repeat(np.asarray(a["v_proj"]["kernel"][0], np.float64), G, axis=1)

    def linear_attention(x, ctx, wv_):
        return sum((x @ wq[:, h]) @ (ctx @ wk[:, h]).T @ (ctx @ wv_[:, h]) @ wo[h] for h in range(config.num_heads))

    for token, inside in ((int(prompt[3]), True), (int(rng.integers(0, config.vocab_size)), False)):
        ex = Example(prompt, np.asarray([token]), np.asarray([1, 2]), np.asarray([False, True]), ("word",), {})
        got = prop21_on_model(params, ex, config=config)
        t0 = norm(np.asarray([token]))
        Gm = X.T @ X
        wv_new = np.einsum("de,ehf->dhf", np.linalg.pinv(Gm) @ (Gm + t0.T @ t0), wv)
        x = X[-1]
        with_token = linear_attention(x, np.vstack([X, t0]), wv)
        constructed = linear_attention(x, X, wv_new)
        contribution = with_token - linear_attention(x, X, wv)
        rel = np.linalg.norm(with_token - constructed) / np.linalg.norm(contribution)
        assert got["relative_error"] == pytest.approx(rel, rel=1e-3, abs=1e-5)
        if inside:
            assert got["span_residual"][0] < 1e-5 and rel < 1e-5
        else:
            assert got["span_residual"][0] > 0.5 and rel > 0.05


def test_compare_refuses_another_models_folder_and_other_settings(tmp_path):
    from metareason.runs import ProvenanceError
    from metareason.studies.compare import CompareConfig, run_compare

    from reference import tiny_hf_dir, tree_hash

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    model_a, _, _, data = tiny_hf_dir(tmp_path / "a")
    model_b, _, _, _ = tiny_hf_dir(tmp_path / "b", initializer_range=0.2)
    out = tmp_path / "compare"
    cfg = CompareConfig(model=model_a, data=str(data), out=out, max_questions=1, max_tokens=4, steps=1)
    run_compare(cfg)
    before = tree_hash(out)
    for change, field in [(dict(model=model_b), r"model\.config, model\.files\)"), (dict(steps=2), r"steps\)"),
                          (dict(max_tokens=5), r"max_tokens\)"), (dict(subset="mlp"), r"subset\)")]:
        with pytest.raises(ProvenanceError, match=rf"differs in: {field}.*--overwrite"):
            run_compare(dataclasses.replace(cfg, **change))
        assert tree_hash(out) == before
    # the same settings resume (every row is there: nothing recomputed, the rows unchanged)
    run_compare(cfg)
    assert tree_hash(out)["compare.jsonl"] == before["compare.jsonl"]
    # --overwrite moves the old folder aside, untouched
    run_compare(dataclasses.replace(cfg, model=model_b, overwrite=True))
    assert tree_hash(tmp_path / "compare.old-1")["compare.jsonl"] == before["compare.jsonl"]
    assert json.loads((out / "provenance.json").read_text())["fingerprint"]["model"]["files"] != \
        json.loads((tmp_path / "compare.old-1" / "provenance.json").read_text())["fingerprint"]["model"]["files"]
