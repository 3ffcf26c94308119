"""Lab tasks: every generated trajectory is verified by the independent checker; the lab
vocabulary round-trips; splits are disjoint and deterministic; the token layout is right."""

import numpy as np
import pytest

from metareason.tasks import (FAMILIES, STYLES, LabConfig, encode_example, evaluate, lab_records, parse_answer,
                              render, verify)
from metareason.tasks.checker import _chains
from metareason.tokenize import LAB_VOCAB, LabTokenError


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("difficulty", [1, 2, 4])
def test_every_style_is_verified_by_the_checker(family, difficulty):
    fam, rng = FAMILIES[family], np.random.default_rng(difficulty)
    slips = 0
    for _ in range(150):
        problem = fam.sample(rng, difficulty)
        for style in STYLES:
            t = render(fam, problem, style, rng)
            v = verify(problem.question, t.text)
            if style.startswith("incorrect"):
                assert v.is_incorrect_solution(problem.answer), (problem.question, t.text, v)
                assert t.answer != problem.answer
            elif style == "none":
                assert t.text == "" and v.chains == 0
            else:
                assert v.is_valid_solution(problem.answer), (problem.question, t.text, v)
                assert t.answer == problem.answer
            slips += style == "long" and any(w in t.text.split() for w in ("Wait", "Hold_on", "Hmm"))
            assert LAB_VOCAB.decode(LAB_VOCAB.encode(t.text)) == t.text
        assert LAB_VOCAB.decode(LAB_VOCAB.encode(problem.question)) == problem.question
    assert slips > 20  # long trajectories do plant and correct slips


def test_checker_catches_wrong_steps_and_unmarked_slips():
    q = "compute 12 + 7 - 5 ?"
    assert verify(q, "12 + 7 = 19 ; 19 - 5 = 14").is_valid_solution("14")
    assert verify(q, "12 + 7 = 18 Wait , 12 + 7 = 19 ; 19 - 5 = 14").is_valid_solution("14")
    bad = verify(q, "12 + 7 = 18 ; 18 - 5 = 13")
    assert bad.false_steps == 1 and bad.conclusion == "13" and bad.is_incorrect_solution("14")
    assert verify(q, "12 + 7 = 19 Wait , 12 + 7 = 19 ; 19 - 5 = 14").is_valid_solution("14")  # a confirmation
    assert verify(q, "12 + 7 = 19 Wait ; 19 - 5 = 14").true_slips == 1  # a "slip" that is right
    lin = "solve 3 * x + 4 = 19 ?"
    assert verify(lin, "3 * x = 19 - 4 = 15 ; x = 15 / 3 = 5").is_valid_solution("5")
    assert not verify(lin, "3 * x = 19 - 4 = 15 ; x = 15 / 3 = 6").is_valid_solution("6")
    ptr = "map a -> b , b -> c , c -> a ; follow a 2 steps ?"
    assert verify(ptr, "a -> b ; b -> c").is_valid_solution("c")
    assert verify(ptr, "a -> c ; c -> a").false_steps == 1


def test_evaluate_is_left_to_right_with_parentheses():
    assert evaluate("2 + 3 * 4".split()) == 20
    assert evaluate("2 + ( 3 * 4 )".split()) == 14
    assert evaluate("( 84 - 21 ) / 7".split()) == 9
    assert len(_chains("step 1 : 5 * x = 28 - 3 = 25 , write 5")) == 1


def test_lab_vocab_errors_and_token_types():
    with pytest.raises(LabTokenError, match="'hello' is not in the lab vocabulary"):
        LAB_VOCAB.encode("compute hello")
    types = {LAB_VOCAB.token_type(LAB_VOCAB.ids[t]) for t in ("Wait", "Therefore", "</think>", "7", "+", "ok")}
    assert types == {"reflection", "connective", "delimiter", "digit", "symbol", "word"}


def test_lab_splits_are_deterministic_and_disjoint():
    config = LabConfig(train_size=150, eval_size=40, heldout_families=(), families=("arith", "pointer"))
    train = list(lab_records(config, "train"))
    assert train == list(lab_records(config, "train"))
    questions = {s: {r["question"] for r in lab_records(config, s)} for s in ("train", "validation", "test")}
    assert len(questions["train"]) == 300 and len(questions["validation"]) == 80
    assert not questions["train"] & questions["validation"] and not questions["validation"] & questions["test"]
    assert not questions["train"] & questions["test"]
    other = LabConfig(train_size=150, eval_size=40, families=("arith", "pointer"), seed=1)
    assert [r["question"] for r in lab_records(other, "train")] != [r["question"] for r in train]
    held = LabConfig(families=("arith",), heldout_families=("linear",), eval_size=10, train_size=10)
    assert {r["family"] for r in lab_records(held, "heldout")} == {"linear"}


def test_several_trajectories_per_question_differ():
    config = LabConfig(families=("arith",), train_size=30, trajectories_per_question=8, difficulty=(3,))
    for r in lab_records(config, "train"):
        assert len(r["generations"]) == 8 and r["trajectory"] == r["generations"][0]
        assert all(verify(r["question"], g).is_valid_solution(r["answer"]) for g in r["generations"])
    assert max(len(set(r["generations"])) for r in lab_records(config, "train")) > 1


def test_encode_example_layout_and_parse_answer():
    ex = encode_example("compute 5 - 4 ?", "5 - 4 = 1", "1")
    text = LAB_VOCAB.decode(ex["tokens"])
    assert text == "<bos> compute 5 - 4 ? <think> 5 - 4 = 1 </think> **Final Answer** \\boxed{ 1 } <eos>"
    first = int(np.argmax(ex["loss_mask"]))
    assert LAB_VOCAB.tokens[ex["tokens"][first - 1]] == "<think>" and ex["loss_mask"][first:].all()
    assert parse_answer(ex["tokens"][first:]) == ("1", True)
    assert parse_answer(LAB_VOCAB.encode("5 - 4 = 1 **Final Answer** \\boxed{ 1 2 }")) == ("12", False)
    assert parse_answer(LAB_VOCAB.encode("5 - 4 = 1 ; ok")) == (None, False)
