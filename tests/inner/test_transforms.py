"""first_order(): chained before the inner optimizer it is FOMAML (equal to the mode switch and
to a hand-written first-order meta-gradient), and it leaves Meta-SGD's rates differentiable."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metareason.inner import first_order, inner_loop, meta_sgd
from test_loop import fd_grad, mlp_params, mse, task


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def flat(tree):
    return jax.flatten_util.ravel_pytree(tree)[0]


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_chain_equals_the_first_order_mode_and_fomaml(opt):
    params = mlp_params(jax.random.key(11))
    support, query = task(jax.random.key(12)), task(jax.random.key(13))
    inner = optax.sgd(0.1) if opt == "sgd" else optax.adam(0.05)

    def meta(p, optimizer, mode):
        return mse(inner_loop(mse, p, support, optimizer, steps=3, mode=mode).params, query)

    chained = flat(jax.grad(meta)(params, optax.chain(first_order(), inner), "second_order"))
    np.testing.assert_allclose(chained, flat(jax.grad(meta)(params, inner, "first_order")), rtol=1e-12)
    second = flat(jax.grad(meta)(params, inner, "second_order"))
    assert np.abs(chained - second).max() > 1e-3  # the stopped terms matter
    if opt == "sgd":  # FOMAML by hand: the query gradient at the adapted params
        phi = inner_loop(mse, params, support, inner, steps=3).params
        np.testing.assert_allclose(chained, flat(jax.grad(mse)(phi, query)), rtol=1e-10)


def test_meta_sgd_rates_keep_their_gradient_under_first_order():
    """phi = theta - sum_i lr * stop(g_i): d query / d lr = -sum_i g_i * grad_query(phi) elementwise
    with the g_i held fixed: equal to finite differences of the rates with the g_i frozen."""
    params = mlp_params(jax.random.key(14))
    support, query = task(jax.random.key(15)), task(jax.random.key(16))
    lrs = jax.tree.map(lambda x: jnp.full_like(x, 0.05), params)

    def meta(lrs):
        opt = optax.chain(first_order(), meta_sgd(lrs))
        return mse(inner_loop(mse, params, support, opt, steps=1).params, query)

    g = jax.grad(mse)(params, support)

    def frozen(lrs):  # one step with the support gradient as a constant
        return mse(jax.tree.map(lambda p, lr, gg: p - lr * gg, params, lrs, g), query)

    np.testing.assert_allclose(flat(jax.grad(meta)(lrs)), fd_grad(frozen, lrs), rtol=1e-5, atol=1e-9)
