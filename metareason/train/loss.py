"""The SFT objective on packed batches."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from metareason.model import ModelConfig, apply, hidden_states, output_logits

__all__ = ["next_token_loss", "chunked_next_token_loss", "sft_loss"]


def next_token_loss(logits: jax.Array, batch: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean negative log-likelihood of the trained tokens of a packed batch.

    logits: float[B, S, V] for batch["tokens"]. Token s + 1 is a target when
    loss_mask[:, s + 1] == 1 and it lies in the same (non-padding) segment as token s.
    Returns (loss, {"loss", "tokens", "accuracy"}); with no target the loss is 0, not NaN.
    """
    targets, weight = _targets(batch)
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    count = weight.sum()
    denom = jnp.maximum(count, 1.0)
    loss = (nll * weight).sum() / denom
    correct = (jnp.argmax(logits[:, :-1], axis=-1) == targets).astype(jnp.float32)
    return loss, {"loss": loss, "tokens": count, "accuracy": (correct * weight).sum() / denom}


def _targets(batch):
    tokens, seg, mask = batch["tokens"], batch["segment_ids"], batch["loss_mask"]
    weight = ((mask[:, 1:] > 0) & (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)).astype(jnp.float32)
    return tokens[:, 1:], weight


def chunked_next_token_loss(params: Any, hidden: jax.Array, batch: dict[str, jax.Array], *, config: ModelConfig,
                            chunk: int) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`next_token_loss` from the final hidden states [B, S, D] (`hidden_states`), computing the
    logits `chunk` positions at a time under `jax.checkpoint`: the [B, S, V] logits never exist,
    in either pass. Equal to `next_token_loss(output_logits(hidden))` up to float rounding."""
    targets, weight = _targets(batch)
    B, S1 = targets.shape
    n = -(-S1 // chunk)
    pad = n * chunk - S1

    def blocks(x):
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
        return x.reshape(B, n, chunk, *x.shape[2:]).swapaxes(0, 1)

    @jax.checkpoint
    def one(xs):
        h, t, w = xs
        logits = output_logits(params, h, config=config)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        nll = -jnp.take_along_axis(logp, t[..., None], axis=-1)[..., 0]
        correct = (jnp.argmax(logits, axis=-1) == t).astype(jnp.float32)
        return (nll * w).sum(), (correct * w).sum()

    nll, correct = lax.map(one, (blocks(hidden[:, :-1]), blocks(targets), blocks(weight)))
    count = weight.sum()
    denom = jnp.maximum(count, 1.0)
    loss = nll.sum() / denom
    return loss, {"loss": loss, "tokens": count, "accuracy": correct.sum() / denom}


def sft_loss(params: Any, batch: dict[str, jax.Array], *, config: ModelConfig):
    """(loss, metrics) of `params` on a packed batch with tokens, segment_ids, positions and
    loss_mask, each int32[B, S]. With `config.loss_chunk` the logits are computed in chunks."""
    S = batch["tokens"].shape[1]
    if config.loss_chunk and S - 1 > config.loss_chunk:
        hidden, _ = hidden_states(params, batch["tokens"], config=config, segment_ids=batch["segment_ids"],
                                  positions=batch["positions"])
        return chunked_next_token_loss(params, hidden, batch, config=config, chunk=config.loss_chunk)
    logits = apply(params, batch["tokens"], config=config, segment_ids=batch["segment_ids"],
                   positions=batch["positions"]).logits
    return next_token_loss(logits, batch)
