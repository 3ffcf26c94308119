"""Which trajectory each training example of a question uses (PAPER.md, E10).

"k trajectories per question at equal training frequency": every question contributes the
same number of examples (`slots`) whatever k is; with k distinct trajectories available, the
slots cycle through them in a seeded random order, re-sampling to fill."""

from __future__ import annotations

import numpy as np

__all__ = ["trajectory_slots", "question_schedule"]


def trajectory_slots(num_questions: int, k: int, slots: int, seed: int) -> np.ndarray:
    """int32[num_questions * slots, 2]: (question index, trajectory index < k) per example.

    Each question gets exactly `slots` examples; each of its first k trajectories is used
    floor(slots / k) or ceil(slots / k) times (k <= slots), chosen by a seeded shuffle."""
    if k < 1 or slots < 1:
        raise ValueError(f"k and slots must be >= 1, got k={k}, slots={slots}")
    if k > slots:
        raise ValueError(f"k={k} trajectories cannot fit in {slots} slots per question")
    rng = np.random.default_rng(seed)
    out = np.empty((num_questions, slots, 2), np.int32)
    base = np.arange(slots) % k
    for q in range(num_questions):
        out[q, :, 0] = q
        out[q, :, 1] = rng.permutation(base)
    return out.reshape(-1, 2)


def question_schedule(n: int, per_step: int, steps: int, seed: int) -> np.ndarray:
    """int[steps, per_step]: the questions of each step. Each epoch is a fresh permutation of the n
    questions cut into steps (the n % per_step left over are dropped), so a step never repeats one."""
    if per_step > n:
        raise ValueError(f"questions_per_step={per_step} exceeds the {n} training questions")
    rng = np.random.default_rng(seed)
    per_epoch = n // per_step
    epochs = [rng.permutation(n)[:per_epoch * per_step].reshape(per_epoch, per_step)
              for _ in range(-(-steps // per_epoch))]
    return np.concatenate(epochs)[:steps]
