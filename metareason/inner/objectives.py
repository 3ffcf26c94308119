"""The per-question objectives that true gradient steps and implicit updates are measured on.

One question with one trajectory (a `metareason.probe.Example`) is padded to fixed shapes
(`prepare`), so every question of a length bucket reuses one compilation. Two losses of the
params, both means over tokens:

- `answer_loss`: the NLL of the answer given [prompt, t_<=k, probe] (the probe's L-hat; k = 0 is
  the question-only answer loss, the "query set" of the meta-learning view);
- `trajectory_loss`: the NLL of the trajectory given the prompt (the SFT loss of the trajectory
  itself, the "support set").

Axes: N context tokens (prompt + trajectory, padded), A probe tokens (padded), Q scored probe
positions (padded).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metareason.model import ModelConfig, apply
from metareason.sample.batched import round_up

__all__ = ["ExampleError", "Prepared", "prepare", "answer_positions", "splice", "token_nll", "answer_loss",
           "trajectory_loss"]


class ExampleError(ValueError):
    """A malformed question / trajectory / probe (one line, names what is wrong)."""


class Prepared(NamedTuple):
    """One example, padded. context: int32[N] prompt + trajectory; prompt_length, context_length:
    int32[]; probe: int32[A]; qidx: int32[Q] probe positions whose logits score the answer;
    qvalid: bool[Q] real entries of qidx; labels: int32[Q] the answer token each scores."""

    context: Any
    prompt_length: Any
    context_length: Any
    probe: Any
    qidx: Any
    qvalid: Any
    labels: Any


def answer_positions(targets: np.ndarray) -> np.ndarray:
    """int[Q]: the probe positions whose logits predict the scored (target) probe tokens."""
    targets = np.asarray(targets, bool)
    if targets.ndim != 1 or not targets.any():
        raise ExampleError("targets must be a 1-D bool array with at least one scored token")
    if targets[0]:
        raise ExampleError("the first probe token cannot be scored (its logit comes from the context)")
    return np.flatnonzero(targets) - 1


def prepare(example, config: ModelConfig) -> Prepared:
    """Pads an Example (lengths rounded up: N to 32, A and Q to 8) and validates it."""
    prompt, traj = np.asarray(example.prompt), np.asarray(example.trajectory)
    probe = np.asarray(example.probe)
    qidx = answer_positions(example.targets)
    if len(prompt) < 1:
        raise ExampleError("the prompt is empty")
    n = len(prompt) + len(traj)
    N, A, Q = round_up(n, 32), round_up(len(probe), 8), round_up(len(qidx), 8)
    if N + A > config.max_position_embeddings:
        raise ExampleError(f"prompt + trajectory + probe ({n + len(probe)} tokens, {N + A} padded) exceed the "
                           f"model's context ({config.max_position_embeddings})")
    ids = np.concatenate([prompt, traj, probe])
    if ids.min() < 0 or ids.max() >= config.vocab_size:
        raise ExampleError(f"token ids must be in [0, {config.vocab_size}), got range [{ids.min()}, {ids.max()}]")
    context = np.zeros(N, np.int32)
    context[:n] = np.concatenate([prompt, traj])
    probe_p = np.zeros(A, np.int32)
    probe_p[:len(probe)] = probe
    qi = np.zeros(Q, np.int32)
    qi[:len(qidx)] = qidx
    labels = probe_p[np.minimum(qi + 1, A - 1)]
    return Prepared(context, np.int32(len(prompt)), np.int32(n), probe_p, qi, np.arange(Q) < len(qidx), labels)


def splice(context: jax.Array, cut: jax.Array, probe: jax.Array) -> jax.Array:
    """int[N + A]: context[:cut] followed by probe (then zeros; causal, so never read)."""
    context, probe = jnp.asarray(context), jnp.asarray(probe)
    N, A = context.shape[0], probe.shape[0]
    j = jnp.arange(N + A)
    from_ctx = context[jnp.minimum(j, N - 1)]
    pj = j - cut
    from_probe = jnp.where(pj < A, probe[jnp.clip(pj, 0, A - 1)], 0)
    return jnp.where(j < cut, from_ctx, from_probe)


def token_nll(logits: jax.Array, labels: jax.Array, valid: jax.Array) -> jax.Array:
    """Mean NLL of labels [Q] under logits [Q, V] over the valid rows (a float32 scalar)."""
    lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(lp, labels[:, None], axis=-1)[:, 0]
    return jnp.sum(jnp.where(valid, nll, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def answer_loss(params: Any, ex: Prepared, k: jax.Array | int = 0, *, config: ModelConfig) -> jax.Array:
    """The answer NLL (mean over answer tokens) given [prompt, t_<k tokens, probe]; k = 0: question only."""
    cut = ex.prompt_length + k
    tokens = splice(ex.context, cut, ex.probe)[None]
    logits = apply(params, tokens, config=config).logits[0, cut + jnp.asarray(ex.qidx)]
    return token_nll(logits, jnp.asarray(ex.labels), jnp.asarray(ex.qvalid))


def trajectory_loss(params: Any, ex: Prepared, *, config: ModelConfig) -> jax.Array:
    """The trajectory's NLL given the prompt (mean over trajectory tokens; the SFT loss)."""
    context = jnp.asarray(ex.context)
    logits = apply(params, context[None], config=config).logits[0, :-1]
    j = jnp.arange(context.shape[0] - 1)
    valid = (j >= ex.prompt_length - 1) & (j < ex.context_length - 1)
    return token_nll(logits, context[1:], valid)
