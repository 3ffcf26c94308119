"""Generation for a list of prompts of any lengths, in fixed-shape batches (one compilation)."""

from __future__ import annotations

from typing import Any, Sequence

import dataclasses

import jax
import numpy as np

from metareason.model import ModelConfig
from metareason.sample.config import Forcing, SamplingConfig, SamplingError
from metareason.sample.decode import generate

__all__ = ["generate_all", "round_up"]


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that is >= max(n, 1)."""
    return -(-max(n, 1) // multiple) * multiple


def generate_all(params: Any, config: ModelConfig, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, *,
                 key: jax.Array | None = None, batch_size: int = 64, multiple: int = 32,
                 forcing: Forcing | None = None, think_budget: int | Sequence[int] | None = None) -> list[np.ndarray]:
    """Continuations of every prompt (int32 arrays, a stop token included when emitted).

    Prompts are right-padded to one length (rounded up to `multiple`) and batches are filled to
    `batch_size` rows, so one compilation serves the whole list. `max_new_tokens` is capped so
    prompt + continuation fit the model's context. Batch i samples with `fold_in(key, i)`.
    `forcing` + `think_budget` (one int, or one per prompt; capped at max_new_tokens): budget
    forcing (`generate`)."""
    if not prompts:
        return []
    P = round_up(max(len(p) for p in prompts), multiple)
    room = config.max_position_embeddings - P
    if room < 1:
        raise ValueError(f"prompts of {P} tokens leave no room in the model's context "
                         f"({config.max_position_embeddings})")
    if sampling.max_new_tokens > room:
        sampling = dataclasses.replace(sampling, max_new_tokens=room)
    key = jax.random.key(0) if key is None else key
    if think_budget is not None:
        tb = np.asarray(think_budget)
        if tb.ndim > 1 or tb.size not in (1, len(prompts)) or not np.issubdtype(tb.dtype, np.integer):
            raise SamplingError(f"think_budget must be one int or one per prompt ({len(prompts)}), "
                                f"got {tb.dtype} of shape {tb.shape}")
        think_budget = np.broadcast_to(np.minimum(tb, sampling.max_new_tokens).astype(np.int32), (len(prompts),))
    out: list[np.ndarray] = []
    for b, s in enumerate(range(0, len(prompts), batch_size)):
        chunk = prompts[s:s + batch_size]
        arr = np.full((batch_size, P), sampling.pad_id, np.int32)
        lens = np.ones(batch_size, np.int32)
        for i, p in enumerate(chunk):
            arr[i, :len(p)] = p
            lens[i] = len(p)
        arr[len(chunk):, 0] = chunk[0][0]  # filler rows
        think = None
        if think_budget is not None:
            think = np.zeros(batch_size, np.int32)
            think[:len(chunk)] = think_budget[s:s + len(chunk)]
        res = jax.device_get(generate(params, arr, lens, config=config, sampling=sampling,
                                      key=jax.random.fold_in(key, b), forcing=forcing, think_budgets=think))
        out.extend(np.asarray(res.tokens[i, :res.lengths[i]], np.int32) for i in range(len(chunk)))
    return out
