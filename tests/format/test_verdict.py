"""The reward table, the lab and Math-Verify verifiers, and malformed outputs (never a crash)."""

import pytest

from metareason.format import REWARDS, boxed_answer, lab_verdict, math_equal, math_verdict, reward
from metareason.tasks.lab import answer_suffix_tokens
from metareason.tokenize.lab import LAB_VOCAB


def test_the_paper_table():
    assert reward(True, True) == 1.0 and reward(False, True) == 0.0
    assert reward(True, False) == -0.5 and reward(False, False) == -1.0
    assert len(REWARDS) == 4


def test_lab_verdicts_from_ids():
    v = LAB_VOCAB
    good = v.encode("1 + 2 = 3") + answer_suffix_tokens("3")
    assert lab_verdict(good, "3").reward == 1.0
    assert lab_verdict(good, "4").reward == 0.0
    no_delim = good[:]
    no_delim.remove(v.end_think_id)                      # right answer, no </think>: wrong format
    assert lab_verdict(no_delim, "3").reward == -0.5
    unclosed = v.encode("1 + 2 = 3") + answer_suffix_tokens("3")[:-2]   # no closing brace, no eos
    assert lab_verdict(unclosed, "3").reward == -0.5
    assert lab_verdict(v.encode("1 + 2"), "3").reward == -1.0          # nothing boxed
    assert lab_verdict([], "3").reward == -1.0
    assert lab_verdict([10_000, -1], "3").reward == -1.0               # ids outside the vocabulary


def test_boxed_extraction():
    assert boxed_answer(r"so \boxed{1} then \boxed{\frac{1}{2}}.") == r"\frac{1}{2}"
    assert boxed_answer(r"\boxed{a{b}c}") == "a{b}c"
    assert boxed_answer(r"\boxed{1") is None and boxed_answer("no box") is None


@pytest.mark.parametrize("text, truth, want", [
    (r"x = 1/2, so \boxed{\frac{1}{2}}", "0.5", 1.0),                  # symbolic equality
    (r"\boxed{x^2+2x+1}", "(x+1)^2", 1.0),
    (r"\boxed{4}", "3", 0.0),
    (r"<think> \boxed{3} </think> \boxed{4}", "3", 0.0),            # the box after </think> counts
    ("the answer is 0.5", r"\frac12", -0.5),                         # right answer, no box
    (r"\boxed{@@!!}", "3", -1.0),                                    # unparseable box: wrong format
    (r"\boxed{", "3", -1.0),
    (r"\boxed{}", "3", -1.0),
    ("", "3", -1.0),
])
def test_math_verdicts(text, truth, want):
    assert math_verdict(text, truth).reward == want


def test_math_equal_is_symmetric_on_examples():
    assert math_equal("2/4", r"\frac{1}{2}") and math_equal(r"\frac{1}{2}", "2/4")
    assert not math_equal("3", "4")
