"""implicit_diff around any solver: against the closed form of a proximal quadratic, second-order
differentiation through a converged unrolled solve, and central finite differences (float64)."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from metareason.inner import ImplicitDiffError, implicit_diff, inner_loop, proximal_optimality
from test_loop import fd_grad

LAM = 2.0


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def problem(seed=0, n=12, d=5):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.normal(size=(n, d))), jnp.asarray(rng.normal(size=n)), jnp.asarray(rng.normal(size=d)),
            jnp.asarray(rng.normal(size=d)))


def inner(phi, A, b):
    return 0.5 * jnp.sum((A @ phi - b) ** 2)


def while_solver(theta, A, b):
    """Gradient descent to convergence in a while loop (not reverse-differentiable by itself)."""
    step = 1.0 / (jnp.linalg.norm(A, 2) ** 2 + LAM)

    def body(state):
        phi, _ = state
        g = A.T @ (A @ phi - b) + LAM * (phi - theta)
        return phi - step * g, jnp.linalg.norm(g)

    return lax.while_loop(lambda s: s[1] > 1e-12, body, (theta, jnp.inf))[0]


def test_closed_form_second_order_and_finite_differences():
    A, b, theta, t = problem()
    solver = implicit_diff(proximal_optimality(inner, LAM), cg_iters=50)(while_solver)

    def meta(theta, b):
        return 0.5 * jnp.sum((solver(theta, A, b) - t) ** 2)

    g_theta, g_b = jax.grad(meta, argnums=(0, 1))(theta, b)
    M = A.T @ A + LAM * jnp.eye(5)
    phi = jnp.linalg.solve(M, A.T @ b + LAM * theta)
    np.testing.assert_allclose(solver(theta, A, b), phi, rtol=1e-10)
    np.testing.assert_allclose(g_theta, LAM * jnp.linalg.solve(M, phi - t), rtol=1e-8)  # d phi/d theta = lam M^-1
    np.testing.assert_allclose(g_b, A @ jnp.linalg.solve(M, phi - t), rtol=1e-8)        # d phi/d b = M^-1 A^T

    # second order through a converged unroll of the same proximal problem (400 SGD steps)
    def unrolled(theta):
        prox_loss = lambda p, batch: inner(p, *batch) + 0.5 * LAM * jnp.sum((p - theta) ** 2)  # noqa: E731
        lr = float(1.0 / (np.linalg.norm(A, 2) ** 2 + LAM))
        return 0.5 * jnp.sum((inner_loop(prox_loss, theta, (A, b), optax.sgd(lr), steps=400).params - t) ** 2)

    np.testing.assert_allclose(g_theta, jax.grad(unrolled)(theta), rtol=1e-8)
    np.testing.assert_allclose(g_theta, fd_grad(lambda th: meta(th, b), theta), rtol=1e-5)


def test_inner_loop_implicit_with_frozen_leaves_equals_second_order_at_convergence():
    """Frozen leaves couple to the moving ones through the Hessian: their cotangent is v - H_FT u,
    which the second-order unroll (with the same proximal term and mask) and finite differences
    see too."""
    A, b, theta, t = problem(1)
    params = {"w": theta[:3], "frozen": theta[3:]}
    mask = {"w": True, "frozen": False}

    def loss(p, batch):
        return inner(jnp.concatenate([p["w"], p["frozen"]]), *batch)

    def query(p):
        return 0.5 * jnp.sum((jnp.concatenate([p["w"], p["frozen"]]) ** 3 - t) ** 2)

    def implicit(p):
        return query(inner_loop(loss, p, (A, b), optax.sgd(0.02), steps=1500, mode="implicit", prox=LAM,
                                cg_iters=50, trainable=mask).params)

    def second_order(p):
        prox_loss = lambda q, batch: loss(q, batch) + 0.5 * LAM * jnp.sum((q["w"] - p["w"]) ** 2)  # noqa: E731
        return query(inner_loop(prox_loss, p, (A, b), optax.sgd(0.02), steps=1500, trainable=mask).params)

    got = jax.flatten_util.ravel_pytree(jax.jit(jax.grad(implicit))(params))[0]
    np.testing.assert_allclose(got, jax.flatten_util.ravel_pytree(jax.grad(second_order)(params))[0], rtol=1e-7)
    np.testing.assert_allclose(got, fd_grad(implicit, params), rtol=1e-5)
    assert np.abs(got[:2]).min() > 1e-3  # the frozen leaves' gradient (flattened first) is not trivial


def test_a_fixed_point_with_gmres():
    """A non-symmetric condition: phi = tanh(W phi + x theta) (a deep-equilibrium layer)."""
    rng = np.random.default_rng(2)
    W = jnp.asarray(0.3 * rng.normal(size=(6, 6)))
    x = jnp.asarray(rng.normal(size=(6, 3)))

    def optimality(phi, theta):
        return phi - jnp.tanh(W @ phi + x @ theta)

    @implicit_diff(optimality, solve="gmres", cg_iters=60)
    def fixed_point(theta):
        return lax.fori_loop(0, 300, lambda _, phi: jnp.tanh(W @ phi + x @ theta), jnp.zeros(6))

    theta = jnp.asarray(rng.normal(size=3))
    meta = lambda th: jnp.sum(fixed_point(th) ** 2)  # noqa: E731
    np.testing.assert_allclose(jax.grad(meta)(theta), fd_grad(meta, theta), rtol=1e-6)


def test_aux_and_integer_inputs():
    """has_aux: the aux output passes through; integer inputs get float0 cotangents."""
    A, b, theta, t = problem(3)

    @implicit_diff(proximal_optimality(lambda p, A, b, n: inner(p, A, b), LAM), has_aux=True, cg_iters=50)
    def solver(theta, A, b, n):
        return while_solver(theta, A, b), n * 2

    phi, aux = solver(theta, A, b, jnp.int32(3))
    assert int(aux) == 6
    g = jax.grad(lambda th: jnp.sum(solver(th, A, b, jnp.int32(3))[0] * t))(theta)
    M = A.T @ A + LAM * jnp.eye(5)
    np.testing.assert_allclose(g, LAM * jnp.linalg.solve(M, t), rtol=1e-8)


def test_bad_arguments():
    with pytest.raises(ImplicitDiffError, match="unknown linear solve 'lu'"):
        implicit_diff(lambda p, t: p, solve="lu")
    with pytest.raises(ImplicitDiffError, match="cg_iters must be >= 1"):
        implicit_diff(lambda p, t: p, cg_iters=0)
    with pytest.raises(ImplicitDiffError, match="prox"):
        proximal_optimality(inner, 0.0)
