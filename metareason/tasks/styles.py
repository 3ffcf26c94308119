"""Trajectory styles: how a family's solution steps are written between `<think>` and `</think>`.

- "long": numbered steps, each first worked digit by digit where the family can (`detail`,
  e.g. `2 + 7 + 0 = 9 , write 9 carry 0`), then stated with "So"; some steps first state a
  planted slip, then a reflection word ("Wait", "Hold_on", "Hmm") and the corrected
  statement; checks of some steps; an "Alternatively" route; "Therefore answer is V" at the end.
  Two optional controls (both 0 by default, which reproduces the data of before they existed):
  `confirm_rate`, the share of slippable steps written as an UNCONFIRMED reflection
  (`[head] <right chain> <REFL> , <step.text()>`: a re-check that restates the right value), and
  `silent_rate`, the share of planted slips corrected WITHOUT a reflection word
  (`[head] <wrong chain> , <step.text()>`). A corrected slip is `[head] <wrong chain> <REFL> , <step.text()>`.
- "short": every step once, nothing else.
- "summary": the solution compressed to one or two statements.
- "none": empty (the answer follows the delimiter at once).
- "incorrect": like "short", but one step states a wrong value that is never corrected and
  the later steps are computed from it, so the trajectory reaches a wrong answer (returned
  as the trajectory's answer; the record keeps the true one).
- "incorrect-long": the long style with exactly one uncorrected slip: the twin of a correct long
  trajectory drawn from the same random choices (`render_twins`), identical to it up to the
  slipped value; from there every later step, the digit working, the "Alternatively" route (kept,
  and written from the wrong values, so it "confirms" them falsely) and "Therefore answer is W"
  follow from the wrong value. Its planted reflections, confirmations and silent corrections of
  other steps are kept (after the slip, one whose planted wrong value happens to equal the
  slipped chain's value is written as a plain statement). The answer is the wrong one, W.

`reflection_events(text)` finds every reflection / correction event in a text alone; long
trajectories carry the generator's own list of what it planted in `Trajectory.events`, in the
same form.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from metareason.tasks.families import Family, Problem, Step
from metareason.tokenize.lab import LAB_VOCAB

__all__ = ["STYLES", "EVENT_KINDS", "SLIP_RATE", "CHECK_RATE", "Trajectory", "render", "render_twins",
           "reflection_events", "distinct_capacity", "check_rates"]

STYLES = ("long", "short", "summary", "none", "incorrect", "incorrect-long")
EVENT_KINDS = ("corrected", "confirmed", "silent", "alternatively")
_SLIP_REFLECTIONS = ("Wait", "Hold_on", "Hmm")
_SINCE_RATE = 0.2
SLIP_RATE = 0.3
"""Default share of slippable steps of a long trajectory with a planted (corrected) slip."""
CHECK_RATE = 0.3
"""Default share of slippable steps followed by `check <chain> ok`."""


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """text: the trajectory (without the think delimiters); answer: the answer it reaches.

    events: for "long" / "incorrect-long", what the generator planted, in the form of
    `reflection_events` (token indices into `LAB_VOCAB.split(text)`); empty for other styles.
    slip: for "incorrect-long", the token index of the first token of the uncorrected wrong value."""

    style: str
    text: str
    answer: str
    events: tuple = ()
    slip: int | None = None


def _final(steps: list[Step]) -> str:
    return steps[-1].value


def _slippable(steps: list[Step]) -> list[int]:
    return [i for i, s in enumerate(steps) if len(s.chain) >= 2]


def check_rates(slip_rate: float, check_rate: float, confirm_rate: float, silent_rate: float) -> None:
    """A one-line ValueError for a rate outside [0, 1] or slip_rate + confirm_rate > 1."""
    for name, v in (("slip_rate", slip_rate), ("check_rate", check_rate), ("confirm_rate", confirm_rate),
                    ("silent_rate", silent_rate)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {v}")
    if confirm_rate > 0 and slip_rate + confirm_rate > 1.0:
        raise ValueError(f"slip_rate + confirm_rate must be <= 1 (both are shares of the slippable steps), "
                         f"got {slip_rate} + {confirm_rate}")


@dataclasses.dataclass
class _Plan:
    """The random choices of one step of a long trajectory. kind: "plain", "corrected",
    "confirmed" or "silent"."""

    kind: str = "plain"
    wrong: str = ""
    word: str = ""
    lead: str = ""
    check: bool = False


def _draw_plan(family: Family, problem: Problem, rng: np.random.Generator, slip_rate: float, check_rate: float,
               confirm_rate: float, silent_rate: float) -> list[_Plan]:
    """Per-step choices, drawn from `rng` in the order the long style always drew them (new
    draws happen only when confirm_rate / silent_rate > 0, so rates of 0 keep old streams)."""
    steps = family.solve(problem)
    slippable = set(_slippable(steps))
    p_confirm = confirm_rate / (1.0 - slip_rate) if confirm_rate > 0 else 0.0
    plan = []
    for i, step in enumerate(steps):
        p = _Plan()
        worked = bool(family.detail(problem, i))
        if i in slippable and rng.random() < slip_rate:
            p.kind, p.wrong = "corrected", family.wrong_value(problem, i, rng)
            p.word = str(rng.choice(_SLIP_REFLECTIONS))
            if silent_rate > 0 and rng.random() < silent_rate:
                p.kind = "silent"
        elif i in slippable and confirm_rate > 0 and rng.random() < p_confirm:
            p.kind, p.word = "confirmed", str(rng.choice(_SLIP_REFLECTIONS))
        else:
            p.lead = "Since" if (i > 0 and not worked and rng.random() < _SINCE_RATE) else ""
        p.check = i in slippable and rng.random() < check_rate
        plan.append(p)
    return plan


def _ntok(text: str) -> int:
    return len(LAB_VOCAB.split(text))


def _join(*words: str) -> str:
    return " ".join(w for w in words if w)


def _write_long(family: Family, problem: Problem, plan: list[_Plan],
                slip: tuple[int, str] | None = None) -> tuple[str, tuple, int | None]:
    """(text, events, slip token index) of the long trajectory of `plan`; with `slip=(i, w)`,
    step i states w uncorrected and everything after follows from it."""
    steps = family.solve(problem, slip)
    parts: list[str] = []
    events: list[dict] = []
    slip_index = None

    def at(words: str) -> int:  # token index of what follows `words` in the statement being built
        done = " ; ".join(parts)
        return _ntok(done) + (1 if parts else 0) + _ntok(words)

    for i, step in enumerate(steps):
        p = plan[i]
        head = f"step {i + 1} :" if not step.prefix else ""
        working = family.detail(problem, i, slip)
        if working:
            parts.append(_join(head, " ; ".join(working)))
            head = "So"
        kind = p.kind
        if kind in ("corrected", "silent") and p.wrong == step.value:
            kind = "plain"  # after an uncorrected slip, the planted wrong value may be the stated one
        if slip is not None and i == slip[0]:
            before = _join(head, p.lead, step.prefix, " ".join(f"{c} {step.op}" for c in step.chain[:-1]))
            slip_index = at(before)
            parts.append(_join(head, p.lead, step.text()))
        elif kind in ("corrected", "silent", "confirmed"):
            shown = step if kind == "confirmed" else step.with_value(p.wrong)
            said = _join(head, shown.prefix, f" {shown.op} ".join(shown.chain))
            word = p.word if kind != "silent" else ""
            events.append({"index": at(said), "kind": kind, "word": word or ","})
            parts.append(_join(said, word, ",", step.text()))
        else:
            parts.append(_join(head, p.lead, step.text()))
        if p.check:
            parts.append(f"check {f' {step.op} '.join(step.chain)} ok")
    alt = family.alternative(problem, slip)
    if alt is not None:
        events.append({"index": at(""), "kind": "alternatively", "word": "Alternatively"})
        parts.append(f"Alternatively , {alt.text()}")
    parts.append(f"Therefore answer is {problem.answer if slip is None else _final(steps)}")
    return " ; ".join(parts), tuple(events), slip_index


def render_twins(family: Family, problem: Problem, rng: np.random.Generator, *, slip_rate: float = SLIP_RATE,
                 check_rate: float = CHECK_RATE, confirm_rate: float = 0.0,
                 silent_rate: float = 0.0) -> tuple[Trajectory, Trajectory, int]:
    """(correct, incorrect, slip): a correct "long" trajectory and its "incorrect-long" twin made
    from the same random choices. The slipped step is drawn among the slippable steps planned as
    plain statements (if none, among all slippable steps, and that step is written plain in both
    twins). `LAB_VOCAB.split` of both texts agree on every token before `slip` (the token index
    of the first token of the wrong value; its first digits may coincide with the right one's)."""
    check_rates(slip_rate, check_rate, confirm_rate, silent_rate)
    plan = _draw_plan(family, problem, rng, slip_rate, check_rate, confirm_rate, silent_rate)
    steps = family.solve(problem)
    slippable = _slippable(steps)
    plain = [i for i in slippable if plan[i].kind == "plain"]
    i = int(rng.choice(plain or slippable))
    if plan[i].kind != "plain":
        plan[i] = dataclasses.replace(plan[i], kind="plain", wrong="", word="")
    for _ in range(50):  # the wrong value must lead to a wrong answer, in non-negative numbers
        wrong = family.wrong_value(problem, i, rng)
        slipped = family.solve(problem, slip=(i, wrong))
        if _final(slipped) != problem.answer and not any(s.value.startswith("-") for s in slipped):
            break
    else:
        raise RuntimeError(f"could not make an incorrect trajectory for {problem.question!r}")
    text, events, _ = _write_long(family, problem, plan)
    bad_text, bad_events, slip = _write_long(family, problem, plan, slip=(i, wrong))
    return (Trajectory("long", text, problem.answer, events),
            Trajectory("incorrect-long", bad_text, _final(slipped), bad_events, slip), slip)


def render(family: Family, problem: Problem, style: str, rng: np.random.Generator, *,
           slip_rate: float = SLIP_RATE, check_rate: float = CHECK_RATE, confirm_rate: float = 0.0,
           silent_rate: float = 0.0) -> Trajectory:
    """Writes `problem`'s solution in `style` (random choices from `rng`). slip_rate: share of
    slippable steps (chains of >= 2 parts) of a long trajectory with a planted slip;
    confirm_rate: share with an unconfirmed reflection (slip_rate + confirm_rate <= 1);
    silent_rate: share of planted slips corrected without a reflection word; check_rate: share
    of slippable steps followed by `check <chain> ok`."""
    if style not in STYLES:
        raise ValueError(f"unknown trajectory style {style!r} (known: {', '.join(STYLES)})")
    check_rates(slip_rate, check_rate, confirm_rate, silent_rate)
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
    if style == "incorrect-long":
        return render_twins(family, problem, rng, slip_rate=slip_rate, check_rate=check_rate,
                            confirm_rate=confirm_rate, silent_rate=silent_rate)[1]
    if style == "short":
        steps = family.solve(problem)
        return Trajectory(style, " ; ".join(s.text() for s in steps), _final(steps))
    plan = _draw_plan(family, problem, rng, slip_rate, check_rate, confirm_rate, silent_rate)
    text, events, _ = _write_long(family, problem, plan)
    return Trajectory(style, text, problem.answer, events)


def _is_expr(word: str) -> bool:
    return word.isdigit() or word in ("+", "-", "*", "/", "(", ")") or (len(word) == 1 and word.isalpha())


def _chain_at(words: list[str], start: int, stop: int, step: int) -> tuple[tuple[str, ...], str] | None:
    """The chain (parts, op) of words running from `start` toward `stop` (step +1 forward, -1
    backward) made of expression words and = / ->; None if that run is not a chain of >= 2 parts."""
    run = []
    k = start
    while k != stop and (_is_expr(words[k]) or words[k] in ("=", "->")):
        run.append(words[k])
        k += step
    if step < 0:
        run.reverse()
    ops = {w for w in run if w in ("=", "->")}
    parts, cur = [], []
    for w in run:
        if w in ("=", "->"):
            parts.append(" ".join(cur))
            cur = []
        else:
            cur.append(w)
    parts.append(" ".join(cur))
    if len(parts) < 2 or len(ops) != 1 or not all(parts):
        return None
    return tuple(parts), ops.pop()


def _next_chain(words: list[str], start: int) -> tuple[tuple[str, ...], str] | None:
    """The first chain after `start` within its clause (up to the next "," or ";")."""
    k = start
    while k < len(words) and words[k] not in (",", ";"):
        if _is_expr(words[k]):
            found = _chain_at(words, k, len(words), 1)
            if found is not None:
                return found
            while k < len(words) and (_is_expr(words[k]) or words[k] in ("=", "->")):
                k += 1
            continue
        k += 1
    return None


def reflection_events(text: str) -> list[dict]:
    """Every reflection word and correction in a trajectory text, in order, found from the text alone.

    Each event is {"index": int, "kind": str, "word": str}: index is the position in
    `LAB_VOCAB.split(text)` of the event's token, word that token. kind:
    - "corrected": a reflection word ("Wait", "Hold_on", "Hmm") after a chain whose last value
      differs from the chain restated after it (`<wrong chain> <REFL> , <right chain>`);
    - "confirmed": a reflection word after a chain restated with the same value after it;
    - "silent": a correction without a reflection word (`<wrong chain> , <chain with the same
      left parts and another value>`); index and word are those of the "," where a reflection
      word would stand;
    - "alternatively": the word "Alternatively".
    A reflection word with no chain before or after it counts as "corrected" when the values
    cannot be compared (never produced by the lab)."""
    words = text.split()
    offsets, n = [], 0
    for w in words:
        offsets.append(n)
        n += len(LAB_VOCAB.split(w))
    out = []
    for k, w in enumerate(words):
        if w == "Alternatively":
            out.append({"index": offsets[k], "kind": "alternatively", "word": w})
        elif w in _SLIP_REFLECTIONS:
            before = _chain_at(words, k - 1, -1, -1) if k > 0 else None
            after = _next_chain(words, k + 2) if k + 1 < len(words) and words[k + 1] == "," else None
            same = before is not None and after is not None and before == after
            out.append({"index": offsets[k], "kind": "confirmed" if same else "corrected", "word": w})
        elif w == "," and k > 0 and words[k - 1] not in _SLIP_REFLECTIONS:
            before = _chain_at(words, k - 1, -1, -1)
            after = _next_chain(words, k + 1) if before is not None else None
            if (after is not None and before[1] == after[1] and before[0][:-1] == after[0][:-1]
                    and before[0][-1] != after[0][-1]):
                out.append({"index": offsets[k], "kind": "silent", "word": ","})
    return out


def _valid_slips(family: Family, problem: Problem) -> list[tuple[int, str]]:
    """The (step, wrong value) pairs an incorrect trajectory can use: a wrong, non-negative answer."""
    out = []
    for i in _slippable(family.solve(problem)):
        for w in family.wrong_values(problem, i):
            steps = family.solve(problem, slip=(i, w))
            if _final(steps) != problem.answer and not any(s.value.startswith("-") for s in steps):
                out.append((i, w))
    return out


def _step_options(family: Family, problem: Problem, slip_rate: float, check_rate: float, confirm_rate: float,
                  silent_rate: float) -> list[int]:
    """How many distinct statements each step of a long trajectory can be written as."""
    steps = family.solve(problem)
    slippable = set(_slippable(steps))
    p_confirm = confirm_rate / (1.0 - slip_rate) if confirm_rate > 0 else 0.0
    out = []
    for i in range(len(steps)):
        lead = 2 if (i > 0 and not family.detail(problem, i)) else 1
        if i not in slippable:
            out.append(lead)
            continue
        n = 0
        if slip_rate > 0:
            n += len(family.wrong_values(problem, i)) * ((len(_SLIP_REFLECTIONS) if silent_rate < 1 else 0)
                                                         + (1 if silent_rate > 0 else 0))
        if slip_rate < 1:
            n += (lead if p_confirm < 1 else 0) + (len(_SLIP_REFLECTIONS) if p_confirm > 0 else 0)
        out.append(n * (2 if 0 < check_rate < 1 else 1))
    return out


def distinct_capacity(family: Family, problem: Problem, style: str, *, slip_rate: float = SLIP_RATE,
                      check_rate: float = CHECK_RATE, confirm_rate: float = 0.0, silent_rate: float = 0.0) -> int:
    """How many distinct texts `render(family, problem, style, rng, **rates)` can produce.

    Exact for "long" (the product over steps of the statements each step can be written as:
    wrong value x reflection word (or silent) for a planted slip, reflection word for a
    confirmation, with or without "Since", with or without a check, each counted only where
    its probability is > 0), for "incorrect" (the (step, wrong value) pairs that reach a wrong
    non-negative answer) and for "short" / "summary" / "none" (1). For "incorrect-long" a
    lower bound: the sum over valid (step i, wrong value) pairs of the options of the steps
    before i and of step i's check (the text after the slip is counted once)."""
    if style not in STYLES:
        raise ValueError(f"unknown trajectory style {style!r} (known: {', '.join(STYLES)})")
    check_rates(slip_rate, check_rate, confirm_rate, silent_rate)
    if style in ("short", "summary", "none"):
        return 1
    if style == "incorrect":
        return len(_valid_slips(family, problem))
    options = _step_options(family, problem, slip_rate, check_rate, confirm_rate, silent_rate)
    if style == "long":
        return math.prod(options)
    checks = 2 if 0 < check_rate < 1 else 1
    return sum(math.prod(options[:i]) * checks for i, _ in _valid_slips(family, problem))
