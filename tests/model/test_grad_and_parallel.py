"""Differentiation through `apply` against finite differences (float64), and multi-device
execution (pmap, sharded jit over 8 fake CPU devices) against one device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P
from jax.test_util import check_grads

from metareason.model import ModelConfig, apply, flatten, unflatten
from reference import TINY, random_params

TINY64 = ModelConfig(family="qwen3", vocab_size=23, hidden_size=16, intermediate_size=24, num_layers=2,
                     num_heads=4, num_kv_heads=2, head_dim=8, attention_bias=True,
                     param_dtype="float64", compute_dtype="float64")


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _loss(config, tokens):
    def loss(params):
        logp = jax.nn.log_softmax(apply(params, tokens, config=config).logits.astype(jnp.float64))
        # next-token loss with targets shifted by one, like SFT
        return -jnp.take_along_axis(logp[:, :-1], tokens[:, 1:, None], axis=-1).mean()
    return loss


def test_first_and_second_order_grads_match_finite_differences(x64):
    params = random_params(TINY64, seed=0, scale=0.3)
    tokens = jnp.asarray(np.random.RandomState(0).randint(0, 23, (2, 6)))
    loss = _loss(TINY64, tokens)
    assert jnp.dtype(jax.tree.leaves(params)[0].dtype) == jnp.float64
    # JAX's own checker: JVP and VJP vs central differences along random directions, to order 2.
    check_grads(loss, (params,), order=2, modes=("rev",), eps=1e-4, atol=1e-5, rtol=1e-5)


def test_grad_of_grad_along_a_direction_matches_second_difference(x64):
    """d^2/da^2 loss(params + a * d) at a = 0, by jax.grad(jax.grad(.)) and by finite differences."""
    params = random_params(TINY64, seed=1, scale=0.3)
    direction = random_params(TINY64, seed=2, scale=0.3)
    tokens = jnp.asarray(np.random.RandomState(1).randint(0, 23, (1, 7)))
    loss = _loss(TINY64, tokens)

    def along(a):
        return loss(jax.tree.map(lambda p, d: p + a * d, params, direction))

    second = jax.grad(jax.grad(along))(0.0)
    h = 1e-4
    fd = (along(h) - 2 * along(0.0) + along(-h)) / h**2
    np.testing.assert_allclose(second, fd, rtol=1e-5)
    assert abs(float(second)) > 1e-3  # not trivially zero


def test_pmap_matches_single_device():
    n = jax.local_device_count()
    assert n == 8, "tests/conftest.py should give 8 fake CPU devices"
    config = TINY["qwen2"]
    params = random_params(config)
    tokens = jnp.asarray(np.random.RandomState(0).randint(0, config.vocab_size, (n, 2, 6)))
    out = jax.pmap(lambda p, t: apply(p, t, config=config).logits, in_axes=(None, 0))(params, tokens)
    ref = apply(params, tokens.reshape(n * 2, 6), config=config).logits.reshape(n, 2, 6, -1)
    np.testing.assert_allclose(out, ref, atol=2e-5, rtol=1e-5)


def _spec(path, ndim):
    """Shard heads and the MLP width over 'tensor', batch over 'data'."""
    if path.endswith(("q_proj/kernel", "k_proj/kernel", "v_proj/kernel")):
        return P(None, None, "tensor", None)
    if path.endswith("o_proj/kernel"):
        return P(None, "tensor", None, None)
    if path.endswith(("gate_proj/kernel", "up_proj/kernel")):
        return P(None, None, "tensor")
    if path.endswith("down_proj/kernel"):
        return P(None, "tensor", None)
    return P()


def test_sharded_jit_matches_single_device():
    config = TINY["llama3"]  # 8 heads, 2 kv heads
    params = random_params(config)
    tokens = jnp.asarray(np.random.RandomState(0).randint(0, config.vocab_size, (4, 10)))
    ref = apply(params, tokens, config=config).logits
    mesh = jax.make_mesh((4, 2), ("data", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    flat = flatten(params)
    sharded = unflatten({k: jax.device_put(v, NamedSharding(mesh, _spec(k, v.ndim))) for k, v in flat.items()})
    assert len(flatten(sharded)["layers/mlp/up_proj/kernel"].sharding.device_set) == 8
    tokens_sh = jax.device_put(tokens, NamedSharding(mesh, P("data", None)))
    out = jax.jit(lambda p, t: apply(p, t, config=config).logits)(sharded, tokens_sh)
    np.testing.assert_allclose(out, ref, atol=2e-5, rtol=1e-5)
