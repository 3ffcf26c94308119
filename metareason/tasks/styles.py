"""Trajectory styles: how a family's solution steps are written between `<think>` and `</think>`.

- "long": numbered steps, each first worked digit by digit where the family can (`detail`,
  e.g. `2 + 7 + 0 = 9 , write 9 carry 0`), then stated with "So"; some steps first state a
  planted slip, then a reflection word ("Wait", "Hold_on", "Hmm") and the corrected
  statement; checks of some steps; an "Alternatively" route; "Therefore answer is V" at the end.
- "short": every step once, nothing else.
- "summary": the solution compressed to one or two statements.
- "none": empty (the answer follows the delimiter at once).
- "incorrect": like "short", but one step states a wrong value that is never corrected and
  the later steps are computed from it, so the trajectory reaches a wrong answer (returned
  as the trajectory's answer; the record keeps the true one).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from metareason.tasks.families import Family, Problem, Step

__all__ = ["STYLES", "Trajectory", "render"]

STYLES = ("long", "short", "summary", "none", "incorrect")
_SLIP_REFLECTIONS = ("Wait", "Hold_on", "Hmm")


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """text: the trajectory (without the think delimiters); answer: the answer it reaches."""

    style: str
    text: str
    answer: str


def _final(steps: list[Step]) -> str:
    return steps[-1].value


def _slippable(steps: list[Step]) -> list[int]:
    return [i for i, s in enumerate(steps) if len(s.chain) >= 2]


def render(family: Family, problem: Problem, style: str, rng: np.random.Generator, *,
           slip_rate: float = 0.3, check_rate: float = 0.3) -> Trajectory:
    """Writes `problem`'s solution in `style` (random choices from `rng`)."""
    if style not in STYLES:
        raise ValueError(f"unknown trajectory style {style!r} (known: {', '.join(STYLES)})")
    if style == "none":
        return Trajectory(style, "", problem.answer)
    if style == "summary":
        steps = family.summary(problem)
        return Trajectory(style, " ; ".join(s.text() for s in steps), _final(steps))
    if style == "incorrect":
        i = int(rng.choice(_slippable(family.solve(problem))))
        for _ in range(50):  # the wrong value must lead to a wrong answer, in non-negative numbers
            steps = family.solve(problem, slip=(i, family.wrong_value(problem, i, rng)))
            if _final(steps) != problem.answer and not any(s.value.startswith("-") for s in steps):
                return Trajectory(style, " ; ".join(s.text() for s in steps), _final(steps))
        raise RuntimeError(f"could not make an incorrect trajectory for {problem.question!r}")
    steps = family.solve(problem)
    if style == "short":
        return Trajectory(style, " ; ".join(s.text() for s in steps), _final(steps))
    # long
    slippable = set(_slippable(steps))
    parts = []
    for i, step in enumerate(steps):
        head = f"step {i + 1} :" if not step.prefix else ""
        working = family.detail(problem, i)
        if working:
            parts.append(" ".join(p for p in (head, " ; ".join(working)) if p))
            head = "So"
        if i in slippable and rng.random() < slip_rate:
            wrong = step.with_value(family.wrong_value(problem, i, rng))
            reflection = str(rng.choice(_SLIP_REFLECTIONS))
            wrong_core = f" {wrong.op} ".join(wrong.chain)
            parts.append(" ".join(p for p in (head, wrong.prefix, wrong_core, reflection, ",", step.text()) if p))
        else:
            lead = "Since" if (i > 0 and head != "So" and rng.random() < 0.2) else ""
            parts.append(" ".join(p for p in (head, lead, step.text()) if p))
        if i in slippable and rng.random() < check_rate:
            parts.append(f"check {f' {step.op} '.join(step.chain)} ok")
    alt = family.alternative(problem)
    if alt is not None:
        parts.append(f"Alternatively , {alt.text()}")
    parts.append(f"Therefore answer is {problem.answer}")
    return Trajectory(style, " ; ".join(parts), problem.answer)
