"""GRPO's pieces as pure functions: group advantages, the update mask (E11), per-token
log-probabilities, and the clipped policy loss with a k3 KL penalty and an entropy bonus.

Rollout batches are right-padded rows `[prompt | completion | pad]`:

    tokens:        int32[B, S]
    loss_mask:     float32[B, S]  1 on the completion tokens the policy loss trains (sampled, not forced)
    advantages:    float32[B]     one per rollout (row b is rollout b % G of group b // G)
    old_logprobs:  float32[B, S]  log pi_old(token s | tokens < s) at the rollout (0 where loss_mask is 0)
    ref_logprobs:  float32[B, S]  the same under the frozen reference model
    update_mask:   float32[B]     1 for the rollouts that contribute to the loss (E11; all 1 = plain GRPO)

Per token (ratio r = exp(logp - old), A the row's advantage):

    policy  = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high))
    kl (k3) = exp(ref - logp) - (ref - logp) - 1          (Schulman's unbiased, positive estimator)
    loss    = policy + kl_coef * kl - entropy_coef * entropy

aggregated over the weights w = loss_mask * update_mask by `aggregation`:
  "token-mean"               sum(w loss) / sum(w)                         (DAPO, veRL's default)
  "seq-mean-token-mean"      mean over contributing rows of each row's token mean (original GRPO)
  "seq-mean-token-sum-norm"  sum(w loss) / (contributing rows * S)         (Dr. GRPO: a constant length)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from metareason.errors import check_float, flag_name
from metareason.model import ModelConfig, hidden_states
from metareason.train.loss import token_scores

__all__ = ["GRPOLossConfig", "AGGREGATIONS", "ADVANTAGES", "group_advantages", "update_mask", "token_logprobs",
           "grpo_loss"]

AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
ADVANTAGES = ("grpo", "dr-grpo")


@dataclasses.dataclass(frozen=True)
class GRPOLossConfig:
    """The policy loss (frozen and hashable: a static jit argument)."""

    clip_low: float = 0.2
    """Lower clip range: the ratio is clipped below at 1 - clip_low."""
    clip_high: float = 0.2
    """Upper clip range: the ratio is clipped above at 1 + clip_high (DAPO's clip-higher: 0.28)."""
    kl_coef: float = 0.001
    """Weight beta of the k3 KL estimate to the frozen reference (0 skips the reference)."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus (the paper: 0.001)."""
    aggregation: str = "token-mean"
    """One of AGGREGATIONS (see the module docstring)."""

    def __post_init__(self):
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown loss aggregation {self.aggregation!r} (known: {', '.join(AGGREGATIONS)})")
        for name in ("clip_low", "clip_high", "kl_coef", "entropy_coef"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"GRPO loss field {name} must be >= 0, got {getattr(self, name)!r}")
        if self.clip_low >= 1:
            raise ValueError(f"clip_low must be < 1 (the ratio's lower bound 1 - clip_low > 0), got {self.clip_low}")

    def validate(self, prefix: str = "--loss.") -> None:
        """`ConfigError` naming the flag of the first coefficient that is not finite and in range."""
        check_float(flag_name(prefix, "clip_low"), self.clip_low, 0, 1, hi_open=True)
        for name in ("clip_high", "kl_coef", "entropy_coef"):
            check_float(flag_name(prefix, name), getattr(self, name), 0)


def group_advantages(rewards: jax.Array, mode: str = "grpo", eps: float = 1e-6) -> jax.Array:
    """float32[Q, G] advantages of G rollouts per question from their rewards [Q, G].

    "grpo": (r - mean) / (std + eps), std with ddof 1 (as DeepSeekMath and veRL);
    "dr-grpo": r - mean (Dr. GRPO drops the std normalisation). A group whose rewards are all
    equal gets zero advantage (never NaN), also for G = 1."""
    if mode not in ADVANTAGES:
        raise ValueError(f"unknown advantage mode {mode!r} (known: {', '.join(ADVANTAGES)})")
    r = jnp.asarray(rewards, jnp.float32)
    if r.ndim != 2:
        raise ValueError(f"rewards must be [questions, group], got shape {r.shape}")
    centred = r - r.mean(axis=1, keepdims=True)
    if mode == "dr-grpo":
        return centred
    G = r.shape[1]
    std = jnp.sqrt((centred ** 2).sum(axis=1, keepdims=True) / max(G - 1, 1))
    return centred / (std + eps)


def update_mask(key: jax.Array, num_groups: int, group_size: int, n: int) -> jax.Array:
    """float32[Q * G]: for each group, `n` of its G rollouts chosen uniformly at random get 1 (E11);
    n = G keeps every rollout (plain GRPO)."""
    if not 1 <= n <= group_size:
        raise ValueError(f"update_n must be in [1, group_size={group_size}], got {n}")
    if n == group_size:
        return jnp.ones((num_groups * group_size,), jnp.float32)
    u = jax.random.uniform(key, (num_groups, group_size))
    rank = jnp.argsort(jnp.argsort(u, axis=1), axis=1)
    return (rank < n).astype(jnp.float32).reshape(-1)


def token_logprobs(params: Any, tokens: jax.Array, *, config: ModelConfig,
                   temperature: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """(logp, entropy), each float32[B, S]: logp[:, s] = log p(tokens[:, s] | tokens[:, :s]) under
    the logits divided by `temperature`, entropy[:, s] the entropy of that distribution; column 0
    (no context) is 0. Rows are right-padded, so padding never affects a real token. With
    `config.loss_chunk` the logits are computed a chunk of positions at a time (`token_scores`)."""
    hidden, _ = hidden_states(params, tokens, config=config)
    logp, entropy, _ = token_scores(params, hidden[:, :-1], tokens[:, 1:], config=config, chunk=config.loss_chunk,
                                    temperature=temperature)
    zero = jnp.zeros_like(logp[:, :1])
    return jnp.concatenate([zero, logp], 1), jnp.concatenate([zero, entropy], 1)


def grpo_loss(params: Any, batch: dict[str, jax.Array], *, config: ModelConfig, loss: GRPOLossConfig,
              temperature: float = 1.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(loss, metrics) of a rollout batch (module docstring). Metrics: policy_loss, kl, entropy,
    clip_fraction, ratio (token means over the weights), tokens (the weight sum)."""
    logp, entropy = token_logprobs(params, batch["tokens"], config=config, temperature=temperature)
    w = batch["loss_mask"].astype(jnp.float32) * batch["update_mask"].astype(jnp.float32)[:, None]
    adv = batch["advantages"].astype(jnp.float32)[:, None]
    ratio = jnp.exp(logp - batch["old_logprobs"])
    clipped = jnp.clip(ratio, 1.0 - loss.clip_low, 1.0 + loss.clip_high)
    policy = jnp.maximum(-adv * ratio, -adv * clipped)
    d = batch["ref_logprobs"] - logp
    kl = jnp.exp(d) - d - 1.0
    per_token = policy + loss.kl_coef * kl - loss.entropy_coef * entropy

    count = w.sum()
    row_tokens = w.sum(1)
    rows = (row_tokens > 0).astype(jnp.float32)
    if loss.aggregation == "token-mean":
        total = (per_token * w).sum() / jnp.maximum(count, 1.0)
    elif loss.aggregation == "seq-mean-token-mean":
        total = ((per_token * w).sum(1) / jnp.maximum(row_tokens, 1.0)).sum() / jnp.maximum(rows.sum(), 1.0)
    else:
        total = (per_token * w).sum() / (jnp.maximum(rows.sum(), 1.0) * w.shape[1])

    def mean(x):
        return (x * w).sum() / jnp.maximum(count, 1.0)

    was_clipped = ((ratio < 1.0 - loss.clip_low) & (adv < 0)) | ((ratio > 1.0 + loss.clip_high) & (adv > 0))
    return total, {"loss": total, "policy_loss": mean(policy), "kl": mean(kl), "entropy": mean(entropy),
                   "clip_fraction": mean(was_clipped.astype(jnp.float32)), "ratio": mean(ratio), "tokens": count}
