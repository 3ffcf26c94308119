"""The per-question objectives: the inner answer loss is the probe's (against the per-prefix
reference and a literal `apply`), padding changes no loss, prepare_many stacks examples of
different lengths for vmap, and make_meta_step takes a query loss apart from the support loss."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metareason.inner import (ExampleError, InnerLoopError, answer_loss, inner_loop, make_meta_step, pad_to, prepare,
                              prepare_many, trajectory_loss)
from metareason.model import apply
from metareason.probe import ProbeBatch, answer_loss_along_trajectory, answer_loss_per_prefix
from metareason.probe.inputs import Example
from reference import TINY, random_params


def example(config, rng, P, T, A, scored):
    targets = np.zeros(A, bool)
    targets[scored[0]:scored[1]] = True
    v = config.vocab_size
    return Example(rng.integers(0, v, P).astype(np.int32), rng.integers(0, v, T).astype(np.int32),
                   rng.integers(0, v, A).astype(np.int32), targets, ("w",) * T, {})


def examples(config, seed=0):
    rng = np.random.default_rng(seed)
    return [example(config, rng, 5, 12, 5, (2, 4)), example(config, rng, 9, 40, 11, (3, 10)),
            example(config, rng, 3, 1, 4, (1, 4))]


def literal_answer_loss(params, config, ex, k):
    """Mean NLL of the scored probe tokens after [prompt, trajectory[:k], probe], by `apply`."""
    seq = np.concatenate([ex.prompt, ex.trajectory[:k], ex.probe])
    lp = np.asarray(jax.nn.log_softmax(apply(params, seq[None], config=config).logits[0]), np.float64)
    start = len(ex.prompt) + k
    return -np.mean([lp[start + j - 1, ex.probe[j]] for j in np.flatnonzero(ex.targets)])


@pytest.mark.parametrize("name", ["qwen2", "llama3"])
def test_inner_answer_loss_is_the_probes(name):
    config = TINY[name]
    params = random_params(config, seed=4)
    ex = examples(config)[1]
    prep = prepare(ex, config)
    ks = [0, 1, 17, 40]
    inner = jax.jit(jax.vmap(lambda k: answer_loss(params, prep, k, config=config)))(jnp.asarray(ks))
    batch = ProbeBatch(np.concatenate([ex.prompt, ex.trajectory])[None], [len(ex.prompt) + 40],
                       np.asarray([ks]) + len(ex.prompt), ex.probe[None], ex.targets[None])
    ref = answer_loss_per_prefix(params, batch, config=config).mean[0]
    probe = answer_loss_along_trajectory(params, batch, config=config, method="cache").mean[0]
    np.testing.assert_allclose(inner, ref, rtol=1e-5)
    np.testing.assert_allclose(inner, probe, rtol=1e-5)
    np.testing.assert_allclose(inner[2], literal_answer_loss(params, config, ex, 17), rtol=1e-5)


def test_padding_changes_no_loss_and_prepare_many_stacks():
    config = TINY["qwen2"]
    params = random_params(config, seed=5)
    exs = examples(config, seed=1)
    tasks = prepare_many(exs, config)
    assert tasks.context.shape == (3, 64) and tasks.probe.shape == (3, 16) and tasks.qidx.shape == (3, 8)
    assert tasks.prompt_length.shape == (3,)
    both = jax.jit(lambda ex: jnp.stack([answer_loss(params, ex, 1, config=config),
                                         trajectory_loss(params, ex, config=config)]))
    losses = jax.vmap(both)(tasks)
    for i, ex in enumerate(exs):
        own = prepare(ex, config)
        padded = pad_to(own, (96, 24, 16))
        assert padded.context.shape == (96,) and padded.qvalid.sum() == own.qvalid.sum()
        np.testing.assert_allclose(both(padded), losses[i], rtol=1e-5)
        np.testing.assert_allclose(losses[i, 0], literal_answer_loss(params, config, ex, 1), rtol=1e-5)
    own = prepare(exs[0], config)  # unpadded, against its padded self in the stack
    np.testing.assert_allclose(both(own), losses[0], rtol=1e-5)
    seq = np.concatenate([exs[1].prompt, exs[1].trajectory])
    lp = jax.nn.log_softmax(apply(params, seq[None], config=config).logits[0])
    P = len(exs[1].prompt)
    want = -np.mean([lp[j - 1, seq[j]] for j in range(P, len(seq))])
    np.testing.assert_allclose(losses[1, 1], want, rtol=1e-5)
    with pytest.raises(ExampleError, match="cannot pad"):
        pad_to(prepare(exs[1], config), prepare(exs[0], config))
    with pytest.raises(ExampleError, match="at least one example"):
        prepare_many([], config)


@pytest.mark.slow  # ~65 s; test_meta.py's mean-over-tasks test runs by default
def test_meta_step_with_a_query_loss_equals_a_loop_over_tasks():
    """Eq 8: support = the trajectory loss, query = the answer loss, through make_meta_step."""
    config = TINY["qwen2"]
    params = random_params(config, seed=6)
    tasks = prepare_many(examples(config, seed=2)[:2], config)
    support = functools.partial(trajectory_loss, config=config)
    query = functools.partial(answer_loss, config=config)
    outer = optax.sgd(1.0)
    step = make_meta_step(support, query, optax.sgd(0.3), outer, steps=2, trainable="mlp")
    new, _, metrics = step(params, outer.init(params), tasks, tasks)

    def by_hand(p):
        total = 0.0
        for i in range(2):
            task = jax.tree.map(lambda x: x[i], tasks)
            total += query(inner_loop(support, p, task, optax.sgd(0.3), steps=2, trainable="mlp").params, task)
        return total / 2

    value, grads = jax.jit(jax.value_and_grad(by_hand))(params)
    np.testing.assert_allclose(metrics["loss"], value, rtol=1e-5)
    jax.tree.map(lambda n, p, g: np.testing.assert_allclose(n, p - g, rtol=1e-4, atol=1e-6), new, params, grads)
    assert np.abs(grads["layers"]["mlp"]["up_proj"]["kernel"]).max() > 1e-3


def test_make_meta_step_bad_input():
    loss = lambda p, b: jnp.sum(p["w"] * b)  # noqa: E731
    with pytest.raises(InnerLoopError, match="inner_optimizer must be an optax GradientTransformation"):
        make_meta_step(loss, loss, "sgd", optax.adam(1e-3), steps=1)
    with pytest.raises(InnerLoopError, match="fourth positional"):
        make_meta_step(loss, optax.sgd(0.1), optax.adam(1e-3), optax.adam(1e-3), steps=1)
    with pytest.raises(InnerLoopError, match="query_loss must be a function"):
        make_meta_step(loss, 3, optax.sgd(0.1), optax.adam(1e-3), steps=1)
