"""The per-question objectives that true gradient steps and implicit updates are measured on.

One question with one trajectory (a `metareason.probe.Example`) is padded to fixed shapes
(`prepare`), so every question of a length bucket reuses one compilation; `prepare_many` pads a
list of them to common shapes and stacks them [T, ...] for `vmap` (`pad_to` pads one to another's
shapes). Two losses of the params, both means over tokens:

- `answer_loss`: the NLL of the answer given [prompt, t_<k, probe] (the probe's L-hat, computed by
  the probe's own `metareason.probe.answer_nll` with one cut; k = 0 is the question-only answer
  loss, the "query set" of the meta-learning view);
- `trajectory_loss`: the NLL of the trajectory given the prompt (the SFT loss of the trajectory
  itself, the "support set").

`config=` is our `ModelConfig` or any `metareason.model.CausalLM` (the model protocol).

Axes: N context tokens (prompt + trajectory, padded), A probe tokens (padded), Q scored probe
positions (padded).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metareason.model import ModelConfig
from metareason.model.protocol import CausalLM, as_causal_lm
from metareason.probe.loss import ProbeBatch, answer_nll, model_logits
from metareason.sample.batched import round_up

__all__ = ["ExampleError", "Prepared", "prepare", "prepare_many", "pad_to", "answer_positions", "splice",
           "token_nll", "answer_loss", "trajectory_loss"]


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


def prepare(example, config: ModelConfig | CausalLM) -> Prepared:
    """Pads an Example (lengths rounded up: N to 32, A and Q to 8) and validates it."""
    lm = as_causal_lm(config)
    prompt, traj = np.asarray(example.prompt), np.asarray(example.trajectory)
    probe = np.asarray(example.probe)
    qidx = answer_positions(example.targets)
    if len(prompt) < 1:
        raise ExampleError("the prompt is empty")
    n = len(prompt) + len(traj)
    N, A, Q = round_up(n, 32), round_up(len(probe), 8), round_up(len(qidx), 8)
    if lm.max_length is not None and N + A > lm.max_length:
        raise ExampleError(f"prompt + trajectory + probe ({n + len(probe)} tokens, {N + A} padded) exceed the "
                           f"model's context ({lm.max_length})")
    ids = np.concatenate([prompt, traj, probe])
    if ids.min() < 0 or ids.max() >= lm.vocab_size:
        raise ExampleError(f"token ids must be in [0, {lm.vocab_size}), got range [{ids.min()}, {ids.max()}]")
    context = np.zeros(N, np.int32)
    context[:n] = np.concatenate([prompt, traj])
    probe_p = np.zeros(A, np.int32)
    probe_p[:len(probe)] = probe
    qi = np.zeros(Q, np.int32)
    qi[:len(qidx)] = qidx
    labels = probe_p[np.minimum(qi + 1, A - 1)]
    return Prepared(context, np.int32(len(prompt)), np.int32(n), probe_p, qi, np.arange(Q) < len(qidx), labels)


def _shape(ex: Prepared) -> tuple[int, int, int]:
    """(N, A, Q) of one prepared example (no leading axis)."""
    shapes = (np.shape(ex.context), np.shape(ex.probe), np.shape(ex.qidx))
    if any(len(x) != 1 for x in shapes) or np.shape(ex.qvalid) != shapes[2] or np.shape(ex.labels) != shapes[2]:
        raise ExampleError(f"expected one prepared example (1-D context, probe, qidx), got shapes {shapes}")
    return shapes[0][0], shapes[1][0], shapes[2][0]


def pad_to(prepared: Prepared, like: Prepared | tuple[int, int, int]) -> Prepared:
    """`prepared` padded to the shapes of `like` (a `Prepared`, or (N, A, Q)): context and probe
    with zeros (never attended: causal, and masked by the lengths), qidx / labels with zeros and
    qvalid with False. The losses are unchanged."""
    N, A, Q = _shape(like) if isinstance(like, Prepared) else like
    n, a, q = _shape(prepared)
    if n > N or a > A or q > Q:
        raise ExampleError(f"cannot pad (N, A, Q) = {(n, a, q)} down to {(N, A, Q)}")

    def pad(x, size, value=0):
        x = np.asarray(x)
        return np.pad(x, (0, size - x.shape[0]), constant_values=value)

    ex = prepared
    return Prepared(pad(ex.context, N), np.asarray(ex.prompt_length), np.asarray(ex.context_length),
                    pad(ex.probe, A), pad(ex.qidx, Q), pad(ex.qvalid, Q, False), pad(ex.labels, Q))


def prepare_many(examples, config: ModelConfig | CausalLM) -> Prepared:
    """Examples of any lengths, each `prepare`d, padded to common shapes (the largest N, A, Q)
    and stacked: a `Prepared` whose fields have a leading task axis [T, ...] (numpy), ready for
    `vmap` (or `make_meta_step`'s support / query)."""
    examples = list(examples)
    if not examples:
        raise ExampleError("prepare_many needs at least one example")
    prepared = [prepare(ex, config) for ex in examples]
    like = tuple(max(dims) for dims in zip(*(_shape(p) for p in prepared)))
    padded = [pad_to(p, like) for p in prepared]
    return Prepared(*(np.stack(field) for field in zip(*padded)))


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


def _targets(ex: Prepared) -> jax.Array:
    """bool[A]: the scored probe tokens (qidx are the positions before them)."""
    A = jnp.shape(ex.probe)[0]
    hits = jnp.zeros(A, jnp.int32).at[jnp.asarray(ex.qidx) + 1].add(jnp.asarray(ex.qvalid, jnp.int32))
    return hits > 0


def answer_loss(params: Any, ex: Prepared, k: jax.Array | int = 0, *, config: ModelConfig | CausalLM) -> jax.Array:
    """The answer NLL (mean over answer tokens) given [prompt, t_<k tokens, probe]; k = 0: question
    only. The probe's loss (`metareason.probe.answer_nll`, packed) at the one cut prompt_length + k."""
    cut = jnp.asarray(ex.prompt_length + k, jnp.int32)
    batch = ProbeBatch(jnp.asarray(ex.context)[None], jnp.asarray(ex.context_length)[None], cut[None, None],
                       jnp.asarray(ex.probe)[None], _targets(ex)[None])
    return answer_nll(params, batch, config=config, method="packed").mean[0, 0]


def trajectory_loss(params: Any, ex: Prepared, *, config: ModelConfig | CausalLM) -> jax.Array:
    """The trajectory's NLL given the prompt (mean over trajectory tokens; the SFT loss)."""
    context = jnp.asarray(ex.context)
    logits = model_logits(config, params, context[None])[0, :-1]
    j = jnp.arange(context.shape[0] - 1)
    valid = (j >= ex.prompt_length - 1) & (j < ex.context_length - 1)
    return token_nll(logits, context[1:], valid)
