"""The one Format: for the lab vocabulary and a Hugging Face tokenizer, the probe example, the
eval prompt and the SFT example share one prompt; the answer template is one token sequence in
the probe and in budget forcing; extraction + verdict round-trip; and one verdict serves the
probe's grouping, eval, GRPO and lab accuracy (checked against the lab's checker, Math-Verify and
the `transformers` tokenizer)."""

import numpy as np
import pytest

import metareason.evaluate as evaluate
import metareason.format as F
from metareason.format import ANSWER_TEMPLATE, Example, FormatError, HFFormat, LabFormat, unescape
from metareason.tasks import LabConfig, lab_records, parse_answer, verify
from metareason.tasks.lab import encode_example
from metareason.tokenize import HFTokenizer
from metareason.tokenize.lab import ANSWER_CLOSE, LAB_VOCAB
from metareason.tokenize.lab import ANSWER_TEMPLATE as LAB_TEMPLATE_TOKENS
from reference import CHATML, torch_and_transformers, write_tiny_tokenizer

THINK = "<think>\n"
RECORD = {"id": "q", "question": "What is 12 + 35?", "answer": "47",
          "trajectory": "Let me think. Wait, the carry is 1, so the sum is 47."}
LAB_RECORD = {"id": "l", "question": "compute 3 + 4 ?", "answer": "7",
              "trajectory": "step 1 : 3 + 4 = 7 ; Wait , 3 + 4 = 7 ; Therefore answer is 7"}


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return write_tiny_tokenizer(tmp_path_factory.mktemp("fmt") / "tok", CHATML, None)


@pytest.fixture(scope="module")
def hf(hf_dir):
    return HFFormat(HFTokenizer.from_dir(hf_dir), think_prefix=THINK)


def _prompt_part(sft: dict) -> list[int]:
    mask = sft["loss_mask"].tolist()
    return sft["tokens"][:mask.index(1)].tolist()


# -- one prompt, one template -------------------------------------------------------------------

def test_lab_prompt_and_template_are_shared():
    fmt = LabFormat()
    ex = fmt.probe_example(LAB_RECORD["question"], LAB_RECORD["trajectory"], "7", delimiter=True)
    sft = fmt.sft_example(LAB_RECORD)
    assert isinstance(ex, Example)
    assert ex.prompt.tolist() == fmt.prompt(LAB_RECORD) == _prompt_part(sft)
    assert LAB_VOCAB.decode(ex.prompt) == "<bos> compute 3 + 4 ? <think>"
    # the lab vocabulary holds the paper's template as its whitespace split
    assert tuple(ANSWER_TEMPLATE.split()) == LAB_TEMPLATE_TOKENS
    force = [LAB_VOCAB.ids[t] for t in ("</think>", "**Final", "Answer**", "\\boxed{")]
    assert list(fmt.force_tokens) == force
    assert ex.probe[:len(force)].tolist() == force
    # the SFT sequence writes the same tokens after the trajectory
    start = len(ex.prompt) + len(ex.trajectory)
    assert sft["tokens"][start:start + len(force)].tolist() == force
    assert ex.trajectory.tolist() == sft["tokens"][len(ex.prompt):start].tolist()
    no_delim = fmt.probe_example(LAB_RECORD["question"], LAB_RECORD["trajectory"], "7")
    assert no_delim.probe[:3].tolist() == force[1:]


def test_hf_prompt_and_template_are_shared(hf, hf_dir):
    _, transformers = torch_and_transformers()
    ref = transformers.PreTrainedTokenizerFast.from_pretrained(str(hf_dir))
    ex = hf.probe_example(RECORD["question"], RECORD["trajectory"], "47", delimiter=True)
    sft = hf.sft_example(RECORD)
    want = ref.encode(ref.apply_chat_template([{"role": "user", "content": RECORD["question"]}], tokenize=False,
                                              add_generation_prompt=True) + THINK, add_special_tokens=False)
    assert ex.prompt.tolist() == hf.prompt(RECORD) == _prompt_part(sft) == want
    force = ref.encode("</think>" + "\n\n**Final Answer**\n\\boxed{", add_special_tokens=False)
    assert list(hf.force_tokens) == force
    assert ex.probe[:len(force)].tolist() == force
    assert ref.decode(ex.probe[ex.targets].tolist()) == "47"
    no_delim = hf.probe_example(RECORD["question"], RECORD["trajectory"], "47")
    assert ref.decode(no_delim.probe[~no_delim.targets].tolist()) == ANSWER_TEMPLATE
    assert len(ex.types) == len(ex.trajectory) and "digit" in ex.types


def test_think_prefix_from_the_command_line_is_unescaped_once(hf):
    tok = hf.tok
    typed = HFFormat(tok, think_prefix="<think>\\n")          # what `--think-prefix '<think>\n'` gives
    assert typed.think_prefix == "<think>\n" and typed.prompt(RECORD) == hf.prompt(RECORD)
    assert HFFormat(tok, think_prefix="<think>\n").think_prefix == "<think>\n"
    assert unescape("a\\\\nb") == "a\\nb"                      # an escaped backslash stays one backslash
    assert unescape("\\t\\n\\x") == "\t\n\\x"


def test_empty_answers_are_errors(hf):
    for fmt in (LabFormat(), hf):
        with pytest.raises(FormatError, match="tokenizes to nothing"):
            fmt.probe_example("q", "t", "  ")


# -- extraction and verdict round-trip ------------------------------------------------------------

def test_lab_round_trip():
    fmt = LabFormat()
    v = LAB_VOCAB
    traj = v.encode(LAB_RECORD["trajectory"])
    good = traj + list(fmt.force_tokens) + v.encode("7") + [v.ids[ANSWER_CLOSE], v.eos_id]
    assert fmt.answer(good) == "7"
    assert fmt.verdict(good, LAB_RECORD) == F.Verdict("7", True, True)
    assert fmt.verdict(fmt.decode(good), LAB_RECORD) == fmt.verdict(good, LAB_RECORD)   # text or ids
    wrong = traj + list(fmt.force_tokens) + v.encode("8") + [v.ids[ANSWER_CLOSE], v.eos_id]
    assert fmt.verdict(wrong, LAB_RECORD) == F.Verdict("8", False, True)
    unclosed = traj + list(fmt.force_tokens) + v.encode("7")
    assert fmt.verdict(unclosed, LAB_RECORD) == F.Verdict("7", True, False)
    assert fmt.verdict(traj, LAB_RECORD) == F.Verdict(None, False, False)
    assert fmt.verdict("not lab words \\boxed{7}", LAB_RECORD) == F.Verdict(None, False, False)
    # the SFT example's trained part is a well-formed, correct generation
    sft = fmt.sft_example(LAB_RECORD)
    assert fmt.verdict(sft["tokens"][sft["loss_mask"] == 1], LAB_RECORD).reward == 1.0


def test_hf_round_trip(hf):
    tok, eos = hf.tok, hf.stop_tokens[0]
    half = {"question": "What is 1/2?", "answer": "0.5"}

    def gen(tail):
        return tok.encode("Let me think. 1 over 2." + tail) + [eos]

    good = gen("</think>" + ANSWER_TEMPLATE + "\\frac{1}{2}}")
    assert hf.answer(good) == "\\frac{1}{2}"
    v = hf.verdict(good, half)
    assert (v.answer, v.correct, v.well_formed, v.reward) == ("\\frac{1}{2}", True, True, 1.0)
    assert hf.verdict(hf.decode(good), half) == v
    assert hf.verdict(gen("</think>" + ANSWER_TEMPLATE + "3}"), half).reward == 0.0
    assert hf.verdict(gen("</think>" + ANSWER_TEMPLATE), half).well_formed is False     # never closed
    assert hf.verdict(gen(""), half).reward == -1.0                                       # nothing boxed


# -- one verdict ---------------------------------------------------------------------------------

def test_lab_verdict_equals_the_checker_on_lab_samples():
    """Written correct and incorrect trajectories of every family, each followed by the answer it
    concludes (`encode_example`'s layout): the verdict from token ids agrees with the checker, which
    re-derives every step from the text."""
    fmt = LabFormat()
    records = list(lab_records(LabConfig(eval_size=6, train_size=6), "test", also_styles=("incorrect",)))
    seen = {True: 0, False: 0}
    for r in records:
        for traj in (r["trajectory"], r["also"]["incorrect"]):
            check = verify(r["question"], traj)
            assert check.error is None and check.conclusion is not None
            sft = encode_example(r["question"], traj, check.conclusion)
            v = fmt.verdict(sft["tokens"][sft["loss_mask"] == 1], r)
            assert v.answer == check.conclusion and v.well_formed
            assert v.correct == check.is_valid_solution(r["answer"]) == (not check.is_incorrect_solution(r["answer"]))
            seen[v.correct] += 1
    assert seen[True] == seen[False] == len(records) > 8


CASES = [  # (generation, answer, correct)
    ("1 over 2.</think>\n\n**Final Answer**\n\\boxed{\\frac{1}{2}}", "0.5", True),
    ("so \\boxed{\\frac{1}{2}}", "0.5", True),
    ("12 + 35 = 47.</think>\\boxed{47}", "47", True),
    ("the sum is 46. Therefore \\boxed{46}", "47", False),
    ("<think> \\boxed{47} </think> \\boxed{46}", "47", False),
    ("\\boxed{x^2+2x+1}", "(x+1)^2", True),
]


@pytest.mark.parametrize("text, answer, correct", CASES)
def test_one_verdict_for_the_probe_eval_and_grpo(hf, text, answer, correct):
    from metareason.probe.run import hf_groups

    record = {"id": "q", "question": "q", "answer": answer}
    v = hf.verdict(text, record)
    assert v.correct is correct
    assert v == hf.verdict(hf.tok.encode(text), record) == F.math_verdict(text, answer)
    for fmt in (None, hf):                                          # the probe's grouping
        groups = hf_groups([dict(record, generations=[text])], fmt)
        name = "correct (generations)" if correct else "incorrect (generations)"
        assert [g["correct"] for g in groups[name]] == [correct]
        assert groups[name][0]["generations"] == [text.split("</think>")[0]]


def test_eval_and_grpo_use_these_objects():
    """`metareason eval` and GRPO call `fmt.verdict` of these classes; the old import paths are the
    same objects."""
    from metareason.evaluate import extract, formats, rewards
    from metareason.probe import inputs

    assert evaluate.math_verdict is rewards.math_verdict is F.math_verdict
    assert evaluate.Verdict is F.Verdict and evaluate.REWARDS is F.REWARDS and evaluate.reward is F.reward
    assert evaluate.LabFormat is formats.LabFormat is LabFormat and formats.HFFormat is HFFormat
    assert extract.boxed_answer is F.boxed_answer and inputs.Example is Example
    assert inputs.PAPER_TEMPLATE == ANSWER_TEMPLATE
    old = inputs.LabCodec().example(LAB_RECORD["question"], LAB_RECORD["trajectory"], "7", delimiter=True)
    new = LabFormat().probe_example(LAB_RECORD["question"], LAB_RECORD["trajectory"], "7", delimiter=True)
    for a, b in ((old.prompt, new.prompt), (old.trajectory, new.trajectory), (old.probe, new.probe),
                 (old.targets, new.targets)):
        np.testing.assert_array_equal(a, b)


def test_lab_accuracy_goes_through_the_verdict():
    import jax

    from metareason.model import ModelConfig, init
    from metareason.sample import SamplingConfig, generate_all
    from metareason.train.evaluation import lab_accuracy

    config = ModelConfig(family="qwen2", vocab_size=LAB_VOCAB.size, hidden_size=32, intermediate_size=64,
                         num_layers=1, num_heads=2, num_kv_heads=1, max_position_embeddings=128)
    params = init(config, jax.random.key(1))
    records = list(lab_records(LabConfig(families=("arith",), eval_size=3, train_size=3), "test"))
    res = lab_accuracy(params, config, records, batch_size=4, max_new_tokens=6)
    # the reference: the same greedy outputs judged by the lab's own parser
    outs = generate_all(params, config, [LabFormat().prompt(r) for r in records],
                        SamplingConfig(temperature=0.0, max_new_tokens=6, stop_tokens=(LAB_VOCAB.eos_id,),
                                       pad_id=LAB_VOCAB.pad_id), batch_size=4)
    parsed = [parse_answer(o) for o in outs]
    assert res["accuracy"] == np.mean([a == r["answer"] for (a, _), r in zip(parsed, records)])
    assert res["format_rate"] == np.mean([ok and a is not None for a, ok in parsed])

    class Lenient(LabFormat):
        def verdict(self, output, record):
            return F.Verdict(record["answer"], True, True)

    assert lab_accuracy(params, config, records, batch_size=4, max_new_tokens=6, fmt=Lenient())["accuracy"] == 1.0
