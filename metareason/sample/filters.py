"""Per-step logit processing: pure functions over logits [..., V] (any leading axes).

Removed tokens get logit -inf, so `jax.nn.softmax` / `jax.random.categorical` of the result
is the renormalised distribution over the kept tokens. Both filters are order-independent
among tied tokens: a token tied with the last one kept is kept too (so a filter may keep more
than k tokens, or more than the minimal nucleus), and the result never depends on how a sort
happens to order equal values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from metareason.sample.config import SamplingConfig

__all__ = ["top_k_filter", "top_p_filter", "process_logits", "sample_token"]


def top_k_filter(logits: jax.Array, k: int) -> jax.Array:
    """Keeps the tokens whose logit is >= the k-th largest logit (ties with it kept).

    Args:
      logits: float[..., V].
      k: a Python int (static); 0, or k >= V, returns `logits` unchanged.

    Returns:
      float[..., V]: `logits` with the removed entries set to -inf.
    """
    V = logits.shape[-1]
    if k < 0:
        raise ValueError(f"top_k_filter: k must be >= 0, got {k}")
    if k == 0 or k >= V:
        return logits
    kth = lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits >= kth, logits, -jnp.inf)


def top_p_filter(logits: jax.Array, p: float | jax.Array) -> jax.Array:
    """Nucleus filter: keeps token i iff the total probability of the tokens strictly more
    probable than i is < p.

    Equivalently: sort the probabilities (softmax of `logits`) in descending order, take the
    shortest prefix whose cumulative sum reaches p, and keep every token whose probability is
    >= the last one in that prefix (tokens tied with it are kept). The most probable token is
    always kept.

    Args:
      logits: float[..., V] (may already hold -inf for removed tokens).
      p: a number in (0, 1] (may be traced); p >= 1 returns `logits` unchanged.

    Returns:
      float[..., V]: `logits` with the removed entries set to -inf.
    """
    if isinstance(p, (int, float)) and p >= 1.0:
        return logits
    probs = jax.nn.softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)
    desc = -jnp.sort(-probs, axis=-1)
    cum = jnp.cumsum(desc, axis=-1)
    mass_before = jnp.concatenate([jnp.zeros_like(cum[..., :1]), cum[..., :-1]], axis=-1)
    count = jnp.sum(mass_before < p, axis=-1, keepdims=True)  # >= 1: mass_before[0] = 0 < p
    threshold = jnp.take_along_axis(desc, jnp.maximum(count, 1) - 1, axis=-1)
    keep = (probs >= threshold) | (p >= 1.0)
    return jnp.where(keep, logits, -jnp.inf)


def process_logits(logits: jax.Array, sampling: SamplingConfig) -> jax.Array:
    """The log-domain sampling distribution that `generate` draws from (temperature > 0):
    logits / temperature, then `top_k_filter`, then `top_p_filter`.

    Args:
      logits: float[..., V].
      sampling: a `SamplingConfig` with temperature > 0.

    Returns:
      float32[..., V] (float64 for float64 logits): unnormalised log-probabilities, -inf
      where removed; `jax.nn.log_softmax` of it gives the log-probabilities used.
    """
    if sampling.greedy:
        raise ValueError("process_logits: temperature 0 (greedy) has no logit distribution; use argmax")
    x = logits.astype(jnp.promote_types(logits.dtype, jnp.float32)) / sampling.temperature
    x = top_k_filter(x, sampling.top_k)
    return top_p_filter(x, sampling.top_p)


def sample_token(logits: jax.Array, key: jax.Array | None, sampling: SamplingConfig) -> tuple[jax.Array, jax.Array]:
    """Draws one token per row of `logits` as `sampling` says.

    Args:
      logits: float[..., V].
      key: a PRNG key (unused, may be None, when greedy).
      sampling: the `SamplingConfig` (static).

    Returns:
      (tokens int32[...], logprobs float32[...]): the drawn tokens and their log-probability
      under the distribution drawn from (`process_logits`); greedy picks the argmax (first
      among ties), whose log-probability under that point mass is 0.
    """
    if sampling.greedy:
        tokens = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        return tokens, jnp.zeros(tokens.shape, jnp.float32)
    x = process_logits(logits, sampling)
    tokens = jax.random.categorical(key, x, axis=-1).astype(jnp.int32)
    logp = jnp.take_along_axis(jax.nn.log_softmax(x, axis=-1), tokens[..., None], axis=-1)[..., 0]
    return tokens, logp.astype(jnp.float32)
