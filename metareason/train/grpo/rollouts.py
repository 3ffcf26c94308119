"""GRPO's rollouts: a group of samples per prompt in one fixed-shape sampler call, and their
training layout (rows `[prompt | completion | pad]` with the loss on the completion)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from metareason.model import ModelConfig
from metareason.sample import SamplingConfig, generate

__all__ = ["sample_rollouts", "rollout_batch"]


def sample_rollouts(params: Any, config: ModelConfig, prompts: list[list[int]], *, group: int, width: int,
                    sampling: SamplingConfig, key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """`group` samples per prompt in one fixed-shape `generate` call (rows q * group .. q * group +
    group - 1 belong to prompt q). Prompts are right-padded to `width`. Returns (tokens int32[B, N],
    lengths int32[B]) on the host, B = len(prompts) * group."""
    B = len(prompts) * group
    arr = np.full((B, width), sampling.pad_id, np.int32)
    lens = np.empty(B, np.int32)
    for q, p in enumerate(prompts):
        arr[q * group:(q + 1) * group, :len(p)] = p
        lens[q * group:(q + 1) * group] = len(p)
    out = jax.device_get(generate(params, arr, lens, config=config, sampling=sampling, key=key))
    return np.asarray(out.tokens), np.asarray(out.lengths)


def rollout_batch(prompts: list[list[int]], tokens: np.ndarray, lengths: np.ndarray, *, group: int,
                  width: int) -> dict[str, np.ndarray]:
    """The training layout of rollouts: rows `[prompt | completion | pad]` of width + N tokens
    (tokens int32[B, S]) with loss_mask float32[B, S] on the completion tokens."""
    B, N = tokens.shape
    out = np.zeros((B, width + N), np.int32)
    mask = np.zeros((B, width + N), np.float32)
    for b in range(B):
        p = prompts[b // group]
        n = int(lengths[b])
        out[b, :len(p)] = p
        out[b, len(p):len(p) + n] = tokens[b, :n]
        mask[b, len(p):len(p) + n] = 1.0
    return {"tokens": out, "loss_mask": mask}
