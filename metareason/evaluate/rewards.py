"""Moved to `metareason.format.verdict`; these names stay importable from here."""

from metareason.format.verdict import REWARDS, Verdict, lab_verdict, math_equal, math_verdict, reward

__all__ = ["REWARDS", "Verdict", "reward", "lab_verdict", "math_verdict", "math_equal"]
