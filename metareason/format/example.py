"""`Example`: one question with one trajectory, tokenized, as the probe reads it."""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["Example", "FormatError"]


class FormatError(ValueError):
    """Text a format cannot encode as asked (one line, names what is wrong)."""


@dataclasses.dataclass(frozen=True)
class Example:
    """One question with one trajectory (`Format.probe_example`).

    prompt: int32[P]      everything before the trajectory (e.g. `<bos> question <think>`)
    trajectory: int32[T]  the thinking
    probe: int32[A]       written after a trajectory prefix: [end of thinking] answer template, answer
    targets: bool[A]      True on the answer tokens of `probe` (the probe's loss is on them)
    types: tuple[str, ...] of length T, the token type of each trajectory token
    meta: dict            id, family, correct, style, generation, ... (carried into the probe's curves)

    A trajectory prefix of k tokens (0 <= k <= T) is the cut `P + k` in `ProbeBatch` coordinates."""

    prompt: np.ndarray
    trajectory: np.ndarray
    probe: np.ndarray
    targets: np.ndarray
    types: tuple[str, ...]
    meta: dict
