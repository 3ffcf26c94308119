"""The exact update closest to -grad L: the closed form against brute-force maximisation over the
family's null-space coordinates (a synthetic least-squares family and a tiny random model), and
the closest member still reproduces the in-context logits."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

from metareason.inner.closest import closest_cosine, closest_in_family
from metareason.inner.implicit import closest_update, implicit_trajectory, implicit_update, patch
from metareason.model import apply
from metareason.model.transformer import mlp_activations
from reference import TINY, random_example, random_params


def _cos(x, v):
    return float(np.vdot(x, v) / (np.linalg.norm(x) * np.linalg.norm(v)))


def _null_basis(X, tol=1e-10):
    """Columns: an orthonormal basis of {n : X n = 0}."""
    _, s, vt = np.linalg.svd(X)
    rank = int(np.sum(s > tol * s.max())) if s.size else 0
    return vt[rank:].T


def _brute_force(x0, bases, v, restarts, seed=0, scale=1.0):
    """max cos(x0 + sum_i B_i Z_i, v) by BFGS over the null coordinates Z_i, from `restarts`
    random starts (and Z = 0). x0, v: lists of blocks [D_i, F_i]; bases: [D_i, n_i]."""
    shapes = [(B.shape[1], x.shape[1]) for B, x in zip(bases, x0)]
    sizes = [a * b for a, b in shapes]
    vf = np.concatenate([b.ravel() for b in v])
    vn = np.linalg.norm(vf)

    def member(z):
        out, i = [], 0
        for B, x, (a, b), n in zip(bases, x0, shapes, sizes):
            out.append(x + B @ z[i:i + n].reshape(a, b))
            i += n
        return out

    def f(z):
        xs = member(z)
        xf = np.concatenate([x.ravel() for x in xs])
        nx = np.linalg.norm(xf)
        cos = xf @ vf / (nx * vn)
        gx = vf / (nx * vn) - cos * xf / nx ** 2  # d cos / d x
        grads, i = [], 0
        for B, (a, b), n in zip(bases, shapes, sizes):
            grads.append((B.T @ gx[i:i + B.shape[0] * b].reshape(B.shape[0], b)).ravel())
            i += B.shape[0] * b
        return -cos, -np.concatenate(grads)

    rng = np.random.default_rng(seed)
    starts = [np.zeros(sum(sizes))] + [scale * rng.normal(size=sum(sizes)) for _ in range(restarts)]
    best = max((-minimize(f, z, jac=True, method="L-BFGS-B", options=dict(maxiter=5000, gtol=1e-12, ftol=1e-15)).fun
                for z in starts))
    return best


def _family(seed, n=3, D=6, F=2):
    rng = np.random.default_rng(seed)
    X, r, v = rng.normal(size=(n, D)), rng.normal(size=(n, F)), rng.normal(size=(D, F))
    return X, r, v


def test_least_squares_family_against_brute_force():
    for seed in range(4):
        X, r, v = _family(seed)
        x0 = np.linalg.pinv(X) @ r
        if _cos(x0, v) <= 0:
            r = -r  # an attained optimum (a > 0)
        x, res = closest_in_family(X, r, v)
        assert np.isfinite(res.t) and res.t > 0
        np.testing.assert_allclose(X @ x, r, atol=1e-10)  # still in the family
        assert _cos(x, v) == pytest.approx(float(res.cos), abs=1e-12)
        brute = _brute_force([np.linalg.pinv(X) @ r], [_null_basis(X)], [v], restarts=20, seed=seed)
        assert float(res.cos) == pytest.approx(brute, abs=1e-5)
        assert float(res.cos) > _cos(np.linalg.pinv(X) @ r, v) + 0.05  # the freedom matters here


def test_degenerate_cases():
    X, r, v = _family(7)
    x0 = np.linalg.pinv(X) @ r
    if _cos(x0, v) > 0:
        r = -r
    # a < 0: the supremum |P v| / |v| is approached as t -> inf, never attained
    x, res = closest_in_family(X, r, v)
    p = v - np.linalg.pinv(X) @ (X @ v)
    assert np.isinf(res.t) and float(res.cos) == pytest.approx(np.linalg.norm(p) / np.linalg.norm(v), rel=1e-12)
    x_perp = np.linalg.pinv(X) @ r
    assert _cos(x_perp + 1e7 * p, v) == pytest.approx(float(res.cos), abs=1e-6)
    assert max(_cos(x_perp + t * p, v) for t in np.geomspace(1e-3, 1e6, 200)) < float(res.cos)
    # c = 0 (r = 0): the family is the null space itself, cos = |P v| / |v| at any t > 0
    _, res0 = closest_in_family(X, np.zeros_like(r), v)
    assert res0.t == 1.0 and float(res0.cos) == pytest.approx(float(res.cos), rel=1e-12)
    # e = 0 (v in the row space): only the norm can change, the pseudo-inverse member is optimal
    w = np.random.default_rng(1).normal(size=(X.shape[0], v.shape[1]))
    v_row = X.T @ w
    r_pos = r if _cos(np.linalg.pinv(X) @ r, v_row) > 0 else -r
    x, res_e = closest_in_family(X, r_pos, v_row)
    assert res_e.t == 0.0 and float(res_e.null_share) < 1e-12
    assert float(res_e.cos) == pytest.approx(_cos(np.linalg.pinv(X) @ r_pos, v_row), rel=1e-10)
    # v = 0: undefined
    assert np.isnan(closest_cosine(1.0, 1.0, 0.0, 0.0).cos)


@pytest.mark.slow
def test_tiny_model_against_brute_force():
    """float64 (so the large null-space terms keep exactness to rounding): the family built
    independently from the patched model's intermediates, maximised by L-BFGS."""
    with jax.enable_x64(True):
        config = dataclasses.replace(TINY["qwen2"], param_dtype="float64", compute_dtype="float64")
        params = random_params(config, seed=3)
        ex = random_example(config, np.random.default_rng(0))
        k, q = 14, len(ex.prompt)
        pos = q + np.flatnonzero(ex.targets) - 1
        base = np.concatenate([ex.prompt, ex.probe])[None]
        ctx = np.concatenate([ex.prompt, ex.trajectory[:k], ex.probe])[None]
        labels = ex.probe[pos - q + 1]

        def loss(p):
            lp = jax.nn.log_softmax(apply(p, base, config=config).logits[0, pos])
            return -jnp.mean(lp[jnp.arange(len(pos)), labels])

        g = jax.grad(loss)(params)["layers"]["mlp"]
        names = ("gate_proj", "up_proj", "down_proj")
        d0 = implicit_update(params, ex, k, config=config).delta
        patched = patch(params, d0)
        inter = apply(patched, base, config=config, return_intermediates=True).intermediates
        x0, bases, v = [], [], []
        for l in range(config.num_layers):
            rows = pos if l == config.num_layers - 1 else np.arange(pos.max() + 1)
            u = np.asarray(inter["mlp_in"][l, 0, rows])
            mp = {n: {"kernel": patched["layers"]["mlp"][n]["kernel"][l]} for n in names}
            h = np.asarray(mlp_activations(jnp.asarray(u), mp))
            for n in names:
                bases.append(_null_basis(h if n == "down_proj" else u))
                x0.append(np.asarray(d0[n][l]))
                v.append(-np.asarray(g[n]["kernel"][l]))
        brute = _brute_force(x0, bases, v, restarts=2, scale=1e-3)
        best = closest_update(params, ex, k, config=config)
        assert np.isfinite(best.t) and best.t == best.t_best
        assert best.cos == pytest.approx(brute, abs=1e-5)
        xf = np.concatenate([x.ravel() for x in x0])
        vf = np.concatenate([x.ravel() for x in v])
        assert best.cos_pinv == pytest.approx(_cos(xf, vf), abs=1e-8)
        assert best.cos > best.cos_pinv + 0.1
        in_ctx = np.asarray(apply(params, ctx, config=config).logits[0, pos + k])
        np.testing.assert_allclose(best.logits_patched, in_ctx, rtol=1e-4, atol=2e-4)  # still exact
        res = implicit_trajectory(params, ex, [0, k], config=config)
        assert res["cos_closest"][1] == pytest.approx(best.cos, abs=1e-8)
        assert res["max_logit_error_closest"][1] < 2e-4
        assert res["norm_closest"][1] == pytest.approx(
            np.linalg.norm(np.concatenate([np.asarray(best.delta[n]).ravel() for n in names])) /
            np.linalg.norm(vf), rel=1e-6)
        # the question-only gradient lies in the span of the question-only run's inputs: at k = 0
        # the family's freedom cannot reach it at all
        assert res["null_share"][0] < 1e-8 and res["cos_closest"][0] == pytest.approx(0, abs=1e-8)
