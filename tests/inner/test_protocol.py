"""The inner loops through the model protocol: our transformer behind a bare `CausalLM` (no
.config, so no fast path) gives a second-order meta-gradient equal to central finite differences
and to the one through our own `ModelConfig` path."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metareason.inner import (ImplicitError, answer_loss, implicit_update, meta_loss, prepare_many, trainable_mask,
                              trajectory_loss)
from metareason.model import apply
from metareason.model.protocol import CausalLM
from metareason.probe.inputs import Example
from reference import TINY, random_params


def plain(config):
    return CausalLM(apply=lambda p, t, pos, m: apply(p, t, config=config, positions=pos, mask=m).logits,
                    vocab_size=config.vocab_size, max_length=config.max_position_embeddings, name="plain")


def example(config, rng, P, T, A):
    targets = np.zeros(A, bool)
    targets[2:A - 1] = True
    v = config.vocab_size
    return Example(rng.integers(0, v, P).astype(np.int32), rng.integers(0, v, T).astype(np.int32),
                   rng.integers(0, v, A).astype(np.int32), targets, ("w",) * T, {})


@pytest.mark.slow  # ~80 s; the adapters' finite-difference meta-gradient tests cover the protocol by default
def test_second_order_meta_gradient_through_any_causal_lm_equals_finite_differences():
    """jit + grad through 3 inner SGD steps on the trajectory loss, query = the answer loss,
    vmapped over 2 tasks of different lengths. float32: the central difference at eps = 0.03
    along a unit random direction agrees to 0.05% in a trial run; asserted to 0.5%."""
    config = TINY["qwen2"]
    lm = plain(config)
    rng = np.random.default_rng(0)
    tasks = prepare_many([example(config, rng, 5, 12, 5), example(config, rng, 9, 40, 9)], lm)
    assert tasks.context.shape == (2, 64)
    params = random_params(config, seed=1)

    def meta(p, model):
        return meta_loss(p, tasks, tasks, loss_fn=functools.partial(trajectory_loss, config=model),
                         query_loss_fn=functools.partial(answer_loss, config=model),
                         inner_optimizer=optax.sgd(0.3), steps=3)[0]

    grad = jax.jit(jax.grad(meta), static_argnums=1)
    g = grad(params, lm)
    leaves = jax.tree.leaves(params)
    keys = jax.random.split(jax.random.key(0), len(leaves))
    d = [jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)]
    norm = jnp.sqrt(sum(jnp.sum(x ** 2) for x in d))
    d = jax.tree.unflatten(jax.tree.structure(params), [x / norm for x in d])
    along = float(sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(d))))
    value = jax.jit(meta, static_argnums=1)
    eps = 0.03
    fd = (value(jax.tree.map(lambda a, b: a + eps * b, params, d), lm)
          - value(jax.tree.map(lambda a, b: a - eps * b, params, d), lm)) / (2 * eps)
    assert abs(along) > 1e-2
    np.testing.assert_allclose(along, float(fd), rtol=5e-3)
    # the same meta-gradient through our ModelConfig fast path
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-5), g, grad(params, config))


def test_masks_and_the_implicit_update_through_the_protocol():
    config = TINY["qwen2"]
    lm = plain(config)
    params = random_params(config, seed=2)
    assert trainable_mask(params, "mlp")["layers"]["mlp"]["up_proj"]["kernel"]
    ex = example(config, np.random.default_rng(1), 4, 6, 5)
    with pytest.raises(ImplicitError, match="needs our transformer's blocks"):
        implicit_update(params, ex, 3, config=lm)
