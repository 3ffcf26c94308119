"""The SFT objective on packed batches."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from metareason.model import ModelConfig, apply

__all__ = ["next_token_loss", "sft_loss"]


def next_token_loss(logits: jax.Array, batch: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean negative log-likelihood of the trained tokens of a packed batch.

    logits: float[B, S, V] for batch["tokens"]. Token s + 1 is a target when
    loss_mask[:, s + 1] == 1 and it lies in the same (non-padding) segment as token s.
    Returns (loss, {"loss", "tokens", "accuracy"}); with no target the loss is 0, not NaN.
    """
    tokens, seg, mask = batch["tokens"], batch["segment_ids"], batch["loss_mask"]
    targets = tokens[:, 1:]
    weight = ((mask[:, 1:] > 0) & (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)).astype(jnp.float32)
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    count = weight.sum()
    denom = jnp.maximum(count, 1.0)
    loss = (nll * weight).sum() / denom
    correct = (jnp.argmax(logits[:, :-1], axis=-1) == targets).astype(jnp.float32)
    return loss, {"loss": loss, "tokens": count, "accuracy": (correct * weight).sum() / denom}


def sft_loss(params: Any, batch: dict[str, jax.Array], *, config: ModelConfig):
    """(loss, metrics) of `params` on a packed batch with tokens, segment_ids, positions and
    loss_mask, each int32[B, S]."""
    logits = apply(params, batch["tokens"], config=config, segment_ids=batch["segment_ids"],
                   positions=batch["positions"]).logits
    return next_token_loss(logits, batch)
