"""Flax models as a `CausalLM`: the adapters that bring a linen module or an NNX model to the
probe and the inner loops.

    lm = from_linen(module, vocab_size=V)              # params: variables["params"]
    lm, params = from_nnx(model, vocab_size=V)         # params: the model's nnx.Param state

Both return a `CausalLM` whose `apply(params, tokens, positions, mask) -> logits` is pure (jit,
grad, vmap and `jax.jvp` apply to it); the params are an ordinary pytree, so `jax.grad` and
optax act on them directly. Shapes: tokens int32[B, S], positions int32[B, S], mask
bool[B, S, S] (True where query s may attend key s'), logits float32[B, S, V].

A module whose call takes other arguments (a cache, a differently named mask, a tuple out) needs
`call=`: for linen, `call(module, params, tokens, positions, mask) -> logits`; for NNX,
`call(model, tokens, positions, mask) -> logits`, where `model` is the merged module. Tunix's
Qwen2, for example:

    lm, params = from_nnx(qwen2, vocab_size=cfg.vocab_size,
                          call=lambda m, t, p, mask: m(t, p, None, mask)[0])

Build the adapter once and reuse it: a `CausalLM` is a static jit argument hashed by its
fields, and each call of these functions makes a new `apply`, hence a new compilation.
The MLP kernels (what `trainable="mlp"` and the implicit update move) are found by name: a
"kernel" under a module whose name contains "mlp" (Tunix's Qwen2: layers/i/mlp/*_proj/kernel).
A model named otherwise declares them with `dataclasses.replace(lm, mlp_kernels=predicate)`,
predicate(path, leaf) -> bool as in `metareason.inner.trainable_mask`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import linen, nnx

from metareason.model.protocol import CausalLM

__all__ = ["AdapterError", "from_linen", "from_nnx"]


class AdapterError(ValueError):
    """A model the adapters cannot wrap, or one whose call returns the wrong thing (one line)."""


def _check_fields(vocab_size: Any, max_length: Any, call: Any) -> None:
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 1:
        raise AdapterError(f"vocab_size must be a positive int, got {vocab_size!r}")
    if max_length is not None and (not isinstance(max_length, int) or isinstance(max_length, bool)
                                   or max_length < 1):
        raise AdapterError(f"max_length must be None or a positive int, got {max_length!r}")
    if call is not None and not callable(call):
        raise AdapterError(f"call must be a function returning logits, got {type(call).__name__}")


def _checked_logits(logits: Any, tokens: jax.Array, vocab_size: int, name: str) -> jax.Array:
    """logits as float32[B, S, V], or a one-line error saying what the model returned instead
    (raised while tracing, so at the first call)."""
    if isinstance(logits, (tuple, list)):
        raise AdapterError(f"{name} returned a {type(logits).__name__} of {len(logits)}, not logits: pass "
                           "call= to pick the logits out")
    shape = getattr(logits, "shape", None)
    want = (*tokens.shape, vocab_size)
    if shape != want:
        raise AdapterError(f"{name} returned {type(logits).__name__} of shape {shape}; expected logits {want} "
                           "[B, S, vocab_size]")
    return jnp.asarray(logits, jnp.float32)


def _linen_call(module: linen.Module, params: Any, tokens: jax.Array, positions: jax.Array,
                mask: jax.Array) -> jax.Array:
    return module.apply({"params": params}, tokens, positions=positions, mask=mask)


def from_linen(module: linen.Module, *, vocab_size: int, max_length: int | None = None,
               call: Callable[..., jax.Array] | None = None, name: str | None = None) -> CausalLM:
    """A `CausalLM` over a Flax linen module; its params are the module's "params" collection.

    Args:
      module: a `flax.linen.Module` (unbound: the params are passed at every call).
      vocab_size: V, the logits' last dimension.
      max_length: the longest sequence the model takes (None: unchecked).
      call: `call(module, params, tokens, positions, mask) -> logits float[B, S, V]`. Default:
        `module.apply({"params": params}, tokens, positions=positions, mask=mask)`.
      name: for messages (default: the module's class name).

    Returns:
      A `CausalLM` whose `apply(params, tokens int32[B, S], positions int32[B, S],
      mask bool[B, S, S])` returns logits float32[B, S, V]. Get params with
      `module.init(key, tokens, positions=positions, mask=mask)["params"]`.
    """
    if not isinstance(module, linen.Module):
        raise AdapterError(f"from_linen takes a flax.linen.Module, got {type(module).__name__}"
                           + (" (use from_nnx for an NNX model)" if isinstance(module, nnx.Module) else ""))
    _check_fields(vocab_size, max_length, call)
    name = name or type(module).__name__
    fn = call or _linen_call

    def apply(params, tokens, positions, mask):
        return _checked_logits(fn(module, params, tokens, positions, mask), tokens, vocab_size, name)

    return CausalLM(apply=apply, vocab_size=vocab_size, max_length=max_length, name=name)


def _nnx_call(model: nnx.Module, tokens: jax.Array, positions: jax.Array, mask: jax.Array) -> jax.Array:
    return model(tokens, positions=positions, mask=mask)


def from_nnx(model: nnx.Module, *, vocab_size: int, max_length: int | None = None,
             call: Callable[..., jax.Array] | None = None, name: str | None = None) -> tuple[CausalLM, Any]:
    """A `CausalLM` over a Flax NNX model, and its params.

    The model is split once, here, into its graph definition, its `nnx.Param` state and the rest
    (buffers, RNG state: held fixed as constants). `apply` merges the graph definition with the
    params it is given inside the pure function, so nothing is mutated and the model passed in
    is left as it was; the params it returns are the model's parameters at this call.

    Args:
      model: a `flax.nnx.Module` (set it to inference mode first if it has dropout).
      vocab_size: V, the logits' last dimension.
      max_length: the longest sequence the model takes (None: unchecked).
      call: `call(model, tokens, positions, mask) -> logits float[B, S, V]`, model being the
        merged module. Default: `model(tokens, positions=positions, mask=mask)`.
      name: for messages (default: the model's class name).

    Returns:
      (lm, params): `lm.apply(params, tokens int32[B, S], positions int32[B, S],
      mask bool[B, S, S])` returns logits float32[B, S, V]; params is the `nnx.State` of the
      model's `nnx.Param`s, a pytree (jax.grad returns one of the same structure; write params
      back into a model with `nnx.update(model, params)`).
    """
    if not isinstance(model, nnx.Module):
        raise AdapterError(f"from_nnx takes a flax.nnx.Module, got {type(model).__name__}"
                           + (" (use from_linen for a linen module)" if isinstance(model, linen.Module) else ""))
    _check_fields(vocab_size, max_length, call)
    name = name or type(model).__name__
    fn = call or _nnx_call
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def apply(params, tokens, positions, mask):
        merged = nnx.merge(graphdef, params, rest, copy=True)
        return _checked_logits(fn(merged, tokens, positions, mask), tokens, vocab_size, name)

    return CausalLM(apply=apply, vocab_size=vocab_size, max_length=max_length, name=name), params
