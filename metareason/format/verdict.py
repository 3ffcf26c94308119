"""The verdict on one output: the paper's reward (Eq 21) and the two verifiers.

    right answer, right format    1.0
    wrong answer, right format    0.0
    right answer, wrong format   -0.5
    wrong answer, wrong format   -1.0

A verifier maps (output, true answer) to a `Verdict`. Two are provided: `lab_verdict` (exact
match of the lab's boxed answer, from token ids) and `math_verdict` (Math-Verify's symbolic
equivalence on the last \\boxed{...} of a text). Neither raises on a malformed output: what
cannot be parsed is a wrong format. A `Format`'s `verdict` calls one of them; every place that
asks "is this answer correct" (the probe's grouping, eval, GRPO's rewards, lab accuracy) goes
through a `Format`.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Sequence

from metareason.format.extract import final_boxed
from metareason.tasks.lab import parse_answer
from metareason.tokenize.lab import LAB_VOCAB, LabVocab

__all__ = ["REWARDS", "Verdict", "reward", "lab_verdict", "math_verdict", "math_equal"]

REWARDS = {(True, True): 1.0, (False, True): 0.0, (True, False): -0.5, (False, False): -1.0}
"""(answer correct, format correct) -> reward (the paper's Eq 21)."""


def reward(correct: bool, well_formed: bool) -> float:
    """The paper's reward (Eq 21) of an output: `REWARDS[(correct, well_formed)]`."""
    return REWARDS[(bool(correct), bool(well_formed))]


@dataclasses.dataclass(frozen=True)
class Verdict:
    """answer: the extracted answer (None if none); correct: it equals the truth; well_formed:
    the output has the expected format (delimiter, template, closed box, parseable answer)."""

    answer: str | None
    correct: bool
    well_formed: bool

    @property
    def reward(self) -> float:
        return reward(self.correct, self.well_formed)


def lab_verdict(ids: Sequence[int], truth: str, vocab: LabVocab = LAB_VOCAB) -> Verdict:
    """A lab output (generated ids after the prompt): exact match of the boxed answer. A right
    answer in a malformed output (no `</think>`, no closing brace) is "right answer, wrong format"."""
    answer, well_formed = parse_answer(ids, vocab)
    return Verdict(answer, answer is not None and answer == truth, well_formed and answer is not None)


def _timeout() -> int | None:
    # Math-Verify's timeouts use signal.alarm, which works only in the main thread
    return 5 if threading.current_thread() is threading.main_thread() else None


def _parse(text: str):
    from math_verify import parse
    try:
        return parse(text, parsing_timeout=_timeout())
    except Exception:  # noqa: BLE001 -- any parser failure means "not parseable"
        return []


def math_equal(predicted: str, truth: str) -> bool:
    """Whether two LaTeX answers are equal by Math-Verify (symbolic, e.g. 1/2 == 0.5 == \\frac12)."""
    from math_verify import verify
    gold, pred = _parse(f"\\boxed{{{truth}}}"), _parse(f"\\boxed{{{predicted}}}")
    if not gold or not pred:
        return False
    try:
        return bool(verify(gold, pred, timeout_seconds=_timeout()))
    except Exception:  # noqa: BLE001
        return False


def math_verdict(text: str, truth: str, *, delimiter: str | None = "</think>") -> Verdict:
    """A math output as text: the last \\boxed{...} (after `delimiter` when the text contains it)
    checked against `truth` with Math-Verify. Without a box whose content Math-Verify parses into
    a mathematical object (a bare string fallback does not count) the format is wrong, and
    the answer is then looked for anywhere in the text (right answer, wrong format: -0.5)."""
    boxed = final_boxed(text, delimiter)
    if boxed is not None and any(not isinstance(x, str) for x in _parse(f"\\boxed{{{boxed}}}")):
        return Verdict(boxed, math_equal(boxed, truth), True)
    from math_verify import verify
    found, gold = _parse(text), _parse(f"\\boxed{{{truth}}}")
    try:
        ok = bool(found and gold and verify(gold, found, timeout_seconds=_timeout()))
    except Exception:  # noqa: BLE001
        ok = False
    return Verdict(boxed, ok, False)
