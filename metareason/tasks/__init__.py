"""Synthetic reasoning task families with verifiable answers, trajectory styles, an
independent checker, and the lab's sequence layout."""

from metareason.tasks.checker import Verification, evaluate, verify
from metareason.tasks.families import FAMILIES, Family, Problem, Step, get_family
from metareason.tasks.lab import (SPLITS, LabConfig, answer_suffix_tokens, encode_example, lab_records,
                                  parse_answer, prompt_tokens)
from metareason.tasks.styles import STYLES, Trajectory, render

__all__ = ["FAMILIES", "Family", "Problem", "Step", "get_family", "STYLES", "Trajectory", "render",
           "Verification", "verify", "evaluate", "LabConfig", "SPLITS", "lab_records", "encode_example",
           "prompt_tokens", "answer_suffix_tokens", "parse_answer"]
