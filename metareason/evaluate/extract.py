"""Moved to `metareason.format.extract`; this name stays importable from here."""

from metareason.format.extract import boxed_answer

__all__ = ["boxed_answer"]
