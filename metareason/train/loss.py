"""The SFT objective on packed batches."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from metareason.model import ModelConfig, apply, hidden_states, output_logits

__all__ = ["next_token_loss", "token_scores", "sft_loss"]


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
    tokens, mask = batch["tokens"], batch["loss_mask"]
    seg = batch.get("segment_ids")
    if seg is None:  # an unpacked batch: one sequence per row
        return tokens[:, 1:], (mask[:, 1:] > 0).astype(jnp.float32)
    weight = ((mask[:, 1:] > 0) & (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)).astype(jnp.float32)
    return tokens[:, 1:], weight


def token_scores(params: Any, hidden: jax.Array, targets: jax.Array, *, config: ModelConfig, chunk: int = 0,
                 temperature: float = 1.0) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-position scores of `targets` int[B, N] from the final hidden states float[B, N, D]
    (`hidden_states`; position n predicts targets[:, n]): (logp, entropy, correct), each
    float32[B, N], under the logits divided by `temperature`; correct is 1 where the argmax is
    the target.

    With `chunk` > 0 the logits are computed `chunk` positions at a time under `jax.checkpoint`,
    so the [B, N, V] logits never exist in either pass (memory O(B x chunk x V))."""

    def score(h, t):
        logits = output_logits(params, h, config=config).astype(jnp.float32) / temperature
        logz = jax.nn.log_softmax(logits, axis=-1)
        logp = jnp.take_along_axis(logz, t[..., None], axis=-1)[..., 0]
        entropy = -(jnp.exp(logz) * logz).sum(-1)
        return logp, entropy, (jnp.argmax(logits, axis=-1) == t).astype(jnp.float32)

    B, N = targets.shape
    if not chunk or N <= chunk:
        return score(hidden, targets)
    n = -(-N // chunk)
    pad = n * chunk - N

    def blocks(x):
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
        return x.reshape(B, n, chunk, *x.shape[2:]).swapaxes(0, 1)

    out = lax.map(jax.checkpoint(lambda xs: score(*xs)), (blocks(hidden), blocks(targets)))
    return tuple(x.swapaxes(0, 1).reshape(B, n * chunk)[:, :N] for x in out)


def sft_loss(params: Any, batch: dict[str, jax.Array], *, config: ModelConfig):
    """(loss, metrics) of `params` on a packed batch with tokens, segment_ids, positions and
    loss_mask, each int32[B, S]. With `config.loss_chunk` the logits are computed in chunks.

    A batch without segment_ids (and positions) is unpacked, one sequence per row: attention is
    plain causal, which reaches cuDNN's causal kernel (`attention_impl="cudnn"`) rather than a
    dense [B, S, S] mask."""
    S = batch["tokens"].shape[1]
    inputs = dict(segment_ids=batch.get("segment_ids"), positions=batch.get("positions"))
    if config.loss_chunk and S - 1 > config.loss_chunk:
        hidden, _ = hidden_states(params, batch["tokens"], config=config, **inputs)
        targets, weight = _targets(batch)
        logp, _, correct = token_scores(params, hidden[:, :-1], targets, config=config, chunk=config.loss_chunk)
        count = weight.sum()
        denom = jnp.maximum(count, 1.0)
        loss = -(logp * weight).sum() / denom
        return loss, {"loss": loss, "tokens": count, "accuracy": (correct * weight).sum() / denom}
    logits = apply(params, batch["tokens"], config=config, **inputs).logits
    return next_token_loss(logits, batch)
