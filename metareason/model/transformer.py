"""The decoder-only transformer as one pure function, `apply(params, tokens, *, config, ...)`.

Pre-norm blocks (RMSNorm -> GQA attention with RoPE -> residual; RMSNorm -> SwiGLU MLP ->
residual), stacked on a leading layer axis and run with `lax.scan`, so compile time does not
grow with depth. Everything is a function of (params, inputs): `jax.jit`, `jax.grad` (nested),
`jax.vmap`, `jax.pmap` and sharded `jit` all apply.

Axes: B batch, S new tokens, T key/value length (S without a cache, the cache's slots with
one), D hidden, H query heads, K key/value heads, G = H // K, Dh head dim, V vocab, L layers.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from metareason.model.axes import (HIDDEN_AXES, K_CACHE_AXES, LOGITS_AXES, MLP_AXES, QUERY_AXES, V_CACHE_AXES,
                                   constrain)
from metareason.model.cache import KVCache, init_cache
from metareason.model.config import ModelConfig
from metareason.model.params import check_params
from metareason.model.rope import apply_rope, inverse_frequencies

__all__ = ["apply", "hidden_states", "output_logits", "prefill_causal", "ModelOutput", "InputError",
           "segment_positions", "rms_norm", "attention_block", "mlp", "mlp_activations"]


class InputError(ValueError):
    """Malformed model inputs (one line, names the argument)."""


class ModelOutput(NamedTuple):
    """logits: float32[B, S, V] (float64 when computing in float64); cache: the updated `KVCache` (None when none was passed);
    intermediates: None, or a dict of per-layer activations, each [L, B, S, D]:
      "residual": the residual stream entering the layer,
      "attn_out": the attention block's output (after o_proj, before the residual add),
      "mlp_in":   the normalised input of the MLP (what gate_proj / up_proj multiply),
      "mlp_out":  the MLP's output (before the residual add),
    and "final_hidden": [B, S, D], the normalised stream the output head reads."""

    logits: jax.Array
    cache: KVCache | None = None
    intermediates: dict[str, jax.Array] | None = None


_REMAT = {
    "full": None,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def _acc(dtype) -> jnp.dtype:
    """Accumulation dtype: float32, or float64 for float64 computation."""
    return jnp.promote_types(dtype, jnp.float32)


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """RMSNorm as Hugging Face computes it: normalise in float32, cast back, then scale."""
    xf = x.astype(_acc(x.dtype))
    xf = xf * lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return scale.astype(x.dtype) * xf.astype(x.dtype)


def segment_positions(segment_ids: jax.Array) -> jax.Array:
    """int32[B, S]: each token's index within its (contiguous) segment."""
    idx = jnp.arange(segment_ids.shape[-1], dtype=jnp.int32)
    starts = jnp.concatenate(
        [jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
    start_idx = lax.cummax(jnp.where(starts, idx, 0), axis=1)
    return idx - start_idx


def _attention(q, k, v, mask, compute_dtype, impl, chunk=512, k_slots_last=False):
    """q: [B, S, H, Dh]; k: [B, K, T, Dh], or [B, K, Dh, T] when `k_slots_last` (the cache's
    layout); v: [B, K, T, Dh]; mask: bool[B, S, T], or None for plain causal attention (S == T)
    -> [B, S, H, Dh].

    impl "xla": scores and softmax in float32 (float64 for float64); a query that sees no key
    gets a uniform average, not NaN. impl "chunked": the same, `chunk` queries at a time under
    `jax.checkpoint`, so neither pass holds more than [B, H, chunk, T] scores. impl "cudnn":
    `jax.nn.dot_product_attention`'s fused cuDNN kernel (GPU, bf16/fp16), for speed at scale.
    impl "pallas": `metareason.model.attention.pallas_attention` (flash attention skipping the
    key blocks the mask leaves empty; interpret mode on the CPU). impl "splash": JAX's TPU splash
    attention (`attention.splash_attention`). impl "auto": one of these per backend
    (`attention.resolve_impl`: "xla" on the CPU)."""
    B, S, H, Dh = q.shape
    if impl in ("auto", "pallas", "splash"):
        from metareason.model import attention as kernels
        impl = kernels.resolve_impl(impl, mask is None, compute_dtype)
        if impl == "pallas":
            return kernels.pallas_attention(q, k, v, mask, k_slots_last=k_slots_last)
        if impl == "splash":
            return kernels.splash_attention(q, k, v, mask, k_slots_last=k_slots_last)
    if impl == "chunked" and S > chunk:
        return _chunked_attention(q, k, v, mask, compute_dtype, chunk, k_slots_last)
    if impl == "cudnn":
        m = None if mask is None else mask[:, None]
        k, v = k.transpose(0, 3, 1, 2) if k_slots_last else k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
        return jax.nn.dot_product_attention(q, k, v, mask=m, is_causal=mask is None, implementation="cudnn")
    K, T = v.shape[1], v.shape[2]
    if mask is None:
        mask = jnp.tril(jnp.ones((S, T), bool))[None]
    acc = _acc(compute_dtype)
    G = H // K
    # queries of one kv head merged into one matrix: [B, K, G*S, Dh] x [B, K, T, Dh] is a plain
    # batched matmul (XLA's CPU backend runs the 5-D einsum of the same product ~2x slower)
    q = q.reshape(B, S, K, G, Dh).transpose(0, 2, 3, 1, 4).reshape(B, K, G * S, Dh)
    # (with the slots last, a decode step's scores are a plain [G, Dh] x [Dh, T] matmul per kv head;
    # XLA:CPU runs the [T, Dh]-transposed form about 2x slower)
    spec = "bkqd,bkdt->bkqt" if k_slots_last else "bkqd,bktd->bkqt"
    scores = einsum_acc(spec, q, k).reshape(B, K, G, S, T)
    scores = jnp.where(mask[:, None, None], scores * (Dh ** -0.5), jnp.finfo(acc).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(compute_dtype).reshape(B, K, G * S, T)
    out = einsum_acc("bkqt,bktd->bkqd", probs, v)
    return out.astype(compute_dtype).reshape(B, K, G, S, Dh).transpose(0, 3, 1, 2, 4).reshape(B, S, H, Dh)


def _chunked_attention(q, k, v, mask, compute_dtype, chunk, k_slots_last=False):
    """`_attention` one block of `chunk` queries at a time (S padded to a multiple of it)."""
    B, S, H, Dh = q.shape
    T = v.shape[2]
    n = -(-S // chunk)
    pad = n * chunk - S
    if mask is None:  # plain causal: query s sees keys t <= s (S == T)
        mask = jnp.broadcast_to(jnp.tril(jnp.ones((S, T), bool))[None], (B, S, T))
    q = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0))).reshape(B, n, chunk, H, Dh)
    mask = jnp.pad(mask, ((0, 0), (0, pad), (0, 0))).reshape(B, n, chunk, T)

    @jax.checkpoint
    def block(qm):
        qc, mc = qm
        return _attention(qc, k, v, mc, compute_dtype, "xla", k_slots_last=k_slots_last)

    out = lax.map(block, (q.swapaxes(0, 1), mask.swapaxes(0, 1)))  # [n, B, chunk, H, Dh]
    return out.swapaxes(0, 1).reshape(B, n * chunk, H, Dh)[:, :S]


def einsum_acc(spec: str, x: jax.Array, w: jax.Array) -> jax.Array:
    """`jnp.einsum(spec, x, w)` of two operands of one dtype, accumulated and returned in
    `_acc(x.dtype)` (float32 for bf16).

    Its gradient takes the cotangent back to x's dtype before the two backward matmuls (which
    still accumulate in float32), as a bf16 framework's backward does. Without that, the float32
    cotangent of the float32 result would make XLA run both backward matmuls in float32 (TF32 on
    GPUs): an H200 spent about half of a Qwen2-1.5B SFT step in them. Forward-mode tangents are
    computed the same way (in x's dtype, then widened). For float32 / float64 operands this is a
    plain einsum."""
    if jnp.dtype(x.dtype) == _acc(x.dtype):
        return jnp.einsum(spec, x, w, preferred_element_type=_acc(x.dtype))
    return _einsum_low_grad(spec, x, w)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _einsum_low_grad(spec, x, w):
    return jnp.einsum(spec, x, w, preferred_element_type=_acc(x.dtype))


@_einsum_low_grad.defjvp
def _einsum_low_grad_jvp(spec, primals, tangents):
    # a JVP rule (not a VJP), so forward mode (jax.jvp, forward-over-reverse Hessian products)
    # still works; reverse mode transposes it: each `astype` casts the cotangent to x's dtype, and
    # the einsums' transposes then run in that dtype (XLA accumulates them in float32)
    x, w = primals
    dx, dw = tangents
    acc = _acc(x.dtype)
    return _einsum_low_grad(spec, x, w), jnp.einsum(spec, dx, w).astype(acc) + jnp.einsum(spec, x, dw).astype(acc)


def _dense(x, p, spec):
    """Einsum with an optional bias, accumulating in float32, result in x's dtype."""
    acc = _acc(x.dtype)
    y = einsum_acc(spec, x, p["kernel"].astype(x.dtype))
    if "bias" in p:
        y = y + p["bias"].astype(acc)
    return y.astype(x.dtype)


def mlp_activations(m: jax.Array, mlp_params: dict[str, Any]) -> jax.Array:
    """The SwiGLU hidden activations silu(m W_gate) * (m W_up): [..., D] -> [..., F]."""
    gate = _dense(m, mlp_params["gate_proj"], "...d,df->...f")
    up = _dense(m, mlp_params["up_proj"], "...d,df->...f")
    act = jax.nn.silu(gate) * up
    return constrain(act, MLP_AXES) if act.ndim == 3 else act


def mlp(m: jax.Array, mlp_params: dict[str, Any]) -> jax.Array:
    """A block's MLP on its normalised input m: [..., D] -> [..., D] (no residual)."""
    return _dense(mlp_activations(m, mlp_params), mlp_params["down_proj"], "...f,fd->...d")


def attention_block(config: ModelConfig, inv_freq, h, layer, kv=None, positions=None, mask=None, write_index=None):
    """The first half of a block: h: [B, S, D] -> (mid = h + attention output [B, S, D],
    attention output [B, S, D], new kv). layer: one layer's params (compute dtype); kv: None or
    this layer's cache (k [B, K, Dh, T], v [B, K, T, Dh]: keys keep their slots last, see
    `KVCache`), or (k, v, i): every layer's cache (k [L, B, K, Dh, T], v [L, B, K, T, Dh]) and
    this layer's index, updated in place (returned as (k, v)); mask None = causal."""
    eps = config.rms_norm_eps
    attn = layer["self_attn"]
    x = rms_norm(h, layer["input_layernorm"]["scale"], eps)
    q = _dense(x, attn["q_proj"], "bsd,dhe->bshe")
    k = _dense(x, attn["k_proj"], "bsd,dhe->bshe")
    v = _dense(x, attn["v_proj"], "bsd,dhe->bshe")
    if config.qk_norm:
        q = rms_norm(q, attn["q_norm"]["scale"], eps)
        k = rms_norm(k, attn["k_norm"]["scale"], eps)
    q = constrain(apply_rope(q, positions, inv_freq), QUERY_AXES)
    k = apply_rope(k, positions, inv_freq)
    # only the new tokens move: v [B, K, S, Dh]; k the same without a cache, [B, K, Dh, S] with one
    v = constrain(v.transpose(0, 2, 1, 3), V_CACHE_AXES[1:])
    k = constrain(k.transpose(0, 2, 1, 3) if kv is None else k.transpose(0, 2, 3, 1),
                  V_CACHE_AXES[1:] if kv is None else K_CACHE_AXES[1:])
    if kv is not None and len(kv) == 3:  # every layer's cache (k [L, B, K, Dh, T], v) and this layer's index
        k_all, v_all, i = kv
        k_all = lax.dynamic_update_slice(k_all, k.astype(k_all.dtype)[None], (i, 0, 0, 0, write_index))
        v_all = lax.dynamic_update_slice(v_all, v.astype(v_all.dtype)[None], (i, 0, 0, write_index, 0))
        k_all, v_all = constrain(k_all, K_CACHE_AXES), constrain(v_all, V_CACHE_AXES)
        k, v, kv = k_all[i], v_all[i], (k_all, v_all)
    elif kv is not None:
        k = constrain(lax.dynamic_update_slice_in_dim(kv[0], k.astype(kv[0].dtype), write_index, axis=3),
                      K_CACHE_AXES[1:])
        v = constrain(lax.dynamic_update_slice_in_dim(kv[1], v.astype(kv[1].dtype), write_index, axis=2),
                      V_CACHE_AXES[1:])
        kv = (k, v)
    a = _attention(q, k.astype(q.dtype), v.astype(q.dtype), mask, h.dtype, config.attention_impl,
                   config.attention_chunk, k_slots_last=kv is not None)
    attn_out = _dense(a, attn["o_proj"], "bshe,hed->bsd")
    return h + attn_out, attn_out, kv


def _layer(config: ModelConfig, inv_freq, h, layer, kv, positions, mask, write_index):
    """One block. h: [B, S, D]; layer: one layer's params (compute dtype); kv: None or the cache
    as `attention_block` takes it. Returns (h, new_kv, intermediates)."""
    h = constrain(h, HIDDEN_AXES)
    mid, attn_out, kv = attention_block(config, inv_freq, h, layer, kv, positions, mask, write_index)
    m = rms_norm(mid, layer["post_attention_layernorm"]["scale"], config.rms_norm_eps)
    mlp_out = mlp(m, layer["mlp"])
    inter = {"residual": h, "attn_out": attn_out, "mlp_in": m, "mlp_out": mlp_out}
    return mid + mlp_out, kv, inter


def _masks_and_positions(config, tokens, positions, mask, segment_ids, cache):
    """Resolves defaults: the boolean mask [B, S, T] (None: plain causal), positions [B, S] and
    the cache's new segment ids, from whichever of positions / mask / segment_ids / cache were given."""
    B, S = tokens.shape
    if cache is None and mask is None and segment_ids is None:
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32), (B, S))
        return None, positions, None
    if segment_ids is None:
        segment_ids = jnp.ones((B, S), jnp.int32)
    segment_ids = jnp.asarray(segment_ids, jnp.int32)
    if cache is None:
        if positions is None:
            positions = segment_positions(segment_ids)
        if mask is None:
            causal = jnp.tril(jnp.ones((S, S), bool))
            mask = causal[None] & (segment_ids[:, :, None] == segment_ids[:, None, :])
        return mask, positions, None
    T = cache.max_length
    kv_segments = lax.dynamic_update_slice_in_dim(cache.segment_ids, segment_ids, cache.index, axis=1)
    q_slots = cache.index + jnp.arange(S, dtype=jnp.int32)
    if positions is None:
        positions = jnp.broadcast_to(q_slots, (B, S))
    if mask is None:
        causal = jnp.arange(T, dtype=jnp.int32)[None, :] <= q_slots[:, None]  # [S, T]
        mask = causal[None] & (segment_ids[:, :, None] == kv_segments[:, None, :])
    return mask, positions, kv_segments


def _validate(config, params, tokens, positions, mask, segment_ids, cache):
    """Shape, dtype and (for concrete tokens) range checks; runs at trace time, before compiling."""
    check_params(config, params)
    if getattr(tokens, "ndim", None) != 2:
        raise InputError(f"tokens must be int[batch, seq], got shape {np.shape(tokens)}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise InputError(f"tokens must be integers, got dtype {tokens.dtype}")
    B, S = tokens.shape
    if not isinstance(tokens, jax.core.Tracer):
        t = np.asarray(tokens)
        if t.size and (t.min() < 0 or t.max() >= config.vocab_size):
            bad = t[(t < 0) | (t >= config.vocab_size)][0]
            raise InputError(f"token id {int(bad)} out of range [0, {config.vocab_size})")
    T = S if cache is None else cache.max_length
    for name, value, shape in (("positions", positions, (B, S)), ("segment_ids", segment_ids, (B, S)),
                               ("mask", mask, (B, S, T))):
        if value is not None and tuple(np.shape(value)) != shape:
            raise InputError(f"{name} has shape {tuple(np.shape(value))}, expected {shape}")
    if mask is not None and segment_ids is not None and cache is None:
        raise InputError("pass either mask or segment_ids, not both (a mask already says who sees whom)")
    if cache is not None:
        L, K, Dh = config.num_layers, config.num_kv_heads, config.head_dim
        for name, arrays, shape in (("k", cache.k, (B, K, Dh, T)), ("v", cache.v, (B, K, T, Dh))):
            if cache.per_layer:
                got = sorted({tuple(np.shape(t)) for t in arrays})
                if len(arrays) != L or got != [shape]:
                    raise InputError(f"per-layer cache.{name} has {len(arrays)} arrays of shapes {got}, "
                                     f"expected {L} of {shape}")
            elif tuple(np.shape(arrays)) != (L, *shape):
                raise InputError(f"cache.{name} has shape {tuple(np.shape(arrays))}, expected {(L, *shape)}")
        if not isinstance(cache.index, jax.core.Tracer) and int(cache.index) + S > T:
            raise InputError(f"cache overflow: {int(cache.index)} cached + {S} new tokens > {T} slots")


def apply(params: dict[str, Any], tokens: jax.Array, *, config: ModelConfig,
          positions: jax.Array | None = None, mask: jax.Array | None = None,
          segment_ids: jax.Array | None = None, cache: KVCache | None = None,
          return_intermediates: bool = False) -> ModelOutput:
    """Runs the model on `tokens`.

    Args:
      params: the params pytree (`metareason.model.init`, or imported from Hugging Face).
      tokens: int[B, S] token ids in [0, V).
      config: the `ModelConfig` (static).
      positions: int[B, S] RoPE positions. Default: index within the segment (no cache), or
        the cache slot the token is written to (with a cache).
      mask: bool[B, S, T], True where query s may attend key t (t indexes the S tokens
        themselves without a cache, the cache's slots with one). Used as given: it replaces
        the causal + segment rule. Together with explicit `positions` this expresses any
        prefix-sharing layout (e.g. probes that each see a different prefix).
      segment_ids: int[B, S] for packed sequences: a token attends only earlier tokens with
        the same id (0 marks padding). With a cache, stored in the cache for later tokens.
      cache: a `KVCache`; the new keys/values are written at `cache.index`.
      return_intermediates: also return per-layer activations (see `ModelOutput`).

    Returns:
      `ModelOutput(logits float32[B, S, V], cache, intermediates)`.
    """
    tokens = jnp.asarray(tokens) if not isinstance(tokens, jax.Array) else tokens
    _validate(config, params, tokens, positions, mask, segment_ids, cache)
    return _apply_jit(params, tokens, positions, mask, segment_ids, cache,
                      config=config, return_intermediates=return_intermediates)


def hidden_states(params: dict[str, Any], tokens: jax.Array, *, config: ModelConfig,
                  positions: jax.Array | None = None, mask: jax.Array | None = None,
                  segment_ids: jax.Array | None = None,
                  cache: KVCache | None = None) -> tuple[jax.Array, KVCache | None]:
    """Like `apply`, but returns the normalised final hidden states [B, S, D] (what the output
    head reads) and the cache, without computing logits: for callers that need logits at a few
    positions only (`output_logits` on a gather), where [B, S, V] would not fit."""
    tokens = jnp.asarray(tokens) if not isinstance(tokens, jax.Array) else tokens
    _validate(config, params, tokens, positions, mask, segment_ids, cache)
    return _hidden_jit(params, tokens, positions, mask, segment_ids, cache, config=config)


def output_logits(params: dict[str, Any], hidden: jax.Array, *, config: ModelConfig) -> jax.Array:
    """The output head: hidden [..., D] (from `hidden_states`) -> logits float32[..., V]."""
    cdt = jnp.dtype(config.compute_dtype)
    h = hidden.astype(cdt)
    if config.tie_word_embeddings:
        return einsum_acc("...d,vd->...v", h, params["embed_tokens"]["embedding"].astype(cdt))
    return einsum_acc("...d,dv->...v", h, params["lm_head"]["kernel"].astype(cdt))


def prefill_causal(params: dict[str, Any], tokens: jax.Array, lengths: jax.Array, *, config: ModelConfig,
                   max_length: int) -> KVCache:
    """The KV cache of right-padded prompts in one plain causal pass (mask None): the path every
    fused kernel takes without building an [S, T] mask (`attention_impl` "cudnn" via `is_causal`,
    "pallas" stopping at the diagonal, "splash" with its static causal mask).

    Args:
      tokens: int[B, N], each row's prompt first, then padding.
      lengths: int[B], each row's real tokens (<= N).
      max_length: the cache's slots T >= N (the slots after N are left for later tokens).

    Returns:
      A stacked `KVCache` of T slots at index N: k [L, B, K, Dh, T], v [L, B, K, T, Dh] hold the
      prompts' keys/values in slots [0, N); segment ids 1 on each row's first lengths[b] slots,
      0 elsewhere, so later tokens never read a padded slot. Exact for the real tokens: with the
      padding at the end, a causal query t < lengths[b] never sees a padded key. (`apply` with a
      cache builds a dense [B, N, T] mask, since S != T there; this runs each layer over a cache
      of exactly N slots, S == T, and copies it into the first N slots.)"""
    B, N = np.shape(tokens)
    if max_length < N:
        raise InputError(f"max_length {max_length} is below the {N} prompt tokens")
    if np.shape(lengths) != (B,):
        raise InputError(f"lengths has shape {np.shape(lengths)}, expected ({B},)")
    return _prefill_jit(params, jnp.asarray(tokens), jnp.asarray(lengths), config=config, max_length=max_length)


@functools.partial(jax.jit, static_argnames=("config", "max_length"))
def _prefill_jit(params, tokens, lengths, *, config, max_length):
    B, N = tokens.shape
    K, Dh = config.num_kv_heads, config.head_dim
    cdt = jnp.dtype(config.compute_dtype)
    cache = init_cache(config, B, max_length)
    positions = jnp.broadcast_to(jnp.arange(N, dtype=jnp.int32), (B, N))
    inv_freq = inverse_frequencies(config)
    layers = jax.tree.map(lambda p: p.astype(cdt), params["layers"])
    split = isinstance(layers, (tuple, list))
    h = constrain(params["embed_tokens"]["embedding"], (None, None))[tokens].astype(cdt)
    k_all, v_all = cache.k, cache.v
    for i in range(config.num_layers):
        layer = layers[i] if split else jax.tree.map(lambda p: p[i], layers)
        kv = (jnp.zeros((B, K, Dh, N), k_all.dtype), jnp.zeros((B, K, N, Dh), v_all.dtype))
        h, (k, v), _ = _layer(config, inv_freq, h, layer, kv, positions, None, 0)
        k_all = lax.dynamic_update_slice(k_all, k.astype(k_all.dtype)[None], (i, 0, 0, 0, 0))
        v_all = lax.dynamic_update_slice(v_all, v.astype(v_all.dtype)[None], (i, 0, 0, 0, 0))
        k_all, v_all = constrain(k_all, K_CACHE_AXES), constrain(v_all, V_CACHE_AXES)
    seg = (jnp.arange(max_length)[None] < lengths[:, None]).astype(jnp.int32)
    return KVCache(k=k_all, v=v_all, segment_ids=seg, index=jnp.asarray(N, jnp.int32))


def _trunk(params, tokens, positions, mask, segment_ids, cache, *, config, return_intermediates):
    """Everything but the output head: (final normalised hidden [B, S, D], new cache, intermediates)."""
    cdt = jnp.dtype(config.compute_dtype)
    mask, positions, kv_segments = _masks_and_positions(config, tokens, positions, mask, segment_ids, cache)
    positions = jnp.asarray(positions, jnp.int32)
    inv_freq = inverse_frequencies(config)
    write_index = None if cache is None else cache.index
    layers = jax.tree.map(lambda p: p.astype(cdt), params["layers"])
    split = isinstance(layers, (tuple, list))

    def body(h, xs):
        layer, kv = xs
        h, kv, inter = _layer(config, inv_freq, h, layer, kv, positions, mask, write_index)
        return h, (kv, inter if return_intermediates else None)

    if config.remat != "none":
        body = jax.checkpoint(body, policy=_REMAT[config.remat], prevent_cse=False)

    # the lookup reads a replicated table: a gather from a table split on the mesh would be
    # resharded in full by the partitioner anyway (on one device this is the identity)
    h = constrain(params["embed_tokens"]["embedding"], (None, None))[tokens].astype(cdt)
    if cache is None:
        if split:
            layers = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
        h, (_, inter) = lax.scan(body, h, (layers, None), unroll=min(config.scan_unroll, config.num_layers))
        new_cache = None
    else:
        # With a cache the layers are unrolled and each layer writes only its new tokens'
        # keys/values, in place. A stacked cache (or stacked weights) is read through a slice
        # per layer, which XLA:CPU copies out; the per-layer layouts are read as they are.
        # (Through a scan the whole cache would be sliced out and restacked at every step.)
        inters, ks, vs = [], [], []
        kv_all = None if cache.per_layer else (cache.k, cache.v)
        for i in range(config.num_layers):
            layer = layers[i] if split else jax.tree.map(lambda p: p[i], layers)
            kv = (cache.k[i], cache.v[i]) if kv_all is None else (*kv_all, i)
            h, kv, one = _layer(config, inv_freq, h, layer, kv, positions, mask, write_index)
            if kv_all is None:
                ks.append(kv[0])
                vs.append(kv[1])
            else:
                kv_all = kv
            inters.append(one)
        inter = jax.tree.map(lambda *xs: jnp.stack(xs), *inters) if return_intermediates else None
        k_new, v_new = (tuple(ks), tuple(vs)) if kv_all is None else kv_all
        new_cache = KVCache(k=k_new, v=v_new, segment_ids=kv_segments, index=cache.index + tokens.shape[1])
    h = rms_norm(h, params["norm"]["scale"], config.rms_norm_eps)
    return h, new_cache, inter


@functools.partial(jax.jit, static_argnames=("config",))
def _hidden_jit(params, tokens, positions, mask, segment_ids, cache, *, config):
    h, new_cache, _ = _trunk(params, tokens, positions, mask, segment_ids, cache, config=config,
                             return_intermediates=False)
    return h, new_cache


@functools.partial(jax.jit, static_argnames=("config", "return_intermediates"))
def _apply_jit(params, tokens, positions, mask, segment_ids, cache, *, config, return_intermediates):
    h, new_cache, inter = _trunk(params, tokens, positions, mask, segment_ids, cache, config=config,
                                 return_intermediates=return_intermediates)
    logits = constrain(output_logits(params, h, config=config), LOGITS_AXES)
    if return_intermediates:
        inter = dict(inter, final_hidden=h)
    return ModelOutput(logits=logits, cache=new_cache, intermediates=inter)
