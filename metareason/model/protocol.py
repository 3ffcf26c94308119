"""The model protocol: any causal language model as a pure function of a params pytree.

The probe (`metareason.probe`), the inner loops and their objectives (`metareason.inner`) take a
`CausalLM`, or our own `ModelConfig` (which `as_causal_lm` wraps, keeping our fast paths: the
KV-cache probe, intermediates for the implicit update). Bring a Flax model with the adapters in
`metareason.model.adapters` (linen and NNX), or write the four fields yourself:

    lm = CausalLM(apply=my_logits_fn, vocab_size=32000, max_length=4096, name="mine")
    loss = answer_loss_along_trajectory(params, batch, config=lm, method="packed")

`apply(params, tokens, positions, mask)` must be pure (jit, grad, vmap apply to it):
  tokens: int32[B, S]; positions: int32[B, S] RoPE positions; mask: bool[B, S, S], True where
  query s may attend key s' (it replaces the causal rule, so any prefix-sharing layout works);
  returns logits float32[B, S, V].

A `CausalLM` is a frozen dataclass and hashable (its fields are), so it is a static jit argument
exactly like `ModelConfig`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from metareason.model.config import ModelConfig
from metareason.model.transformer import apply as _apply

__all__ = ["CausalLM", "as_causal_lm", "causal_mask"]


@dataclasses.dataclass(frozen=True)
class CausalLM:
    """A causal LM as data: a pure `apply(params, tokens, positions, mask) -> logits` plus what
    callers check inputs against.

    Attributes:
      apply: (params, tokens int32[B, S], positions int32[B, S], mask bool[B, S, S]) ->
        logits float32[B, S, V].
      vocab_size: V.
      max_length: the longest sequence the model takes (None: unchecked).
      name: for messages and reports.
      config: our `ModelConfig` when this wraps our own model (enables its fast paths), else None.
      mlp_kernels: optional, for the implicit-update analysis: where the model's MLP kernels are
        (see `metareason.inner.implicit`); None when the model does not declare them.
    """

    apply: Callable[..., jax.Array]
    vocab_size: int
    max_length: int | None = None
    name: str = "model"
    config: ModelConfig | None = None
    mlp_kernels: Any = None


def causal_mask(tokens: jax.Array) -> jax.Array:
    """bool[B, S, S]: the plain causal mask for tokens int[B, S]."""
    S = tokens.shape[-1]
    return jnp.broadcast_to(jnp.tril(jnp.ones((S, S), bool)), (*tokens.shape[:-1], S, S))


def _our_apply(config: ModelConfig) -> Callable[..., jax.Array]:
    def fn(params, tokens, positions=None, mask=None):
        return _apply(params, tokens, config=config, positions=positions, mask=mask).logits

    return fn


_WRAPPED: dict[ModelConfig, CausalLM] = {}


def as_causal_lm(model: ModelConfig | CausalLM) -> CausalLM:
    """A `CausalLM` for `model`: itself, or our transformer under `config` (cached per config so
    the same object, hence the same jit cache entry, comes back each time)."""
    if isinstance(model, CausalLM):
        return model
    if isinstance(model, ModelConfig):
        if model not in _WRAPPED:
            _WRAPPED[model] = CausalLM(apply=_our_apply(model), vocab_size=model.vocab_size,
                                       max_length=model.max_position_embeddings, name=model.family, config=model)
        return _WRAPPED[model]
    raise TypeError(f"expected a ModelConfig or a metareason.model.CausalLM, got {type(model).__name__}")
