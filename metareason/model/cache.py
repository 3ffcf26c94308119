"""An explicit key/value cache, passed into `apply` and returned updated.

The cache has a fixed number of slots T. `apply` writes the S new tokens' keys and values
into slots [index, index + S) and advances `index` (the same for every row; rows with
different lengths are expressed with segment ids or a mask). A slot's segment id records
which sequence the token belongs to; 0 marks an empty slot, which no real token attends.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from metareason.model.config import ModelConfig

__all__ = ["KVCache", "init_cache"]


class KVCache(NamedTuple):
    """k, v: [L, B, K, T, Dh] (compute dtype; heads before slots, the layout attention reads, so a
    decode step never transposes the cache); segment_ids: int32[B, T]; index: int32[]."""

    k: jax.Array
    v: jax.Array
    segment_ids: jax.Array
    index: jax.Array

    @property
    def max_length(self) -> int:
        return self.k.shape[3]

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]


def init_cache(config: ModelConfig, batch_size: int, max_length: int, dtype=None) -> KVCache:
    """An empty cache of `max_length` slots per row (dtype defaults to the compute dtype)."""
    if max_length <= 0 or batch_size <= 0:
        raise ValueError(f"cache needs positive batch_size and max_length, got {batch_size}, {max_length}")
    dtype = jnp.dtype(dtype or config.compute_dtype)
    shape = (config.num_layers, batch_size, config.num_kv_heads, max_length, config.head_dim)
    return KVCache(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
                   segment_ids=jnp.zeros((batch_size, max_length), jnp.int32),
                   index=jnp.zeros((), jnp.int32))
