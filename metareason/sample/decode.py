"""Batched decoding with the KV cache: one prefill, then one token per step in a `lax.while_loop`.

Prompts arrive right-padded ([B, P], row b's first `prompt_lengths[b]` tokens real). They are
left-aligned so that every prompt ends at cache slot P - 1: row b's pad slots [0, P - len_b)
get segment id 0 (no real token attends them) and its real tokens segment id 1 with positions
0 .. len_b - 1, so each row is computed exactly as if it were alone. Generated token i of row b
is written at slot P + i with position len_b + i. The loop stops as soon as every row has
finished (stop token or budget), or after `max_new_tokens` steps.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from metareason.model.cache import KVCache, init_cache
from metareason.model.config import ModelConfig
from metareason.model.params import check_params, split_layers
from metareason.model.transformer import apply
from metareason.sample.config import Forcing, SamplingConfig, SamplingError
from metareason.sample.filters import sample_token

__all__ = ["generate", "SampleOutput"]


class SampleOutput(NamedTuple):
    """The result of `generate` (N = sampling.max_new_tokens):

      tokens: int32[B, N], the generated tokens, `pad_id` after each row's end.
      lengths: int32[B], how many tokens each row generated (a final stop token counted).
      finished_by_stop: bool[B], whether the row ended by emitting a stop token.
      logprobs: float32[B, N], each generated token's log-probability under the distribution
        it was drawn from (after temperature, top-k and top-p; 0 for greedy); 0 after the end
        and for forced tokens.
      forced: bool[B, N], True where the token was forced (budget forcing), not sampled; RL code
        leaves these out of the policy loss.
    """

    tokens: jax.Array
    lengths: jax.Array
    finished_by_stop: jax.Array
    logprobs: jax.Array
    forced: jax.Array


class _State(NamedTuple):
    step: jax.Array        # int32[]: tokens generated so far (the next one's index)
    last: jax.Array        # int32[B]: the token just generated, fed to the model next
    cache: KVCache
    tokens: jax.Array      # int32[B, N]
    logprobs: jax.Array    # float32[B, N]
    lengths: jax.Array     # int32[B]
    done: jax.Array        # bool[B]
    stopped: jax.Array     # bool[B]
    forced: jax.Array      # bool[B, N]
    thinking: jax.Array    # bool[B]: neither emitted end_think nor been forced yet
    force_pos: jax.Array   # int32[B]: next forced token's index (-1: not started; F: done)


def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _as_int_array(name: str, value, shape: tuple[int, ...] | None, ndim: int):
    """Returns `value` as an array (host numpy when concrete), checking rank, shape and dtype."""
    if not isinstance(value, (jax.Array, np.ndarray)):
        try:
            value = np.asarray(value)
        except Exception as e:  # ragged lists and the like
            raise SamplingError(f"{name} must be an int array, got {type(value).__name__} ({e})") from None
    if value.ndim != ndim:
        raise SamplingError(f"{name} must have {ndim} dimension(s), got shape {tuple(value.shape)}")
    if shape is not None and tuple(value.shape) != shape:
        raise SamplingError(f"{name} has shape {tuple(value.shape)}, expected {shape}")
    if not jnp.issubdtype(value.dtype, jnp.integer):
        raise SamplingError(f"{name} must hold integers, got dtype {value.dtype}")
    return value


def _check_forcing(forcing, think_budgets, B: int, N: int, V: int):
    """The budget-forcing arguments; returns think_budgets as int32[B] (N + 1 = never, without forcing)."""
    if forcing is None:
        if think_budgets is not None:
            raise SamplingError("think_budgets needs forcing=Forcing(end_think, tokens)")
        return np.full((B,), N + 1, np.int32)
    if not isinstance(forcing, Forcing):
        raise SamplingError(f"forcing must be a Forcing, got {type(forcing).__name__}")
    bad = [t for t in (forcing.end_think, *forcing.tokens) if t >= V]
    if bad:
        raise SamplingError(f"forcing token {bad[0]} out of range [0, {V}) (forcing.end_think / forcing.tokens)")
    if think_budgets is None:
        raise SamplingError("forcing needs think_budgets (int[B]: thinking tokens before the answer is forced)")
    think_budgets = _as_int_array("think_budgets", think_budgets, (B,), 1)
    if _concrete(think_budgets):
        tb = np.asarray(think_budgets)
        if tb.min() < 0 or tb.max() > N:
            b = int(np.flatnonzero((tb < 0) | (tb > N))[0])
            raise SamplingError(f"think_budgets[{b}] = {int(tb[b])} out of range [0, max_new_tokens={N}]")
    return jnp.asarray(think_budgets, jnp.int32)


def _check_inputs(params, prompts, prompt_lengths, budgets, key, config, sampling):
    """All argument checks, before anything is traced or compiled (value checks only for
    concrete arrays). Returns (prompts, prompt_lengths, budgets) as int32 arrays."""
    if not isinstance(config, ModelConfig):
        raise SamplingError(f"config must be a ModelConfig, got {type(config).__name__}")
    if not isinstance(sampling, SamplingConfig):
        raise SamplingError(f"sampling must be a SamplingConfig, got {type(sampling).__name__}")
    check_params(config, params)
    N, V = sampling.max_new_tokens, config.vocab_size
    bad_stop = [s for s in sampling.stop_tokens if s >= V]
    if bad_stop:
        raise SamplingError(f"stop token {bad_stop[0]} out of range [0, {V}) (sampling.stop_tokens)")
    if key is None and not sampling.greedy:
        raise SamplingError(f"key is required when sampling with temperature {sampling.temperature} > 0")
    if key is not None:
        dtype = getattr(key, "dtype", None)
        typed = dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)
        raw = dtype == jnp.uint32 and tuple(np.shape(key)) == (2,)
        if not (typed and np.shape(key) == ()) and not raw:
            raise SamplingError(f"key must be one PRNG key (jax.random.key(seed)), got "
                                f"{type(key).__name__} of shape {np.shape(key)} and dtype {dtype}")
    prompts = _as_int_array("prompts", prompts, None, 2)
    B, P = prompts.shape
    if B == 0 or P == 0:
        raise SamplingError(f"prompts must be int[batch, prompt_len] with both > 0, got shape {(B, P)}")
    prompt_lengths = _as_int_array("prompt_lengths", prompt_lengths, (B,), 1)
    if budgets is not None:
        budgets = _as_int_array("budgets", budgets, (B,), 1)
    longest = P
    if _concrete(prompt_lengths):
        lengths = np.asarray(prompt_lengths)
        if lengths.min() < 1 or lengths.max() > P:
            b = int(np.flatnonzero((lengths < 1) | (lengths > P))[0])
            raise SamplingError(f"prompt_lengths[{b}] = {int(lengths[b])} out of range [1, {P}] (prompt width {P})")
        longest = int(lengths.max())
        if _concrete(prompts):
            t = np.asarray(prompts)
            real = np.arange(P)[None, :] < lengths[:, None]
            bad = real & ((t < 0) | (t >= V))
            if bad.any():
                b, j = (int(i[0]) for i in np.nonzero(bad))
                raise SamplingError(f"prompt token id {int(t[b, j])} at prompts[{b}, {j}] out of range [0, {V})")
    if longest + N > config.max_position_embeddings:
        raise SamplingError(f"prompt length {longest} + max_new_tokens {N} exceeds "
                            f"max_position_embeddings {config.max_position_embeddings}")
    if budgets is not None and _concrete(budgets):
        bud = np.asarray(budgets)
        if bud.min() < 0 or bud.max() > N:
            b = int(np.flatnonzero((bud < 0) | (bud > N))[0])
            raise SamplingError(f"budgets[{b}] = {int(bud[b])} out of range [0, max_new_tokens={N}]")
    if budgets is None:
        budgets = np.full((B,), N, np.int32)
    return (jnp.asarray(prompts, jnp.int32), jnp.asarray(prompt_lengths, jnp.int32),
            jnp.asarray(budgets, jnp.int32))


def generate(params: dict[str, Any], prompts: jax.Array, prompt_lengths: jax.Array, *,
             config: ModelConfig, sampling: SamplingConfig, key: jax.Array | None = None,
             budgets: jax.Array | None = None, forcing: Forcing | None = None,
             think_budgets: jax.Array | None = None) -> SampleOutput:
    """Generates up to `sampling.max_new_tokens` tokens after each prompt (jit-compiled, KV cache).

    Args:
      params: the model's params pytree.
      prompts: int[B, P], right-padded: the first `prompt_lengths[b]` tokens of row b are the
        prompt, the rest is ignored (any values).
      prompt_lengths: int[B], each in [1, P].
      config: the `ModelConfig` (static).
      sampling: the `SamplingConfig` (static).
      key: a PRNG key (`jax.random.key`); required unless greedy. Step i draws with
        `jax.random.fold_in(key, i)`, so results depend only on (key, inputs).
      budgets: optional int[B], row b's most new tokens, in [0, max_new_tokens]
        (default max_new_tokens for every row).
      forcing: optional `Forcing(end_think, tokens)` (static): budget forcing, with
      think_budgets: int[B] in [0, max_new_tokens], row b's thinking tokens: after that many
        generated tokens without `end_think`, `forcing.tokens` are fed (and recorded) one per
        step, then sampling resumes. Forced tokens count toward the row's length and budget,
        and a forced stop token ends the row like a sampled one.

    Returns:
      `SampleOutput(tokens int32[B, N], lengths int32[B], finished_by_stop bool[B],
      logprobs float32[B, N], forced bool[B, N])`. A row ends when it emits a stop token (kept
      and counted) or when its length reaches its budget.

    Raises:
      SamplingError (a ValueError, one line) for malformed inputs, before compiling.
    """
    prompts, prompt_lengths, budgets = _check_inputs(params, prompts, prompt_lengths, budgets, key,
                                                     config, sampling)
    think_budgets = _check_forcing(forcing, think_budgets, prompts.shape[0], sampling.max_new_tokens,
                                   config.vocab_size)
    if key is None:
        key = jax.random.key(0)  # greedy: never used
    return _generate_jit(params, prompts, prompt_lengths, budgets, think_budgets, key, config=config,
                         sampling=sampling, forcing=forcing)


def _left_align(prompts: jax.Array, prompt_lengths: jax.Array):
    """int[B, P] right-padded -> (tokens, segment_ids, positions), each int32[B, P], with each
    row's real tokens moved to the end (pad slots: token 0, segment 0, position 0)."""
    B, P = prompts.shape
    shift = (P - prompt_lengths)[:, None]
    src = jnp.arange(P, dtype=jnp.int32)[None, :] - shift
    real = src >= 0
    tokens = jnp.take_along_axis(prompts, jnp.clip(src, 0, P - 1), axis=1)
    return (jnp.where(real, tokens, 0), real.astype(jnp.int32), jnp.maximum(src, 0))


def _force(state: _State, token: jax.Array, logp: jax.Array, think_budgets, forcing: Forcing | None):
    """Replaces the draws of rows that are out of thinking budget (or mid-way through the forced
    tokens) by the next forced token. Returns (token, logp, forced bool[B], state)."""
    if forcing is None:
        return token, logp, jnp.zeros_like(state.done), state
    force = jnp.asarray(forcing.tokens, jnp.int32)
    F = len(forcing.tokens)
    start = state.thinking & (state.lengths >= think_budgets)
    pos = jnp.where(start, 0, state.force_pos)
    forced = (pos >= 0) & (pos < F)
    token = jnp.where(forced, force[jnp.clip(pos, 0, F - 1)], token)
    logp = jnp.where(forced, 0.0, logp)
    own_end = state.thinking & ~forced & (token == forcing.end_think)
    pos = jnp.where(forced, pos + 1, pos)
    if forcing.always_template:  # the template (tokens[1:]) follows the row's own end_think
        pos = jnp.where(own_end, 1, pos)
    return token, logp, forced, state._replace(force_pos=pos, thinking=state.thinking & ~forced & ~own_end)


def _record(state: _State, token: jax.Array, logp: jax.Array, forced: jax.Array, budgets, stop_tokens,
            pad_id) -> _State:
    """Writes step `state.step`'s draws into the rows still running and updates who is done."""
    i = state.step
    active = ~state.done
    tokens = state.tokens.at[:, i].set(jnp.where(active, token, pad_id))
    forced_out = state.forced.at[:, i].set(active & forced)
    logprobs = state.logprobs.at[:, i].set(jnp.where(active, logp, 0.0))
    lengths = state.lengths + active.astype(jnp.int32)
    hit_stop = active & jnp.isin(token, stop_tokens) if stop_tokens.size else jnp.zeros_like(active)
    stopped = state.stopped | hit_stop
    done = state.done | hit_stop | (lengths >= budgets)
    return state._replace(step=i + 1, last=token, tokens=tokens, logprobs=logprobs, lengths=lengths,
                          done=done, stopped=stopped, forced=forced_out)


@functools.partial(jax.jit, static_argnames=("config", "sampling", "forcing"))
def _generate_jit(params, prompts, prompt_lengths, budgets, think_budgets, key, *, config, sampling, forcing):
    B, P = prompts.shape
    N = sampling.max_new_tokens
    stop_tokens = np.asarray(sampling.stop_tokens, np.int32)
    _rec = functools.partial(_record, budgets=budgets, stop_tokens=stop_tokens, pad_id=sampling.pad_id)

    def record(state, token, logp):
        token, logp, forced, state = _force(state, token, logp, think_budgets, forcing)
        return _rec(state, token, logp, forced)

    tokens, segment_ids, positions = _left_align(prompts, prompt_lengths)
    # The loop carries per-layer weights and cache buffers: slices of stacked ones would be
    # copied out at every step (on XLA:CPU, about 10 MB per step for the lab model at batch 32).
    params = split_layers(params)
    # The last generated token is never fed back, so P + N - 1 slots suffice.
    cache = init_cache(config, B, P + N - 1, per_layer=True)
    out = apply(params, tokens, config=config, positions=positions, segment_ids=segment_ids, cache=cache)
    state = _State(step=jnp.zeros((), jnp.int32), last=jnp.zeros((B,), jnp.int32), cache=out.cache,
                   tokens=jnp.full((B, N), sampling.pad_id, jnp.int32), logprobs=jnp.zeros((B, N), jnp.float32),
                   lengths=jnp.zeros((B,), jnp.int32), done=budgets <= 0, stopped=jnp.zeros((B,), bool),
                   forced=jnp.zeros((B, N), bool), thinking=jnp.ones((B,), bool),
                   force_pos=jnp.full((B,), -1, jnp.int32))
    token, logp = sample_token(out.logits[:, -1], jax.random.fold_in(key, 0), sampling)
    state = record(state, token, logp)

    def cond(s: _State):
        return (s.step < N) & ~jnp.all(s.done)

    def body(s: _State):
        # Feed the previous token (finished rows too: harmless, their outputs are masked).
        pos = (prompt_lengths + s.step - 1)[:, None]
        o = apply(params, s.last[:, None], config=config, positions=pos,
                  segment_ids=jnp.ones((B, 1), jnp.int32), cache=s.cache)
        token, logp = sample_token(o.logits[:, 0], jax.random.fold_in(key, s.step), sampling)
        return record(s._replace(cache=o.cache), token, logp)

    if N > 1:  # (one new token needs no decode step: vmapping over keys then batches only the draw)
        state = lax.while_loop(cond, body, state)
    return SampleOutput(tokens=state.tokens, lengths=state.lengths, finished_by_stop=state.stopped,
                        logprobs=state.logprobs, forced=state.forced)
