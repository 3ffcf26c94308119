"""Rotary position embeddings (the rotate-half layout of Llama, Qwen2 and Qwen3)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from metareason.model.config import ModelConfig

__all__ = ["inverse_frequencies", "apply_rope"]


def inverse_frequencies(config: ModelConfig) -> np.ndarray:
    """float64[Dh // 2]: the rotation frequency of each pair of head dimensions, scaled as
    `config.rope_scaling` says (computed once on the host, in float64)."""
    dh = config.head_dim
    inv = 1.0 / (config.rope_theta ** (np.arange(0, dh, 2, dtype=np.float64) / dh))
    s = config.rope_scaling
    if s is None:
        return inv
    if s.kind == "linear":
        return inv / s.factor
    # llama3: leave high frequencies alone, divide low ones by `factor`, interpolate between.
    old = s.original_max_position_embeddings
    low_wavelen, high_wavelen = old / s.low_freq_factor, old / s.high_freq_factor
    wavelen = 2 * math.pi / inv
    scaled = np.where(wavelen > low_wavelen, inv / s.factor, inv)
    smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(medium, smoothed, scaled)


def apply_rope(x: jnp.ndarray, positions: jnp.ndarray, inv_freq: np.ndarray) -> jnp.ndarray:
    """Rotates queries or keys by their positions.

    x: [B, S, N, Dh] (any N heads); positions: int32[B, S]; inv_freq: [Dh // 2].
    Angles are computed in float32 (float64 for float64 x); the result has x's dtype.
    """
    acc = jnp.promote_types(x.dtype, jnp.float32)
    angles = positions.astype(acc)[..., None] * jnp.asarray(inv_freq, acc)  # [B, S, Dh/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]  # [B, S, 1, Dh]
    cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin
