"""SFT on a Hugging Face model and a file of generations: the example encoding against the
`transformers` tokenizer, the first loss against the `transformers` model, the E10 rule on the
file's generations, and the run directory loading, and evaluating, as a Hugging Face model."""

import contextlib
import io
import json

import numpy as np
import pytest

from metareason.format import HFFormat, LabFormat
from metareason.tasks.lab import encode_example
from metareason.tokenize.hf import HFTokenizer
from metareason.train import sft
from metareason.train.state import OptimizerConfig
from reference import hf_logits, tiny_hf_dir, torch_and_transformers

THINK = "<think>\n"
ROWS = [  # k_trajectories=2: "c" (one generation) and "d" (a trajectory only) are skipped
    {"id": "a", "question": "What is 12 + 35?", "answer": "47",
     "generations": ["Let me think. 12 + 35 = 47.</think>\n\\boxed{47}", "Wait, the carry is 1, so 47. \\boxed{47}",
                     "the sum is 46. Therefore \\boxed{46}"]},
    {"id": "b", "question": "What is 2 + 3?", "answer": "5",
     "generations": ["2 + 3 = 5. Therefore the answer is \\boxed{5}", "Wait, 5.</think> \\boxed{5}"]},
    {"id": "c", "question": "What is 1 + 1?", "answer": "2", "generations": ["\\boxed{2}"]},
    {"id": "d", "question": "What is 3 + 4?", "answer": "7", "trajectory": "3 + 4 = 7."},
]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(out, model_dir, data, **kw):
    base = dict(out=out, init=str(model_dir), data=str(data), think_prefix=THINK, k_trajectories=2,
                slots_per_question=2, steps=8, batch_size=2, seq_len=160, log_every=1, checkpoint_every=4,
                final_eval=False, optimizer=OptimizerConfig(lr=1e-2, warmup_steps=1, weight_decay=0.0))
    return sft.SFTConfig(**{**base, **kw})


def _reference_tokenizer(transformers, model_dir):
    """The `transformers` tokenizer of `model_dir`, of the class its tokenizer_config.json names.
    (AutoTokenizer would pick transformers 5's Qwen2Tokenizer from config.json, which replaces the
    pre-tokenizer of tokenizer.json by Qwen2's, splitting digits; the tiny test tokenizer's is plain
    byte-level, a real Qwen2 tokenizer.json has Qwen2's own.)"""
    return transformers.PreTrainedTokenizerFast.from_pretrained(str(model_dir))


def _reference_example(tok, question, generation):
    """tokens and loss mask from the `transformers` tokenizer: the chat template with the generation
    prompt, the think prefix and the generation as one text, then eos; loss on what follows the prompt."""
    prompt = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                     tokenize=False) + THINK
    n_prompt = len(tok.encode(prompt, add_special_tokens=False))
    tokens = tok.encode(prompt + generation, add_special_tokens=False) + [tok.eos_token_id]
    return tokens, [0] * n_prompt + [1] * (len(tokens) - n_prompt)


def test_hf_example_matches_the_transformers_tokenizer(tmp_path):
    _, transformers = torch_and_transformers()
    model_dir, _, _, _ = tiny_hf_dir(tmp_path)
    ref = _reference_tokenizer(transformers, model_dir)
    fmt = HFFormat(HFTokenizer.from_dir(model_dir), think_prefix=THINK)
    checked = 0
    for r in ROWS:
        for g in r.get("generations", []):
            got = fmt.example(dict(r, trajectory=g))
            tokens, mask = _reference_example(ref, r["question"], g)
            assert got["tokens"].dtype == got["loss_mask"].dtype == np.int32
            assert got["tokens"].tolist() == tokens and got["loss_mask"].tolist() == mask
            assert got["tokens"][-1] == ref.convert_tokens_to_ids("<|im_end|>")
            assert ref.decode(got["tokens"][got["loss_mask"] == 1].tolist()) == g + "<|im_end|>"
            checked += 1
    assert checked == 6


def test_lab_example_is_encode_example():
    r = {"question": "3 + 4", "trajectory": "3 + 4 = 7", "answer": "7"}
    got, want = LabFormat().example(r), encode_example("3 + 4", "3 + 4 = 7", "7")
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory):
    """An SFT run of 8 steps on the tiny Hugging Face model and ROWS; the batches it trained on and
    what it printed."""
    tmp = tmp_path_factory.mktemp("sft_hf")
    model_dir, _, _, _ = tiny_hf_dir(tmp)
    data = _write(tmp / "gens.jsonl", ROWS)
    real, batches = sft.make_train_step, []

    def recording(config, optimizer):
        step = real(config, optimizer)

        def wrapped(state, batch):
            batches.append({k: np.asarray(v) for k, v in batch.items()})
            return step(state, batch)
        return wrapped

    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setattr(sft, "make_train_step", recording)
        summary = sft.train_sft(_cfg(tmp / "run", model_dir, data))
    return dict(tmp=tmp, model_dir=model_dir, data=data, run=tmp / "run", summary=summary, batches=batches,
                printed=printed.getvalue())


def test_sft_trains_on_the_generations_and_its_first_loss_matches_transformers(hf_run):
    torch, transformers = torch_and_transformers()
    model_dir = hf_run["model_dir"]
    rows = [json.loads(x) for x in (hf_run["run"] / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r.get("split", "train") == "train" and "loss" in r]
    assert [r["step"] for r in train] == list(range(1, 9))
    assert train[-1]["loss"] < 0.8 * train[0]["loss"]
    assert hf_run["printed"].count("skipped 2 of 4 records") == 1

    # every packed segment is one (question, generation) example of a kept record, as `transformers` encodes it
    tok = _reference_tokenizer(transformers, model_dir)
    examples = {}
    for r in ROWS[:2]:
        for g in r["generations"][:2]:  # k_trajectories=2: the first two
            tokens, mask = _reference_example(tok, r["question"], g)
            examples[tuple(tokens)] = mask
    model = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), attn_implementation="eager",
                                                              dtype=torch.float32).eval()
    first, nll, count, seen = hf_run["batches"][0], 0.0, 0, set()
    for b in range(first["tokens"].shape[0]):
        seg = first["segment_ids"][b]
        for s in sorted(set(seg.tolist()) - {0}):
            idx = np.flatnonzero(seg == s)
            toks, mask = first["tokens"][b, idx], first["loss_mask"][b, idx]
            assert tuple(toks.tolist()) in examples and mask.tolist() == examples[tuple(toks.tolist())]
            assert first["positions"][b, idx].tolist() == list(range(len(idx)))
            seen.add(tuple(toks.tolist()))
            logp = torch.log_softmax(torch.as_tensor(hf_logits(model, toks[None]))[0, :-1].double(), -1).numpy()
            target = mask[1:] == 1
            nll += -logp[np.arange(len(idx) - 1), toks[1:]][target].sum()
            count += int(target.sum())
    assert seen and count > 0
    np.testing.assert_allclose(train[0]["loss"], nll / count, rtol=2e-5)


def test_the_run_loads_and_evaluates_as_a_hugging_face_model(hf_run):
    from metareason import load
    from metareason.evaluate.run import EvalConfig, run_eval

    run, model_dir = hf_run["run"], hf_run["model_dir"]
    tok_files = sorted(p.name for p in (run / "tokenizer").iterdir())
    assert tok_files == sorted(p.name for p in model_dir.iterdir() if p.name != "config.json"
                               and not p.name.endswith(".safetensors"))
    assert "tokenizer.json" in tok_files
    m = load(run)
    assert m.kind == "hf" and m.step == 8 and m.run_config["data"] == str(hf_run["data"])
    assert m.tokenizer.encode("What is 12 + 35?") == HFTokenizer.from_dir(model_dir).encode("What is 12 + 35?")
    assert m.config == load(model_dir).config
    summary = hf_run["summary"]
    assert "metareason eval --model" in summary["evaluate"] and str(hf_run["data"]) in summary["evaluate"]
    assert "test" not in summary and "validation" not in summary  # no lab evaluation on a file
    res = run_eval(EvalConfig(model=run, data=(str(hf_run["data"]),), out=hf_run["tmp"] / "eval", n=2, k=(1, 2),
                              max_new_tokens=8, batch_size=4, think_prefix=THINK))
    ds = res["datasets"][str(hf_run["data"])]
    assert ds["questions"] == len(ROWS) and ds["samples_per_question"] == 2


def test_a_run_continues_from_a_hugging_face_run(hf_run, tmp_path):
    """--init a run that has tokenizer/: the new run starts from its params and copies its tokenizer."""
    cfg = _cfg(tmp_path / "more", hf_run["run"], hf_run["data"], steps=1, checkpoint_every=1)
    with contextlib.redirect_stdout(io.StringIO()):
        sft.train_sft(cfg)
    assert (tmp_path / "more" / "tokenizer" / "tokenizer.json").read_bytes() == (
        hf_run["model_dir"] / "tokenizer.json").read_bytes()


def test_bad_input_gives_one_line_errors(tmp_path):
    model_dir, _, _, _ = tiny_hf_dir(tmp_path)
    data = _write(tmp_path / "gens.jsonl", ROWS)
    with pytest.raises(ValueError, match=r"^--data .*gens\.jsonl needs --init \(a Hugging Face model directory or "
                                         r"a training run\)$"):
        sft.train_sft(_cfg(tmp_path / "a", "", data))
    bare = _write(tmp_path / "bare.jsonl", [{k: v for k, v in r.items() if k != "generations"} for r in ROWS])
    with pytest.raises(ValueError, match=r"^.*bare\.jsonl: none of its 4 records has at least k_trajectories=2 "
                                         r"generations to train on$"):
        sft.train_sft(_cfg(tmp_path / "b", model_dir, bare))
    with pytest.raises(ValueError, match=r"^a Hugging Face model \(.*\) needs --data FILE"):
        sft.train_sft(_cfg(tmp_path / "c", model_dir, "lab", k_trajectories=1, slots_per_question=1))
    for out in ("a", "b"):  # nothing was started
        assert not (tmp_path / out).exists()
