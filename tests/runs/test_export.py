"""`export` / `metareason export`: a trained lab run and a run started from a Hugging Face model
written as Hugging Face folders. Reference: `transformers` (float32, eager attention) loads each
folder and its logits equal ours on the run's params; `metareason.load` reads the params back
exactly; the lab tokenizer.json encodes lab text to `LAB_VOCAB`'s ids (through `tokenizers` and
`transformers.PreTrainedTokenizerFast`); a non-empty target is refused with nothing changed."""

import contextlib
import dataclasses
import hashlib
import io
import json

import jax
import numpy as np
import pytest

import metareason
from metareason.cli import main
from metareason.model import apply
from metareason.runs import ExportError, export
from metareason.tasks import FAMILIES, render
from metareason.tokenize import LAB_VOCAB
from metareason.train import rl, sft
from metareason.train.presets import rl_presets, train_presets
from reference import torch_and_transformers


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory):
    cfg = dataclasses.replace(train_presets()["tiny"], out=tmp_path_factory.mktemp("sft") / "run", steps=8,
                              checkpoint_every=4, final_eval=False, log_every=4)
    with contextlib.redirect_stdout(io.StringIO()):
        sft.train_sft(cfg)
    return cfg.out


def _lab_texts(n=3):
    rng = np.random.default_rng(0)
    out = []
    for name in sorted(FAMILIES)[:n]:
        fam = FAMILIES[name]
        problem = fam.sample(rng, difficulty=2)
        out.append(f"<bos> {problem.question} <think> {render(fam, problem, 'long', rng).text} </think>")
    return out


def _hf_logits(hf_dir, tokens):
    torch, transformers = torch_and_transformers()
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, attn_implementation="eager",
                                                              dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.as_tensor(tokens, dtype=torch.long)).logits.numpy()


def _tree_digest(path):
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*")):
        h.update(str(f.relative_to(path)).encode())
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()


def _assert_same(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_lab_run_through_transformers(lab_run, tmp_path):
    m = metareason.load(lab_run)
    out = export(lab_run, tmp_path / "hf")
    seqs = [LAB_VOCAB.encode(t) for t in _lab_texts()]
    tokens = np.array([s[:48] for s in seqs], np.int32)  # int32[3, 48] real lab tokens
    assert tokens.shape == (3, 48)
    ours = np.asarray(apply(m.params, tokens, config=m.config.replace(compute_dtype="float32")).logits)
    theirs = _hf_logits(out, tokens)
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4)
    assert np.abs(ours).max() > 0.1  # a signal, not zeros
    back = metareason.load(out)
    _assert_same(back.params, m.params)
    assert back.kind == "lab" and back.lab == m.lab and back.format.prompt({"question": "add 1 + 2 ?"}) == \
        m.format.prompt({"question": "add 1 + 2 ?"})  # a lab model again, prompted as the lab
    assert back.config.to_hf_config() == m.config.to_hf_config()  # the architecture (numerics are not in config.json)
    record = json.loads((out / "metareason_export.json").read_text())
    assert record["kind"] == "lab" and record["step"] == 8 and record["source"]["run"] == "sft"
    assert record["lab"]["families"] == list(m.lab.families)
    hf_config = json.loads((out / "config.json").read_text())
    assert (hf_config["bos_token_id"], hf_config["eos_token_id"]) == (LAB_VOCAB.bos_id, LAB_VOCAB.eos_id)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_lab_tokenizer_encodes_like_the_lab_vocabulary(lab_run, tmp_path):
    _, transformers = torch_and_transformers()
    out = export(lab_run, tmp_path / "hf")
    # (transformers 5's AutoTokenizer picks the Qwen2 tokenizer class from config.json's model_type)
    tok = transformers.PreTrainedTokenizerFast.from_pretrained(out)
    ours = metareason.HFTokenizer.from_dir(out)
    texts = _lab_texts() + ["<pad> <eos> Hold_on **Final Answer** \\boxed{ 1234 } ; x = 7 -> 12 | 30"]
    for text in texts:
        expected = LAB_VOCAB.encode(text)
        assert tok(text, add_special_tokens=False)["input_ids"] == expected
        assert ours.encode(text) == expected
        assert LAB_VOCAB.encode(tok.decode(expected)) == expected  # digits come back apart; same ids
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (LAB_VOCAB.bos_id, LAB_VOCAB.eos_id,
                                                                       LAB_VOCAB.pad_id)
    with pytest.raises(Exception, match="UNK"):  # a word the lab lacks is refused, as LAB_VOCAB refuses it
        ours.encode("hello")


def test_earlier_step_and_bfloat16_from_the_command_line(lab_run, tmp_path):
    with contextlib.redirect_stdout(io.StringIO()):
        main(["export", str(lab_run), str(tmp_path / "hf"), "--step", "4", "--dtype", "bfloat16"])
    back = metareason.load(tmp_path / "hf")
    m = metareason.load(lab_run, 4)
    assert back.config.param_dtype == "bfloat16"
    _assert_same(back.params, jax.tree.map(lambda x: x.astype("bfloat16"), m.params))
    assert any(not np.array_equal(np.asarray(x), np.asarray(y))  # step 4, not the newest
               for x, y in zip(jax.tree.leaves(m.params), jax.tree.leaves(metareason.load(lab_run).params)))


def test_a_non_empty_target_is_refused_unchanged(lab_run, tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "config.json").write_text('{"model_type": "someone else\'s"}')
    (target / "sub").mkdir()
    (target / "sub" / "w.safetensors").write_bytes(b"\x00" * 64)
    before = _tree_digest(target)
    with pytest.raises(ExportError, match=r"^.*taken is not empty; export writes a new folder"):
        export(lab_run, target)
    with pytest.raises((ExportError, SystemExit)):  # the library's error, or the CLI's exit with it printed
        main(["export", str(lab_run), str(target)])
    assert _tree_digest(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # nothing written beside it
    (tmp_path / "empty").mkdir()  # an empty folder is a fine target
    assert (export(lab_run, tmp_path / "empty") / "model.safetensors").exists()
    with pytest.raises(ExportError, match="dtype must be one of float32, bfloat16"):
        export(lab_run, tmp_path / "x", dtype="float16")


def test_run_started_from_a_hugging_face_model(tmp_path):
    from reference import tiny_hf_dir

    model_dir, _, _, data = tiny_hf_dir(tmp_path)
    cfg = rl_presets()["tiny"]
    for k, v in dict(out=tmp_path / "run", init=str(model_dir), data=str(data), steps=1, max_new_tokens=8,
                     questions_per_step=2, group_size=2, minibatches=1, epochs_per_batch=1, final_eval=False).items():
        setattr(cfg, k, v)
    with contextlib.redirect_stdout(io.StringIO()):
        rl.train_grpo(cfg)
    m = metareason.load(tmp_path / "run")
    out = export(m, tmp_path / "hf")  # a LoadedModel in hand
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (out / name).read_bytes() == (model_dir / name).read_bytes()
    tokens = np.array([m.format.prompt({"question": "What is 2 + 2?"})[:12]] * 2, np.int32)
    ours = np.asarray(apply(m.params, tokens, config=m.config.replace(compute_dtype="float32")).logits)
    np.testing.assert_allclose(_hf_logits(out, tokens), ours, rtol=1e-4, atol=1e-4)
    back = metareason.load(out)
    _assert_same(back.params, m.params)
    assert back.kind == "hf" and back.format.prompt({"question": "hi"}) == m.format.prompt({"question": "hi"})
    assert json.loads((out / "metareason_export.json").read_text())["source"]["run"] == "grpo"
    again = export(model_dir, tmp_path / "hf-of-hf", dtype="bfloat16")  # a Hugging Face folder as the source
    assert (again / "tokenizer.json").read_bytes() == (model_dir / "tokenizer.json").read_bytes()
    _assert_same(metareason.load(again).params,
                 jax.tree.map(lambda x: x.astype("bfloat16"), metareason.load(model_dir).params))
