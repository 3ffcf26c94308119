"""Implicit differentiation of any inner solver (as jaxopt's / TorchOpt's `custom_root`).

A solver maps (theta0, *args) -> phi with phi a root of an optimality condition
F(phi, theta0, *args) = 0. By the implicit function theorem the cotangent v of phi reaches the
inputs as -(dF/dx)^T u with u solving (dF/dphi)^T u = v, so the backward pass costs one linear
solve at phi and never differentiates the solver's iterations (memory flat in its steps):

    @implicit_diff(proximal_optimality(loss_fn, prox=1.0), cg_iters=20)
    def solver(theta0, batch):
        ...                         # any iterations (lax.scan, a while loop, a closed form)
        return phi
    jax.grad(lambda th: query_loss(solver(th, batch)))(theta)      # iMAML (Rajeswaran et al. 2019)

`proximal_optimality(loss_fn, prox)` is the iMAML condition grad_phi [loss_fn(phi, batch) +
prox/2 |phi - theta0|^2] = 0. `inner_loop(mode="implicit")` uses both.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

__all__ = ["SOLVES", "ImplicitDiffError", "implicit_diff", "proximal_optimality", "sq_distance"]

#: Linear solvers for the backward pass: "cg" (dF/dphi symmetric positive definite, as for the
#: gradient of a strongly convex objective: the proximal condition), "gmres" (any square dF/dphi).
SOLVES = ("cg", "gmres")


class ImplicitDiffError(ValueError):
    """Malformed implicit-differentiation arguments (one line, names what is wrong)."""


def sq_distance(a: Any, b: Any) -> jax.Array:
    """|a - b|^2 summed over the leaves of two pytrees of one structure."""
    return sum(jnp.sum(jnp.square(x - y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def proximal_optimality(loss_fn: Callable[..., jax.Array], prox: float) -> Callable[..., Any]:
    """F(phi, theta0, *args) = grad_phi [loss_fn(phi, *args) + prox/2 |phi - theta0|^2]: zero at
    the minimiser of the proximal inner problem (iMAML's condition). prox > 0."""
    if not prox > 0:
        raise ImplicitDiffError(f"prox (lambda) must be > 0, got {prox}")

    def optimality(phi, theta0, *args):
        return jax.grad(lambda p: loss_fn(p, *args) + 0.5 * prox * sq_distance(p, theta0))(phi)

    return optimality


def _neg(x):
    return x if x.dtype == jax.dtypes.float0 else -x


def implicit_diff(optimality_fn: Callable[..., Any], *, solve: str | Callable = "cg", cg_iters: int = 20,
                  has_aux: bool = False) -> Callable[[Callable], Callable]:
    """Decorator: `solver(theta0, *args) -> phi` differentiated implicitly through
    `optimality_fn(phi, theta0, *args) = 0` (see the module docstring).

    Args:
      optimality_fn: (phi, theta0, *args) -> a pytree like phi, zero at the solver's output.
      solve: "cg", "gmres" (see `SOLVES`) or a callable `(matvec, b) -> x` solving
        matvec(x) = b for pytrees, with matvec(u) = (dF/dphi)^T u.
      cg_iters: iterations of the iterative solve.
      has_aux: the solver returns (phi, aux); aux gets no gradient (its cotangent is dropped).

    Returns:
      a decorator; the decorated solver has the solver's signature and output. Every positional
      input is differentiated (integer arrays get float0 cotangents); close over what should
      not be (hyper-parameters, models). The forward pass runs the solver as is; the gradient is
      exact when its output is a root of `optimality_fn`.
    """
    if not (callable(solve) or solve in SOLVES):
        raise ImplicitDiffError(f"unknown linear solve {solve!r} (known: {', '.join(SOLVES)}, or a callable)")
    if cg_iters < 1:
        raise ImplicitDiffError(f"cg_iters must be >= 1, got {cg_iters}")

    def linear_solve(phi, inputs, v):
        def condition(p):
            return optimality_fn(p, *inputs)

        if solve == "cg":  # symmetric dF/dphi: (dF/dphi)^T u = (dF/dphi) u, a JVP
            _, matvec = jax.linearize(condition, phi)
            return jax.scipy.sparse.linalg.cg(matvec, v, maxiter=cg_iters)[0]
        _, vjp = jax.vjp(condition, phi)

        def matvec(u):
            return vjp(u)[0]

        if solve == "gmres":
            return jax.scipy.sparse.linalg.gmres(matvec, v, maxiter=cg_iters)[0]
        return solve(matvec, v)

    def decorator(solver: Callable) -> Callable:
        @jax.custom_vjp
        def solved(*inputs):
            return solver(*inputs)

        def fwd(*inputs):
            out = solver(*inputs)
            return out, (out[0] if has_aux else out, inputs)

        def bwd(residuals, cotangent):
            phi, inputs = residuals
            v = cotangent[0] if has_aux else cotangent
            u = linear_solve(phi, inputs, v)
            _, vjp_inputs = jax.vjp(lambda *xs: optimality_fn(phi, *xs), *inputs)
            return tuple(jax.tree.map(_neg, vjp_inputs(u)))

        solved.defvjp(fwd, bwd)
        return functools.wraps(solver)(solved)

    return decorator
