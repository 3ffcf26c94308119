"""The answer loss after trajectory prefixes (the paper's probe L-hat, Algorithm 3), exactly and
in one pass.

For a question, `context` is the prompt followed by the trajectory; a cut `c` is a prefix length
into `context`; the probe (the answer template followed by the answer) is appended after
`context[:c]`, and the loss is the negative log-likelihood of the probe's target tokens (the
answer). The official notebook runs one forward pass per cut. Here:

- `method="packed"`: one pass over [context | probe_1 .. probe_m] with a block mask in which
  probe j sees `context[:c_j]` and itself causally, positions continuing from c_j;
- `method="cache"`: the context's key/value cache is computed once (in one plain causal pass,
  the fused kernels' fast path, or in chunks through the masked cache path), then the probes are
  batched against it, each masked to its own prefix (a block mask, which `attention_impl`
  "pallas" / "splash" / "auto" run through their mask-aware kernels).

Both are chunked over cuts (`cut_chunk` probes per pass) so memory stays bounded, batched over
questions, and jit-compiled; `answer_loss_per_prefix` is the slow per-prefix reference.
`answer_nll` is the traceable core (no validation, no padding: jit, grad and vmap apply), which
the inner loops' answer loss (`metareason.inner.answer_loss`, one cut) calls too.

Any model: `config=` is our `ModelConfig` or a `metareason.model.CausalLM` (the protocol). A
CausalLM wrapping our transformer (`.config` set) keeps the fast paths; any other computes the
packed pass with its own `apply(params, tokens, positions, mask)` ("cache" needs our KV cache).

Axes: B questions, N context tokens (padded), M cuts (padded), A probe tokens (padded),
Mc cuts per chunk, V vocab.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from metareason.model import KVCache, ModelConfig, apply, hidden_states, init_cache, output_logits, prefill_causal
from metareason.model.protocol import CausalLM, as_causal_lm, causal_mask

__all__ = ["ProbeBatch", "AnswerLoss", "ProbeError", "METHODS", "answer_loss_along_trajectory",
           "answer_loss_per_prefix", "answer_nll", "model_logits"]

METHODS = ("packed", "cache")


class ProbeError(ValueError):
    """Malformed probe inputs (one line, names what is wrong)."""


class ProbeBatch(NamedTuple):
    """What to probe, for B questions.

    context: int[B, N] prompt + trajectory tokens, right-padded (padding is never attended).
    context_lengths: int[B] real tokens per row.
    cuts: int[B, M] prefix lengths into `context` after which the probe is appended, each in
      [1, context_length]; -1 marks an unused slot (rows with fewer cuts).
    probe: int[B, A] the answer template then the answer (then anything else), right-padded.
    targets: bool[B, A] which probe tokens are scored (the answer); the first probe token
      cannot be one (its logit would come from the context)."""

    context: Any
    context_lengths: Any
    cuts: Any
    probe: Any
    targets: Any


class AnswerLoss(NamedTuple):
    """per_token: float32[B, M, A] NLL of each scored probe token (0 elsewhere);
    total: float32[B, M] summed over the scored tokens; mean: float32[B, M] averaged over them
    (the paper's L-hat); valid: bool[B, M] False for unused cut slots (their values are 0)."""

    per_token: jax.Array
    total: jax.Array
    mean: jax.Array
    valid: jax.Array


def model_logits(model: ModelConfig | CausalLM, params: Any, tokens: jax.Array, positions: jax.Array | None = None,
                 mask: jax.Array | None = None) -> jax.Array:
    """logits float32[B, S, V] of tokens int[B, S] under any model (positions default to 0..S-1,
    the mask to causal; our transformer takes its causal fast path when both are None)."""
    lm = as_causal_lm(model)
    if lm.config is not None:
        return apply(params, tokens, config=lm.config, positions=positions, mask=mask).logits
    tokens = jnp.asarray(tokens)
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[-1], dtype=jnp.int32), tokens.shape)
    if mask is None:
        mask = causal_mask(tokens)
    return lm.apply(params, tokens, positions, mask).astype(jnp.float32)


def _check(batch: ProbeBatch, lm: CausalLM) -> ProbeBatch:
    """numpy copies of the batch, validated (one-line errors naming the field)."""
    ctx, lens = np.asarray(batch.context), np.asarray(batch.context_lengths)
    cuts, probe, targets = np.asarray(batch.cuts), np.asarray(batch.probe), np.asarray(batch.targets, bool)
    if ctx.ndim != 2 or probe.ndim != 2 or cuts.ndim != 2:
        raise ProbeError(f"context, cuts and probe must be 2-D [B, ...], got shapes {ctx.shape}, {cuts.shape}, "
                         f"{probe.shape}")
    B = ctx.shape[0]
    for name, arr, shape in (("context_lengths", lens, (B,)), ("cuts", cuts, (B, cuts.shape[1])),
                             ("probe", probe, (B, probe.shape[1])), ("targets", targets, probe.shape)):
        if arr.shape != shape:
            raise ProbeError(f"{name} has shape {arr.shape}, expected {shape}")
    if ((ctx < 0) | (ctx >= lm.vocab_size)).any() or ((probe < 0) | (probe >= lm.vocab_size)).any():
        raise ProbeError(f"token ids must lie in [0, {lm.vocab_size})")
    if ((lens < 1) | (lens > ctx.shape[1])).any():
        raise ProbeError(f"context_lengths must lie in [1, {ctx.shape[1]}], got {lens.tolist()}")
    if targets[:, 0].any():
        raise ProbeError("the first probe token cannot be a target: start the probe with the answer template")
    if not targets.any(axis=1).all():
        row = int(np.flatnonzero(~targets.any(axis=1))[0])
        raise ProbeError(f"question {row} has no target tokens (an answer that tokenizes to nothing?)")
    used = cuts != -1
    bad = used & ((cuts < 1) | (cuts > lens[:, None]))
    if bad.any():
        b, m = map(int, np.argwhere(bad)[0])
        raise ProbeError(f"cut {int(cuts[b, m])} (question {b}, slot {m}) is out of range [1, {int(lens[b])}] "
                         "(or -1 for an unused slot)")
    longest = int(lens.max()) + probe.shape[1]
    if lm.max_length is not None and longest > lm.max_length:
        raise ProbeError(f"context + probe is {longest} tokens, longer than the model's context ({lm.max_length})")
    return ProbeBatch(ctx.astype(np.int32), lens.astype(np.int32), cuts.astype(np.int32), probe.astype(np.int32),
                      targets)


def _pad_cuts(cuts: np.ndarray, chunk: int) -> np.ndarray:
    """[B, M] -> [B, ceil(M / chunk) * chunk], new slots -1."""
    M = cuts.shape[1]
    pad = -M % chunk
    return np.pad(cuts, ((0, 0), (0, pad)), constant_values=-1)


def _probe_rows(cuts, probe, n_context_keys):
    """Tokens, positions and the mask rows of one chunk of probes.

    cuts: int[B, Mc] (-1 unused: treated as cut 1 and dropped later); probe: int[B, A].
    Returns tokens int[B, Mc*A], positions int[B, Mc*A] (c_j + a) and mask
    bool[B, Mc*A, n_context_keys + Mc*A]: probe j's token a sees context keys t < c_j and its own
    probe tokens up to a."""
    B, Mc = cuts.shape
    A = probe.shape[1]
    c = jnp.maximum(cuts, 1)
    a = jnp.arange(A)
    tokens = jnp.broadcast_to(probe[:, None, :], (B, Mc, A)).reshape(B, Mc * A)
    positions = (c[:, :, None] + a).reshape(B, Mc * A)
    ctx_keys = jnp.arange(n_context_keys)[None, None, None, :] < c[:, :, None, None]         # [B, Mc, 1, N]
    ctx_keys = jnp.broadcast_to(ctx_keys, (B, Mc, A, n_context_keys))
    same = jnp.eye(Mc, dtype=bool)[:, None, :, None] & (a[None, :, None, None] >= a[None, None, None, :])
    probe_keys = jnp.broadcast_to(same[None], (B, Mc, A, Mc, A)).reshape(B, Mc, A, Mc * A)
    mask = jnp.concatenate([ctx_keys, probe_keys], axis=-1).reshape(B, Mc * A, n_context_keys + Mc * A)
    return tokens, positions, mask


def _probe_nll(rows, probe, targets, head):
    """rows: [B, Mc*A, X] final hidden states (head: the output head) or logits (head: identity)
    at the probe tokens -> NLL float32[B, Mc, A] of each target token (0 elsewhere; logits at
    probe token a - 1 predict token a)."""
    B, A = probe.shape
    h = rows.reshape(B, -1, A, rows.shape[-1])[:, :, :-1]
    logp = jax.nn.log_softmax(head(h).astype(jnp.float32), axis=-1)                      # [B, Mc, A-1, V]
    nxt = jnp.broadcast_to(probe[:, None, 1:], logp.shape[:-1])
    nll = -jnp.take_along_axis(logp, nxt[..., None], axis=-1)[..., 0]
    nll = jnp.where(targets[:, None, 1:], nll, 0.0)
    return jnp.concatenate([jnp.zeros_like(nll[..., :1]), nll], axis=-1)


def _packed_chunk(params, context, context_lengths, cuts, probe, targets, *, lm):
    B, N = context.shape
    tokens, positions, probe_mask = _probe_rows(cuts, probe, N)
    t = jnp.arange(N)
    ctx_mask = (t[None, :, None] >= t[None, None, :]) & (t[None, None, :] < context_lengths[:, None, None])
    ctx_mask = jnp.concatenate([jnp.broadcast_to(ctx_mask, (B, N, N)),
                                jnp.zeros((B, N, tokens.shape[1]), bool)], axis=-1)
    mask = jnp.concatenate([ctx_mask, probe_mask], axis=1)
    all_tokens = jnp.concatenate([context, tokens], axis=1)
    all_positions = jnp.concatenate([jnp.broadcast_to(t, (B, N)), positions], axis=1)
    if lm.config is None:
        logits = lm.apply(params, all_tokens, all_positions, mask)
        return _probe_nll(logits[:, N:], probe, targets, lambda x: x)
    h, _ = hidden_states(params, all_tokens, config=lm.config, positions=all_positions, mask=mask)
    return _probe_nll(h[:, N:], probe, targets, functools.partial(output_logits, params, config=lm.config))


def _prefill(params, context, context_lengths, *, config, extra_slots, context_chunk):
    """The context's KV cache ([N + extra_slots] slots, index N) of context int[B, N].

    One chunk (context_chunk == N): `_prefill_causal`, plain causal attention (the fast path).
    Several: `context_chunk` tokens at a time through the model's cache path, whose dense mask
    [B, context_chunk, N + extra_slots] bounds the "xla" path's scores to one chunk."""
    B, N = context.shape
    if context_chunk == N:
        return _prefill_causal(params, context, context_lengths, config=config, extra_slots=extra_slots)
    cache = init_cache(config, B, N + extra_slots)
    seg = (jnp.arange(N)[None] < context_lengths[:, None]).astype(jnp.int32)
    n_chunks = N // context_chunk
    xs = (context.reshape(B, n_chunks, context_chunk).swapaxes(0, 1),
          seg.reshape(B, n_chunks, context_chunk).swapaxes(0, 1))

    def body(cache, x):
        tok, s = x
        _, cache = hidden_states(params, tok, config=config, segment_ids=s, cache=cache)
        return cache, None

    cache, _ = lax.scan(body, cache, xs)
    return cache


def _prefill_causal(params, context, context_lengths, *, config, extra_slots):
    """The context's KV cache in one plain causal pass (`metareason.model.prefill_causal`), with
    `extra_slots` slots after it for the probes. context int[B, N] right-padded. Exact for the real
    tokens: the probe rows only read keys t < cut <= length."""
    return prefill_causal(params, context, context_lengths, config=config, max_length=context.shape[1] + extra_slots)


def _cache_chunk(params, cache: KVCache, cuts, probe, targets, *, config):
    n_context = cache.max_length - cuts.shape[1] * probe.shape[1]  # the probes take the slots after it
    tokens, positions, mask = _probe_rows(cuts, probe, n_context)
    h, _ = hidden_states(params, tokens, config=config, positions=positions, mask=mask, cache=cache)
    return _probe_nll(h, probe, targets, functools.partial(output_logits, params, config=config))


def answer_nll(params: Any, batch: ProbeBatch, *, config: ModelConfig | CausalLM, method: str = "packed",
               cut_chunk: int | None = None, context_chunk: int | None = None) -> AnswerLoss:
    """The traceable core of `answer_loss_along_trajectory`: the same `AnswerLoss`, with no
    validation and no padding, a pure function of jax arrays (jit, grad, vmap apply).

    batch: a `ProbeBatch` of valid arrays (see there); cut_chunk must divide M (None: M, one
    pass), and for "cache" context_chunk must divide N (None: N; N runs the
    prefill as one plain causal pass, `_prefill_causal`). The inner loops' answer loss
    is this with one question and one cut (`metareason.inner.answer_loss`)."""
    lm = as_causal_lm(config)
    context, context_lengths, cuts, probe, targets = (jnp.asarray(x) for x in batch)
    B, Mp = cuts.shape
    cut_chunk = Mp if cut_chunk is None else cut_chunk
    if Mp % cut_chunk:
        raise ProbeError(f"cut_chunk {cut_chunk} must divide the number of cut slots {Mp}")
    chunks = cuts.reshape(B, Mp // cut_chunk, cut_chunk).swapaxes(0, 1)                  # [n, B, Mc]
    if method == "packed":
        run = functools.partial(_packed_chunk, params, context, context_lengths, probe=probe, targets=targets, lm=lm)
    elif method == "cache":
        if lm.config is None:
            raise ProbeError(f"method='cache' needs our transformer's KV cache; use method='packed' for {lm.name}")
        context_chunk = context.shape[1] if context_chunk is None else context_chunk
        cache = _prefill(params, context, context_lengths, config=lm.config,
                         extra_slots=cut_chunk * probe.shape[1], context_chunk=context_chunk)
        run = functools.partial(_cache_chunk, params, cache, probe=probe, targets=targets, config=lm.config)
    else:
        raise ProbeError(f"unknown probe method {method!r} (known: {', '.join(METHODS)})")
    nll = lax.map(lambda c: run(cuts=c), chunks)                                          # [n, B, Mc, A]
    nll = nll.swapaxes(0, 1).reshape(B, Mp, probe.shape[1])
    valid = cuts != -1
    nll = jnp.where(valid[..., None], nll, 0.0)
    total = nll.sum(-1)
    mean = total / targets.sum(-1, keepdims=True)
    return AnswerLoss(per_token=nll, total=total, mean=jnp.where(valid, mean, 0.0), valid=valid)


_loss_jit = jax.jit(answer_nll, static_argnames=("config", "method", "cut_chunk", "context_chunk"))


def answer_loss_along_trajectory(params: Any, batch: ProbeBatch, *, config: ModelConfig | CausalLM,
                                 method: str = "cache", cut_chunk: int = 16,
                                 context_chunk: int | None = None) -> AnswerLoss:
    """The answer's NLL after every cut of every question, exactly, without one pass per cut.

    Args:
      params, config: the model: our `ModelConfig`, or any `CausalLM` (one without `.config`
        takes method="packed").
      batch: a `ProbeBatch` (see there; `metareason.probe.inputs` builds them from text).
      method: "cache" (prefill the context's KV cache once, then `cut_chunk` probes per pass
        against it) or "packed" (one pass over the context and `cut_chunk` probes per chunk).
      cut_chunk: probes per pass; memory grows with cut_chunk * A (and, packed, with N).
      context_chunk: tokens per prefill pass ("cache" only); N is padded to a multiple of it.
        A chunk covering the whole context prefills in one plain causal pass (mask None: the
        fused kernels' causal path, no [S, T] mask); smaller chunks go through the model's
        masked cache path (bounded "xla" scores). None: the whole context when
        `attention_impl` is (or "auto" resolves to) a fused kernel ("cudnn", "pallas",
        "splash"), else 512.

    Returns:
      `AnswerLoss` with per_token [B, M, A], total [B, M], mean [B, M], valid [B, M]
      (M as given, not padded).
    """
    if method not in METHODS:
        raise ProbeError(f"unknown probe method {method!r} (known: {', '.join(METHODS)})")
    if cut_chunk < 1 or (context_chunk is not None and context_chunk < 1):
        raise ProbeError(f"cut_chunk and context_chunk must be >= 1, got {cut_chunk}, {context_chunk}")
    lm = as_causal_lm(config)
    if method == "cache" and lm.config is None:
        raise ProbeError(f"method='cache' needs our transformer's KV cache; use method='packed' for {lm.name}")
    b = _check(batch, lm)
    M = b.cuts.shape[1]
    cut_chunk = min(cut_chunk, M)
    cuts = _pad_cuts(b.cuts, cut_chunk)
    context = b.context
    if method == "cache":
        if context_chunk is None:
            context_chunk = context.shape[1] if _fused_causal(lm.config) else 512
        context_chunk = min(context_chunk, context.shape[1])
        context = np.pad(context, ((0, 0), (0, -context.shape[1] % context_chunk)))
    out = _loss_jit(params, ProbeBatch(context, b.context_lengths, cuts, b.probe, b.targets), config=lm,
                    method=method, cut_chunk=cut_chunk, context_chunk=context_chunk)
    return AnswerLoss(*(x[:, :M] for x in out))


def _fused_causal(config: ModelConfig) -> bool:
    """Whether config's attention runs plain causal attention through a fused kernel here."""
    from metareason.model.attention import resolve_impl
    return resolve_impl(config.attention_impl, True, config.compute_dtype) in ("cudnn", "pallas", "splash")


def answer_loss_per_prefix(params: Any, batch: ProbeBatch, *, config: ModelConfig | CausalLM) -> AnswerLoss:
    """The slow reference (the official notebook's method): one forward pass of
    `context[:c] + probe` per cut, with a plain causal mask. Each pass is right-padded to a fixed
    length so it compiles once (padding after a causal sequence changes nothing before it)."""
    lm = as_causal_lm(config)
    b = _check(batch, lm)
    B, M = b.cuts.shape
    A = b.probe.shape[1]
    L = int(b.context_lengths.max()) + A
    forward = jax.jit(lambda p, t: jax.nn.log_softmax(model_logits(lm, p, t), -1))
    per_token = np.zeros((B, M, A), np.float32)
    for i in range(B):
        for m in range(M):
            c = int(b.cuts[i, m])
            if c == -1:
                continue
            seq = np.zeros((1, L), np.int32)
            seq[0, :c + A] = np.concatenate([b.context[i, :c], b.probe[i]])
            logp = np.asarray(forward(params, seq))[0]
            for a in range(1, A):
                if b.targets[i, a]:
                    per_token[i, m, a] = -logp[c + a - 1, b.probe[i, a]]
    valid = b.cuts != -1
    total = per_token.sum(-1)
    mean = np.where(valid, total / b.targets.sum(-1, keepdims=True), 0.0)
    return AnswerLoss(jnp.asarray(per_token), jnp.asarray(total), jnp.asarray(mean, jnp.float32), jnp.asarray(valid))
