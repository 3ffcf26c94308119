"""An explicit key/value cache, passed into `apply` and returned updated.

The cache has a fixed number of slots T. `apply` writes the S new tokens' keys and values
into slots [index, index + S) and advances `index` (the same for every row; rows with
different lengths are expressed with segment ids or a mask). A slot's segment id records
which sequence the token belongs to; 0 marks an empty slot, which no real token attends.

Two layouts hold the same cache: stacked (k: one [L, B, K, Dh, T] array, v: one [L, B, K, T, Dh])
and per layer (k, v: tuples of L arrays [B, K, Dh, T] and [B, K, T, Dh]). `apply` takes and
returns either. Decode loops carry the per-layer one: on XLA:CPU a layer's slice of a stacked
cache is copied out at every step (all of it: about 8 MB per step for the lab model at batch 32),
while a per-layer buffer is read in place.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from metareason.model.config import ModelConfig

__all__ = ["KVCache", "init_cache"]


class KVCache(NamedTuple):
    """k: [L, B, K, Dh, T] and v: [L, B, K, T, Dh], or tuples of L arrays [B, K, Dh, T] and
    [B, K, T, Dh] (the per-layer layout); compute dtype. The layouts attention reads: heads before
    slots, so a decode step never transposes the cache, and keys with their slots last, so a
    step's scores are a plain matmul. segment_ids: int32[B, T]; index: int32[]. Logical axes:
    `metareason.model.axes.K_CACHE_AXES`, `V_CACHE_AXES`, `CACHE_SEGMENT_AXES`."""

    k: jax.Array | tuple[jax.Array, ...]
    v: jax.Array | tuple[jax.Array, ...]
    segment_ids: jax.Array
    index: jax.Array

    @property
    def per_layer(self) -> bool:
        """Whether k and v are tuples of per-layer arrays."""
        return isinstance(self.k, (tuple, list))

    @property
    def shape(self) -> tuple[int, ...]:
        """(L, B, K, T, Dh) in either layout (v's shape)."""
        if self.per_layer:
            return (len(self.v), *self.v[0].shape)
        return tuple(self.v.shape)

    @property
    def max_length(self) -> int:
        return self.shape[3]

    @property
    def batch_size(self) -> int:
        return self.shape[1]

    def stacked(self) -> KVCache:
        """The same cache in the stacked layout (one array each for k and v)."""
        if not self.per_layer:
            return self
        return self._replace(k=jnp.stack(self.k), v=jnp.stack(self.v))

    def split(self) -> KVCache:
        """The same cache in the per-layer layout (k, v: tuples of L arrays)."""
        if self.per_layer:
            return self
        L = self.k.shape[0]
        return self._replace(k=tuple(self.k[i] for i in range(L)), v=tuple(self.v[i] for i in range(L)))


def init_cache(config: ModelConfig, batch_size: int, max_length: int, dtype=None, *,
               per_layer: bool = False) -> KVCache:
    """An empty cache of `max_length` slots per row (dtype defaults to the compute dtype), stacked
    or (per_layer=True) as tuples of per-layer arrays."""
    if max_length <= 0 or batch_size <= 0:
        raise ValueError(f"cache needs positive batch_size and max_length, got {batch_size}, {max_length}")
    dtype = jnp.dtype(dtype or config.compute_dtype)
    L, B, K, T, Dh = config.num_layers, batch_size, config.num_kv_heads, max_length, config.head_dim
    if per_layer:
        k = tuple(jnp.zeros((B, K, Dh, T), dtype) for _ in range(L))
        v = tuple(jnp.zeros((B, K, T, Dh), dtype) for _ in range(L))
    else:
        k, v = jnp.zeros((L, B, K, Dh, T), dtype), jnp.zeros((L, B, K, T, Dh), dtype)
    return KVCache(k=k, v=v, segment_ids=jnp.zeros((batch_size, max_length), jnp.int32),
                   index=jnp.zeros((), jnp.int32))
