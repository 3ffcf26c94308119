"""An independent checker of lab trajectories: it re-derives everything from the question and
trajectory text alone (not from the family's solver).

Every chain in the trajectory (`12 + 7 = 19`, `5 * x = 28 - 3 = 25`, `a -> c -> d`) is
evaluated: arithmetic left to right with parentheses and exact division (the unknown x solved
from the question's own equation), pointer hops looked up in the question's map. A chain
followed by a reflection word is a planted slip and must be false; every other chain must be
true. A chain followed by `[reflection word] ,` and a restatement of it (the same chain up to its
last value) is a correction when the restated value differs, and must then be false (with or
without the reflection word: a silent correction), or a confirmation when it is the same value,
and must then be true. The trajectory's conclusion is the value after "answer is" / "result is", else the last
chain's last element.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

from metareason.tokenize.lab import REFLECTION_WORDS

__all__ = ["Verification", "verify", "evaluate"]

_OPS = {"+", "-", "*", "/"}


class _ParseError(ValueError):
    """Text that is not a well-formed chain or expression."""


def evaluate(tokens: list[str], env: dict[str, Fraction] | None = None) -> Fraction:
    """Evaluates an expression left to right (no precedence), with parentheses and exact division."""
    env = env or {}
    pos = 0

    def atom():
        nonlocal pos
        if pos >= len(tokens):
            raise _ParseError("expression ends early")
        tok = tokens[pos]
        pos += 1
        if tok == "(":
            value = expr()
            if pos >= len(tokens) or tokens[pos] != ")":
                raise _ParseError("missing )")
            pos += 1
            return value
        if tok.isdigit():
            return Fraction(int(tok))
        if tok in env:
            return env[tok]
        raise _ParseError(f"unexpected {tok!r}")

    def expr():
        nonlocal pos
        value = atom()
        while pos < len(tokens) and tokens[pos] in _OPS:
            op = tokens[pos]
            pos += 1
            rhs = atom()
            if op == "/":
                if rhs == 0:
                    raise _ParseError("division by zero")
                value = value / rhs
            else:
                value = value + rhs if op == "+" else value - rhs if op == "-" else value * rhs
        return value

    result = expr()
    if pos != len(tokens):
        raise _ParseError(f"unexpected {tokens[pos]!r}")
    return result


def _is_expr_token(tok: str) -> bool:
    return tok.isdigit() or tok in _OPS or tok in ("(", ")") or (len(tok) == 1 and tok.isalpha())


@dataclasses.dataclass
class _Chain:
    parts: list[list[str]]
    op: str
    slip: bool
    comma: bool = False
    """Followed by "," (after an optional reflection word) within its statement."""


def _chains(text: str) -> list[_Chain]:
    """All chains (>= 2 parts joined by = or ->) in `text`, in order."""
    out = []
    for statement in text.split(";"):
        first = len(out)
        toks = statement.split()
        i = 0
        while i < len(toks):
            if not _is_expr_token(toks[i]):
                i += 1
                continue
            parts, ops, cur = [], set(), []
            while i < len(toks) and (_is_expr_token(toks[i]) or toks[i] in ("=", "->")):
                if toks[i] in ("=", "->"):
                    parts.append(cur)
                    ops.add(toks[i])
                    cur = []
                else:
                    cur.append(toks[i])
                i += 1
            parts.append(cur)
            if len(parts) >= 2:
                if len(ops) != 1 or any(not p for p in parts):
                    raise _ParseError(f"malformed chain in {statement.strip()!r}")
                j = i + 1 if i < len(toks) and toks[i] == "," else i
                reflected = j < len(toks) and toks[j] in REFLECTION_WORDS
                comma = (i < len(toks) and toks[i] == ",") or (reflected and j + 1 < len(toks) and toks[j + 1] == ",")
                out.append(_Chain(parts, ops.pop(), reflected, comma))
        for a, b in zip(out[first:], out[first + 1:]):  # a restated chain: a correction or a confirmation
            if a.comma and a.op == b.op and a.parts[:-1] == b.parts[:-1]:
                a.slip = a.parts[-1] != b.parts[-1]
    return out


def _env(question: str) -> tuple[dict[str, Fraction], dict[str, str]]:
    """The unknown x (solved from the question's own linear equation) and the pointer map."""
    env, mapping = {}, {}
    for chain in _chains(question.replace("?", " ").replace(",", ";")):
        if chain.op == "->":
            for (a,), (b,) in zip(chain.parts, chain.parts[1:]):
                mapping[a] = b
        elif any("x" in p for p in chain.parts):
            lhs, rhs = chain.parts
            f0, f1 = evaluate(lhs, {"x": Fraction(0)}), evaluate(lhs, {"x": Fraction(1)})
            env["x"] = (evaluate(rhs) - f0) / (f1 - f0)
    return env, mapping


@dataclasses.dataclass(frozen=True)
class Verification:
    """chains: how many were checked; false_steps: unmarked chains that are false; true_slips:
    chains marked as slips (followed by a reflection word) that are in fact true; conclusion:
    the value the trajectory concludes (None if it states none); error: a parse problem."""

    chains: int
    false_steps: int
    true_slips: int
    conclusion: str | None
    error: str | None = None

    def is_valid_solution(self, answer: str) -> bool:
        """Every step right (slips are false and corrected), and it concludes `answer`."""
        return self.error is None and self.false_steps == 0 and self.true_slips == 0 and self.conclusion == answer

    def is_incorrect_solution(self, answer: str) -> bool:
        """A wrong step carried through to a conclusion other than `answer`."""
        return self.error is None and self.false_steps > 0 and self.conclusion not in (None, answer)


def verify(question: str, trajectory: str) -> Verification:
    """Checks `trajectory` (the text between the think delimiters) against `question`."""
    try:
        env, mapping = _env(question)
        chains = _chains(trajectory)
    except (_ParseError, ZeroDivisionError) as err:
        return Verification(0, 0, 0, None, error=str(err))
    false_steps = true_slips = 0
    for chain in chains:
        if chain.op == "->":
            ok = all(len(a) == 1 and len(b) == 1 and mapping.get(a[0]) == b[0]
                     for a, b in zip(chain.parts, chain.parts[1:]))
        else:
            try:
                values = [evaluate(p, env) for p in chain.parts]
            except _ParseError as err:
                return Verification(len(chains), 0, 0, None, error=str(err))
            ok = all(v == values[0] for v in values)
        if chain.slip:
            true_slips += ok
        else:
            false_steps += not ok
    toks = trajectory.split()
    conclusion = None
    for k in range(len(toks) - 2):
        if toks[k] in ("answer", "result") and toks[k + 1] == "is":
            conclusion = toks[k + 2]
    if conclusion is None and chains:
        conclusion = " ".join(chains[-1].parts[-1])
    return Verification(len(chains), false_steps, true_slips, conclusion)
