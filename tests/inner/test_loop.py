"""Inner loops against independent references: finite differences (float64), a hand-written
first-order MAML, the ridge closed form of the implicit meta-gradient."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metareason.inner import InnerLoopError, inner_loop, meta_sgd, reptile_update


def mlp_params(key, sizes=(1, 8, 1), dtype=jnp.float64):
    keys = jax.random.split(key, len(sizes) - 1)
    return [{"w": jax.random.normal(k, (a, b), dtype) / np.sqrt(a), "b": jnp.zeros(b, dtype)}
            for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def mlp(params, x):
    for i, layer in enumerate(params):
        x = x @ layer["w"] + layer["b"]
        if i < len(params) - 1:
            x = jnp.tanh(x)
    return x


def mse(params, batch):
    x, y = batch
    return jnp.mean((mlp(params, x) - y) ** 2)


def task(key, n=10, dtype=jnp.float64):
    k1, k2 = jax.random.split(key)
    x = jax.random.uniform(k1, (n, 1), dtype, -2, 2)
    return x, jnp.sin(x + jax.random.uniform(k2, (), dtype))


def fd_grad(f, params, eps=1e-6):
    f = jax.jit(f)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    g = np.zeros(flat.shape)
    for i in range(flat.size):
        e = np.zeros(flat.shape)
        e[i] = eps
        g[i] = (f(unravel(flat + e)) - f(unravel(flat - e))) / (2 * eps)
    return g


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("remat", ["none", "step", "nested"])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_second_order_meta_gradient_matches_finite_differences(remat, opt):
    params = mlp_params(jax.random.key(0))
    support, query = task(jax.random.key(1)), task(jax.random.key(2))
    optimizer = optax.sgd(0.1) if opt == "sgd" else optax.adam(0.05)

    def meta_loss(p):
        return mse(inner_loop(mse, p, support, optimizer, steps=5, remat=remat).params, query)

    got = jax.flatten_util.ravel_pytree(jax.grad(meta_loss)(params))[0]
    np.testing.assert_allclose(got, fd_grad(meta_loss, params), rtol=1e-5, atol=1e-8)


def test_first_order_equals_hand_written_fomaml():
    params = mlp_params(jax.random.key(3))
    support, query = task(jax.random.key(4)), task(jax.random.key(5))
    res = inner_loop(mse, params, support, optax.sgd(0.1), steps=3, mode="first_order")
    got = jax.grad(lambda p: mse(inner_loop(mse, p, support, optax.sgd(0.1), steps=3, mode="first_order").params,
                                 query))(params)
    phi = params  # by hand: three plain SGD steps, then the query gradient at phi
    for _ in range(3):
        phi = jax.tree.map(lambda a, g: a - 0.1 * g, phi, jax.grad(mse)(phi, support))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), res.params, phi)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10), got, jax.grad(mse)(phi, query))
    # and it differs from the second-order meta-gradient
    second = jax.grad(lambda p: mse(inner_loop(mse, p, support, optax.sgd(0.1), steps=3).params, query))(params)
    assert not np.allclose(second[0]["w"], got[0]["w"])


def test_implicit_meta_gradient_equals_ridge_closed_form():
    rng = np.random.default_rng(0)
    A, b, t = rng.normal(size=(12, 5)), rng.normal(size=12), rng.normal(size=5)
    lam = 2.0
    theta = jnp.asarray(rng.normal(size=5))

    def inner(p, batch):
        A, b = batch
        return 0.5 * jnp.sum((A @ p["x"] - b) ** 2)

    def meta_loss(th):
        res = inner_loop(inner, {"x": th}, (A, b), optax.sgd(0.02), steps=800, mode="implicit", prox=lam,
                         cg_iters=50)
        return 0.5 * jnp.sum((res.params["x"] - t) ** 2)

    M = A.T @ A + lam * np.eye(5)
    phi = np.linalg.solve(M, A.T @ b + lam * np.asarray(theta))
    want = lam * np.linalg.solve(M, phi - t)  # d phi*/d theta = lam M^-1 (symmetric)
    np.testing.assert_allclose(jax.grad(meta_loss)(theta), want, rtol=1e-6)


def test_meta_sgd_learning_rates_get_the_right_gradient():
    params = mlp_params(jax.random.key(6))
    support, query = task(jax.random.key(7)), task(jax.random.key(8))
    lrs = jax.tree.map(lambda x: jnp.full_like(x, 0.05), params)

    def meta_loss(lrs):
        return mse(inner_loop(mse, params, support, meta_sgd(lrs), steps=2).params, query)

    got = jax.flatten_util.ravel_pytree(jax.grad(meta_loss)(lrs))[0]
    np.testing.assert_allclose(got, fd_grad(meta_loss, lrs), rtol=1e-5, atol=1e-9)


def test_trainable_subset_and_per_step_batches():
    params = mlp_params(jax.random.key(9))
    trainable = [{"w": False, "b": False}, {"w": True, "b": True}]  # ANIL: the head only
    batches = jax.tree.map(lambda *xs: jnp.stack(xs), *[task(jax.random.key(i)) for i in range(4)])
    res = inner_loop(mse, params, batches, optax.sgd(0.1), trainable=trainable)
    assert res.losses.shape == (4,)
    np.testing.assert_array_equal(res.params[0]["w"], params[0]["w"])
    assert not np.allclose(res.params[1]["w"], params[1]["w"])
    # per-step batches: step i used batch i (check by unrolling by hand)
    p = params
    for i in range(4):
        batch = jax.tree.map(lambda x: x[i], batches)
        np.testing.assert_allclose(res.losses[i], mse(p, batch), rtol=1e-12)  # the loss before step i
        g = jax.grad(mse)(p, batch)
        p = [p[0], jax.tree.map(lambda a, gg: a - 0.1 * gg, p[1], g[1])]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), res.params, p)


def test_vmap_over_tasks_equals_a_loop():
    params = mlp_params(jax.random.key(10))
    tasks = [task(jax.random.key(20 + i)) for i in range(3)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *tasks)
    run = jax.jit(jax.vmap(lambda b: inner_loop(mse, params, b, optax.sgd(0.1), steps=3).final_loss))
    np.testing.assert_allclose(run(stacked), [inner_loop(mse, params, b, optax.sgd(0.1), steps=3).final_loss
                                             for b in tasks], rtol=1e-12)


def test_reptile_update():
    p, q = {"a": jnp.ones(3)}, {"a": jnp.full(3, 3.0)}
    np.testing.assert_allclose(reptile_update(p, q, 0.25)["a"], 1.5)


@pytest.mark.parametrize("kwargs,message", [
    (dict(steps=0), "steps must be >= 1"),
    (dict(steps=2, mode="newton"), "unknown inner-loop mode"),
    (dict(steps=2, remat="all"), "unknown remat"),
    (dict(steps=2, trainable={"w": True}), "same pytree structure"),
    (dict(), "leading \\[steps\\] axis"),
])
def test_bad_input(kwargs, message):
    params = mlp_params(jax.random.key(0))
    batch = task(jax.random.key(1)) if kwargs else (jnp.ones((3, 1)), jnp.ones((4, 1)))
    with pytest.raises(InnerLoopError, match=message):
        inner_loop(mse, params, batch, optax.sgd(0.1), **kwargs)


def test_non_scalar_loss():
    params = mlp_params(jax.random.key(0))
    with pytest.raises(InnerLoopError, match="scalar"):
        inner_loop(lambda p, b: mlp(p, b[0]), params, task(jax.random.key(1)), optax.sgd(0.1), steps=1)
