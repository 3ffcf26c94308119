"""Task families with verifiable answers and program-written solution steps.

A family samples a `Problem` (question text, answer, and the data its solver needs) and
writes the solution as a list of `Step`s: chains such as `12 + 7 = 19` or `a -> c`. A step
can be computed from a perturbed earlier value (`solve(problem, slip=(i, wrong))`), which is
how incorrect trajectories carry a wrong step to a wrong answer. Families know nothing of
trajectory styles (`styles.py`) or checking (`checker.py`, which re-derives everything from the
question text alone).

Families: "arith" (arithmetic chain, left to right), "addition" (multi-digit addition with
carries, column by column), "linear" (a * x + b = c), "pointer" (follow a map k hops).
Difficulty is an int >= 1; each family documents what it scales. Lab arithmetic is read
strictly left to right (no operator precedence); parentheses group.
"""

from __future__ import annotations

import abc
import dataclasses
import string
from typing import Any

import numpy as np

__all__ = ["Problem", "Step", "Family", "FAMILIES", "get_family", "column_working"]


@dataclasses.dataclass(frozen=True)
class Step:
    """One solution statement: `chain` joined by `op` ("=" or "->"), with words around it."""

    chain: tuple[str, ...]
    op: str = "="
    prefix: str = ""
    suffix: str = ""

    @property
    def value(self) -> str:
        return self.chain[-1]

    def text(self) -> str:
        core = f" {self.op} ".join(self.chain)
        return " ".join(p for p in (self.prefix, core, self.suffix) if p)

    def with_value(self, value: str) -> "Step":
        return dataclasses.replace(self, chain=(*self.chain[:-1], value))


@dataclasses.dataclass(frozen=True)
class Problem:
    family: str
    question: str
    answer: str
    difficulty: int
    data: dict[str, Any]


class Family(abc.ABC):
    """A task family: samples problems and writes (and perturbs) their solutions."""

    name: str = ""

    @abc.abstractmethod
    def sample(self, rng: np.random.Generator, difficulty: int) -> Problem:
        """A random problem of `difficulty` (>= 1)."""

    @abc.abstractmethod
    def solve(self, problem: Problem, slip: tuple[int, str] | None = None) -> list[Step]:
        """The solution steps; with `slip=(i, wrong)`, step i states `wrong` and later steps
        are computed from it (so the final value is wrong too)."""

    @abc.abstractmethod
    def wrong_value(self, problem: Problem, step: int, rng: np.random.Generator) -> str:
        """A plausible wrong result for step `step` (differs from the right one)."""

    @abc.abstractmethod
    def summary(self, problem: Problem) -> list[Step]:
        """The solution compressed to one or two statements."""

    def wrong_values(self, problem: Problem, step: int) -> list[str]:
        """Every value `wrong_value(problem, step, rng)` can return (counts distinct trajectories)."""
        raise NotImplementedError(f"family {self.name!r} does not list its wrong values")

    def alternative(self, problem: Problem, slip: tuple[int, str] | None = None) -> Step | None:
        """A different route to (or check of) the answer, used after "Alternatively". With `slip`
        (as in `solve`), the route a solver who believes the slipped values would write: it
        restates the slipped values, so it is false."""
        return None

    def detail(self, problem: Problem, step: int, slip: tuple[int, str] | None = None) -> list[str]:
        """Digit-level working that justifies step `step` (long trajectories write it first);
        with `slip`, the working of `solve(problem, slip)[step]`'s operands (the step's own
        result is still worked right: a slip is made when the value is stated)."""
        return []


def column_working(a: int, op: str, b: int) -> list[str]:
    """The digit-by-digit working of `a op b` (op "+", "-" with a >= b, or "*" with a one-digit
    b), least significant digit first, as statements of single-digit arithmetic:
    `8 + 5 + 1 = 14 , write 4 carry 1`, `3 + 10 - 7 = 6 , borrow 1`, `8 * 9 + 0 = 72 , write 2 carry 7`."""
    da = [int(c) for c in reversed(str(a))]
    if op == "*":
        if not 0 <= b <= 9:
            raise ValueError(f"column multiplication needs a one-digit multiplier, got {b}")
        out, carry = [], 0
        for d in da:
            t = d * b + carry
            out.append(f"{d} * {b} + {carry} = {t} , write {t % 10} carry {t // 10}")
            carry = t // 10
        return out
    db = [int(c) for c in reversed(str(b))]
    db += [0] * (len(da) - len(db))
    da += [0] * (len(db) - len(da))
    out, carry = [], 0
    for x, y in zip(da, db):
        if op == "+":
            t = x + y + carry
            out.append(f"{x} + {y} + {carry} = {t} , write {t % 10} carry {t // 10}")
            carry = t // 10
        else:  # subtraction, borrowing from the next column
            if x - carry < y:
                out.append(f"{x} + 10 - {carry} - {y} = {x + 10 - carry - y} , borrow 1")
                carry = 1
            else:
                out.append(f"{x} - {carry} - {y} = {x - carry - y} , borrow 0")
                carry = 0
    return out


def _near(rng, value: int, low: int = 0) -> int:
    """A wrong value near `value` (off by 1..3 or 10), never below `low`."""
    for _ in range(100):
        cand = value + int(rng.choice([-10, -3, -2, -1, 1, 2, 3, 10]))
        if cand >= low and cand != value:
            return cand
    return value + 1


def _near_values(value: int, low: int = 0) -> list[str]:
    """Every value `_near(rng, value, low)` can return."""
    out = [value + d for d in (-10, -3, -2, -1, 1, 2, 3, 10) if value + d >= low]
    return [str(v) for v in (out or [value + 1])]


class Arith(Family):
    """Arithmetic chain `a op b op c ...` evaluated left to right (+, -, and * by a digit).
    Difficulty d: d + 1 operations, operands up to 10 * d; every value stays in [0, 999]."""

    name = "arith"

    def sample(self, rng, difficulty):
        value = int(rng.integers(1, 10 * difficulty + 10))
        start, ops = value, []
        for _ in range(difficulty + 1):
            choices = ["+", "-"] + (["*"] if value < 100 else [])
            op = str(rng.choice(choices))
            if op == "*":
                b = int(rng.integers(2, 10))
            elif op == "-":
                if value == 0:
                    op, b = "+", int(rng.integers(1, 10 * difficulty + 10))
                else:
                    b = int(rng.integers(1, value + 1))
            else:
                b = int(rng.integers(1, 10 * difficulty + 10))
            if op == "+" and value + b > 999:
                op, b = "-", int(rng.integers(1, value + 1))
            value = _apply(value, op, b)
            ops.append((op, b))
        expr = " ".join([str(start)] + [f"{op} {b}" for op, b in ops])
        return Problem(self.name, f"compute {expr} ?", str(value), difficulty, {"start": start, "ops": ops})

    def solve(self, problem, slip=None):
        value, steps = problem.data["start"], []
        for i, (op, b) in enumerate(problem.data["ops"]):
            result = _apply(value, op, b)
            if slip is not None and slip[0] == i:
                result = int(slip[1])
            steps.append(Step((f"{value} {op} {b}", str(result))))
            value = result
        return steps

    def wrong_value(self, problem, step, rng):
        return str(_near(rng, int(self.solve(problem)[step].value)))

    def wrong_values(self, problem, step):
        return _near_values(int(self.solve(problem)[step].value))

    def detail(self, problem, step, slip=None):
        a = int(self.solve(problem, slip)[step].chain[0].split()[0])
        op, b = problem.data["ops"][step]
        return column_working(a, op, b)

    def summary(self, problem):
        return [Step((problem.question[len("compute "):-2], problem.answer))]

    def alternative(self, problem, slip=None):
        steps = self.solve(problem, slip)
        if len(steps) < 2:
            return None
        # regroup: the first two operations at once, then the rest from there
        first = f"{steps[0].chain[0]} {problem.data['ops'][1][0]} {problem.data['ops'][1][1]}"
        return Step((first, steps[1].value), prefix="from")


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


class Addition(Family):
    """Multi-digit addition a + b, column by column from the right with carries.
    Difficulty d: operands of d + 1 digits."""

    name = "addition"

    def sample(self, rng, difficulty):
        n = difficulty + 1
        a, b = (int(rng.integers(10 ** (n - 1), 10 ** n)) for _ in range(2))
        return Problem(self.name, f"add {a} + {b} ?", str(a + b), difficulty, {"a": a, "b": b})

    def solve(self, problem, slip=None):
        a, b = problem.data["a"], problem.data["b"]
        n = max(len(str(a)), len(str(b)))
        da, db = str(a).zfill(n)[::-1], str(b).zfill(n)[::-1]
        carry, digits, steps = 0, [], []
        for i in range(n):
            carry_in = carry
            total = int(da[i]) + int(db[i]) + carry_in
            if slip is not None and slip[0] == i:
                total = int(slip[1])
            digit, carry = total % 10, total // 10
            digits.append(str(digit))
            steps.append(Step((f"{da[i]} + {db[i]} + {carry_in}", str(total)),
                              prefix=f"column {i + 1} :", suffix=f", write {digit} carry {carry}"))
        result = str(carry) + "".join(reversed(digits)) if carry else "".join(reversed(digits))
        steps.append(Step((str(int(result)),), prefix="result is"))
        return steps

    def wrong_value(self, problem, step, rng):
        right = int(self.solve(problem)[step].value)
        return str(int(rng.choice([v for v in range(20) if v != right])))

    def wrong_values(self, problem, step):
        right = int(self.solve(problem)[step].value)
        return [str(v) for v in range(20) if v != right]

    def summary(self, problem):
        return [Step((f"{problem.data['a']} + {problem.data['b']}", problem.answer))]

    def alternative(self, problem, slip=None):
        a, b = problem.data["a"], problem.data["b"]
        total = self.solve(problem, slip)[-1].value if slip is not None else str(a + b)
        return Step((f"{total} - {b}", str(a)), prefix="check", suffix="ok")


class Linear(Family):
    """Solve a * x + b = c for a positive integer x. Difficulty d: a up to 3 + 3d, x up to 5 + 5d."""

    name = "linear"

    def sample(self, rng, difficulty):
        a = int(rng.integers(2, 4 + 3 * difficulty))
        x = int(rng.integers(1, 6 + 5 * difficulty))
        b = int(rng.integers(0, 10 + 10 * difficulty))
        c = a * x + b
        return Problem(self.name, f"solve {a} * x + {b} = {c} ?", str(x), difficulty, {"a": a, "b": b, "c": c})

    def solve(self, problem, slip=None):
        a, b, c = problem.data["a"], problem.data["b"], problem.data["c"]
        d = c - b
        if slip is not None and slip[0] == 0:
            d = int(slip[1])
        steps = [Step((f"{a} * x", f"{c} - {b}", str(d)))]
        x = d // a
        if slip is not None and slip[0] == 1:
            x = int(slip[1])
        steps.append(Step(("x", f"{d} / {a}", str(x))))
        return steps

    def wrong_value(self, problem, step, rng):
        a, b, c = problem.data["a"], problem.data["b"], problem.data["c"]
        if step == 0:  # keep it divisible by a, so the wrong chain stays in integers
            return str(c - b + a * int(rng.choice([-1, 1])) if c - b > a else c - b + a)
        return str(_near(rng, (c - b) // a, low=1))

    def wrong_values(self, problem, step):
        a, b, c = problem.data["a"], problem.data["b"], problem.data["c"]
        if step == 0:
            return [str(c - b - a), str(c - b + a)] if c - b > a else [str(c - b + a)]
        return _near_values((c - b) // a, low=1)

    def detail(self, problem, step, slip=None):
        a, b, c = problem.data["a"], problem.data["b"], problem.data["c"]
        if step == 0:
            return column_working(c, "-", b)
        d = int(self.solve(problem, slip)[0].value)
        x = d // a  # division checked by multiplying back, digit by digit
        return column_working(x, "*", a) if a <= 9 else []

    def summary(self, problem):
        a, b, c = problem.data["a"], problem.data["b"], problem.data["c"]
        return [Step(("x", f"( {c} - {b} ) / {a}", problem.answer))]

    def alternative(self, problem, slip=None):
        a, b, c = problem.data["a"], problem.data["b"], problem.data["c"]
        x = self.solve(problem, slip)[-1].value if slip is not None else problem.answer
        return Step((f"{a} * {x} + {b}", str(c)), prefix="check", suffix="ok")


class Pointer(Family):
    """Follow a map of letters k hops from a start letter. Difficulty d: d + 1 hops over a map
    of 4 + 2d letters (one random cycle, so every hop is defined and none stays put)."""

    name = "pointer"
    _letters = [c for c in string.ascii_lowercase if c != "x"]

    def sample(self, rng, difficulty):
        n = min(4 + 2 * difficulty, len(self._letters))
        keys = [str(k) for k in rng.choice(self._letters, size=n, replace=False)]
        mapping = {k: keys[(i + 1) % n] for i, k in enumerate(keys)}
        start, hops = str(rng.choice(keys)), difficulty + 1
        pairs = " , ".join(f"{k} -> {mapping[k]}" for k in sorted(keys))
        node = start
        for _ in range(hops):
            node = mapping[node]
        return Problem(self.name, f"map {pairs} ; follow {start} {hops} steps ?", node, difficulty,
                       {"map": mapping, "start": start, "hops": hops})

    def solve(self, problem, slip=None):
        mapping, node, steps = problem.data["map"], problem.data["start"], []
        for i in range(problem.data["hops"]):
            nxt = mapping[node]
            if slip is not None and slip[0] == i:
                nxt = slip[1]
            steps.append(Step((node, nxt), op="->"))
            node = nxt
        return steps

    def wrong_value(self, problem, step, rng):
        right = self.solve(problem)[step].value
        return str(rng.choice([k for k in problem.data["map"] if k != right]))

    def wrong_values(self, problem, step):
        right = self.solve(problem)[step].value
        return [k for k in problem.data["map"] if k != right]

    def summary(self, problem):
        chain = [problem.data["start"]] + [s.value for s in self.solve(problem)]
        return [Step(tuple(chain), op="->")]


FAMILIES: dict[str, Family] = {f.name: f for f in (Arith(), Addition(), Linear(), Pointer())}


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown task family {name!r} (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]
