"""Proposition 2.1 (RaML) against independent float64 numpy references: the network evaluated
directly with the extra token in its context, the orthogonal projector from an SVD, the closed-form
error, numpy lstsq for the softmax fit."""

import jax
import numpy as np
import pytest

from metareason.studies.prop21 import (Prop21Error, attention, init_params, network, predicted_attention_error,
                                     prop21_check, prop21_weights, softmax_check, softmax_lstsq_weights,
                                     softmax_rank1_weights)


def np_params(p):
    return {k: np.asarray(v, np.float64) for k, v in p.items()}


def np_attention(p, x, X, kind="linear", scale=1.0):
    """The attention formula in float64 numpy (keys/values from X only)."""
    p, x, X = np_params(p), np.asarray(x, np.float64), np.asarray(X, np.float64)
    q, k, v = x @ p["wq"], X @ p["wk"], X @ p["wv"]
    if kind == "linear":
        return q @ k.T @ v / (X.shape[0] if scale is None else scale)
    s = q @ k.T / np.sqrt(k.shape[1])
    w = np.exp(s - s.max(-1, keepdims=True))
    return (w / w.sum(-1, keepdims=True)) @ v


def np_network(p, x, X, kind="linear", scale=1.0):
    z = np.asarray(x, np.float64) + np_attention(p, x, X, kind, scale)
    q = np_params(p)
    return z + np.maximum(z @ q["w1"] + q.get("b1", 0.0), 0.0) @ q["w2"] + q.get("b2", 0.0)


def np_projector(A):
    """Orthogonal projector onto the row span of A, from its SVD (float64)."""
    _, s, vt = np.linalg.svd(np.asarray(A, np.float64), full_matrices=False)
    v = vt[s > s.max() * 1e-10]
    return v.T @ v


def setup(seed, n, d, dk=None, m=256, hidden=64):
    """numpy-drawn float32 params (variance 1 / fan_in, with biases), context X [n, d], queries [m, d]."""
    rng = np.random.default_rng(seed)
    dk = dk or d
    shapes = {"wq": (d, dk), "wk": (d, dk), "wv": (d, d), "w1": (d, hidden), "w2": (hidden, d)}
    p = {k: (rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32) for k, s in shapes.items()}
    p["b1"] = (0.1 * rng.standard_normal(hidden)).astype(np.float32)
    p["b2"] = (0.1 * rng.standard_normal(d)).astype(np.float32)
    X = rng.standard_normal((n, d)).astype(np.float32)
    q = rng.standard_normal((m, d)).astype(np.float32)
    return p, X, q, rng


def mixed_token(X, rng, a):
    """cos(a) * (unit vector in the row span of X) + sin(a) * (unit vector orthogonal to it), times sqrt(d)."""
    d = X.shape[1]
    P = np_projector(X)
    u = rng.standard_normal(X.shape[0]) @ X
    u /= np.linalg.norm(u)
    w = (np.eye(d) - P) @ rng.standard_normal(d)
    w /= np.linalg.norm(w)
    return (np.sqrt(d) * (np.cos(a) * u + np.sin(a) * w)).astype(np.float32)


def rel(err, ref):
    return np.abs(err).max() / np.abs(ref).max()


def test_network_matches_numpy():
    p, X, q, _ = setup(0, 8, 32)
    for kind, scale in (("linear", 1.0), ("linear", None), ("linear", 3.5), ("softmax", 1.0)):
        a = np.asarray(attention(p, q, X, kind=kind, scale=scale))
        np.testing.assert_allclose(a, np_attention(p, q, X, kind, scale), rtol=1e-4, atol=1e-4 * np.abs(a).max())
        o = np.asarray(network(p, q, X, kind=kind, scale=scale))
        np.testing.assert_allclose(o, np_network(p, q, X, kind, scale), rtol=1e-4, atol=1e-4 * np.abs(o).max())


@pytest.mark.parametrize("scale", [1.0, None])
def test_exact_in_span_n_lt_d(scale):
    p, X, q, rng = setup(1, 8, 32)
    t0 = (rng.standard_normal(8) @ X).astype(np.float32)        # t0 = alpha @ X, n < d
    new, info = prop21_weights(p, X, t0, scale=scale)
    Xe = np.concatenate([X, t0[None]], 0)
    ref = np_network(p, q, Xe, scale=scale)                      # direct evaluation with the extra token
    base = np_network(p, q, X, scale=scale)
    got = np.asarray(network(new, q, X, scale=scale))
    assert np.abs(ref - base).max() > 0.1 * np.abs(ref).max()    # t0 matters
    assert rel(got - ref, ref) < 2e-5                            # fp32 rounding
    assert rel(got - ref, ref - base) < 2e-4
    assert float(info["span_residual"]) < 1e-5 and int(info["rank"]) == 8
    np.testing.assert_allclose(float(info["gamma"]), 8 / 9 if scale is None else 1.0, rtol=1e-6)
    sv = np.linalg.svd(np.asarray(new["wv"], np.float64) / float(info["gamma"]) - p["wv"], compute_uv=False)
    assert sv[1] < 1e-4 * sv[0]                                   # Wv' / gamma - Wv has rank 1
    r = prop21_check(p, X, t0, q, scale=scale)
    assert r["attn_rel_max"] < 1e-4 and r["out_rel_max"] < 1e-4


def test_exact_in_span_n_ge_d_generic_token():
    p, X, q, rng = setup(2, 40, 32)
    t0 = (3.0 * rng.standard_normal(32)).astype(np.float32)       # generic: X has rank d
    new, info = prop21_weights(p, X, t0)
    ref = np_network(p, q, np.concatenate([X, t0[None]], 0))
    base = np_network(p, q, X)
    got = np.asarray(network(new, q, X))
    assert int(info["rank"]) == 32 and float(info["span_residual"]) < 1e-5
    assert rel(got - ref, ref) < 2e-5 and rel(got - ref, ref - base) < 2e-4
    # Wv' - Wv = G^+ t0^T (t0 Wv): rank 1
    dw = np.asarray(new["wv"], np.float64) - np.asarray(p["wv"], np.float64)
    s = np.linalg.svd(dw, compute_uv=False)
    assert s[1] < 1e-4 * s[0]


def test_matches_paper_formula_on_the_context():
    """X Wv' = X G^+ (G + t0^T t0) Wv (the paper's Wv' = G^+ (G + t0^T t0) Wv, seen through X)."""
    p, X, _, rng = setup(3, 8, 32)
    t0 = rng.standard_normal(32).astype(np.float32)
    new, _ = prop21_weights(p, X, t0)
    Xd, t, wv = X.astype(np.float64), t0[None].astype(np.float64), np.asarray(p["wv"], np.float64)
    G = Xd.T @ Xd
    want = Xd @ np.linalg.pinv(G) @ (G + t.T @ t) @ wv
    np.testing.assert_allclose(X @ np.asarray(new["wv"]), want, atol=2e-5 * np.abs(want).max())


@pytest.mark.parametrize("scale", [2.0, None])
def test_out_of_span_error_is_the_closed_form(scale):
    p, X, q, rng = setup(4, 8, 32)
    a = 0.6
    t0 = mixed_token(X, rng, a)
    new, info = prop21_weights(p, X, t0, scale=scale)
    Xe = np.concatenate([X, t0[None]], 0)
    measured = np_attention(p, q, Xe, scale=scale) - np.asarray(attention(new, q, X, scale=scale), np.float64)
    pd, t = np_params(p), t0[None].astype(np.float64)
    s_ext = X.shape[0] + 1 if scale is None else scale
    closed = q @ pd["wq"] @ pd["wk"].T @ (np.eye(32) - np_projector(X)) @ t.T @ (t @ pd["wv"]) / s_ext
    effect = np_attention(p, q, Xe, scale=scale) - np_attention(p, q, X, scale=scale)
    assert np.abs(closed).max() > 0.1 * np.abs(effect).max()     # clearly nonzero
    np.testing.assert_allclose(measured, closed, rtol=1e-4, atol=1e-4 * np.abs(closed).max())
    np.testing.assert_allclose(np.asarray(predicted_attention_error(p, X, t0, q, scale=scale)), closed,
                               rtol=1e-4, atol=1e-4 * np.abs(closed).max())
    np.testing.assert_allclose(float(info["span_residual"]), np.sin(a), rtol=1e-5)
    r = prop21_check(p, X, t0, q, scale=scale)
    cn = np.linalg.norm(closed, axis=-1)
    np.testing.assert_allclose([r["attn_err_max"], r["pred_err_max"]], cn.max(), rtol=1e-4)
    out_err = np.linalg.norm(np_network(p, q, Xe, scale=scale) - np.asarray(network(new, q, X, scale=scale)), axis=-1)
    np.testing.assert_allclose(r["out_err_max"], out_err.max(), rtol=1e-3)
    assert 0 < r["out_err_max"] <= r["out_bound_max"]
    if scale is not None:  # orthogonal t0 (fixed scale): the construction keeps nothing of it
        r = prop21_check(p, X, mixed_token(X, rng, np.pi / 2), q, scale=scale)
        np.testing.assert_allclose(r["attn_rel_mean"], 1.0, rtol=1e-4)


def test_key_basis_is_exact_iff_the_key_is_in_the_key_span():
    # dk = 16 <= n = 16 < d = 32: t0 outside the token span, but its key is in the span of the 16 keys
    p, X, q, rng = setup(5, 16, 32, dk=16)
    t0 = mixed_token(X, rng, 1.0)
    ref = np_network(p, q, np.concatenate([X, t0[None]], 0))
    base = np_network(p, q, X)
    tok = np.asarray(network(prop21_weights(p, X, t0, basis="token")[0], q, X))
    key = np.asarray(network(prop21_weights(p, X, t0, basis="key")[0], q, X))
    assert rel(tok - ref, ref - base) > 0.1
    assert rel(key - ref, ref - base) < 2e-4
    # dk = 16 > n = 8: the key basis misses (I - P_K) Wk^T t0^T, exactly
    p, X, q, rng = setup(6, 8, 32, dk=16)
    t0 = mixed_token(X, rng, 1.0)
    pd, t = np_params(p), t0[None].astype(np.float64)
    closed = q @ pd["wq"] @ (np.eye(16) - np_projector(X @ pd["wk"])) @ pd["wk"].T @ t.T @ (t @ pd["wv"])
    new, info = prop21_weights(p, X, t0, basis="key")
    measured = np_attention(p, q, np.concatenate([X, t0[None]], 0)) - np.asarray(attention(new, q, X), np.float64)
    assert float(info["key_residual"]) > 0.1
    np.testing.assert_allclose(measured, closed, rtol=1e-4, atol=1e-4 * np.abs(closed).max())


def test_softmax_rank1_exact_for_its_query_only():
    p, X, q, rng = setup(7, 8, 32)
    t0 = rng.standard_normal(32).astype(np.float32)
    Xe = np.concatenate([X, t0[None]], 0)
    ref, base = np_network(p, q, Xe, "softmax"), np_network(p, q, X, "softmax")
    new = softmax_rank1_weights(p, X, t0, q[0])
    got = np.asarray(network(new, q, X, kind="softmax"))
    assert rel(got[0] - ref[0], ref[0]) < 1e-5
    assert rel(got[0] - ref[0], ref[0] - base[0]) < 1e-4
    assert rel(got[1:] - ref[1:], ref[1:] - base[1:]) > 0.1       # not exact for other queries
    r = softmax_check(p, X, t0, q)
    assert r["rank1_out_rel_own"] < 1e-5 and r["rank1_attn_rel_others_mean"] > 0.1


def test_softmax_no_query_independent_wv():
    p, X, q, rng = setup(8, 8, 32)
    t0 = rng.standard_normal(32).astype(np.float32)
    # float64 reference lstsq: rows xbar(x) = softmax weights @ X, targets Attn(x; [X; t0])
    pd, Xd, qd = np_params(p), X.astype(np.float64), q.astype(np.float64)
    s = qd @ pd["wq"] @ (Xd @ pd["wk"]).T / np.sqrt(32)
    w = np.exp(s - s.max(-1, keepdims=True))
    xbar = (w / w.sum(-1, keepdims=True)) @ Xd
    target = np_attention(p, q, np.concatenate([X, t0[None]], 0), "softmax")
    sol = np.linalg.lstsq(xbar, target, rcond=None)[0]
    want = np.linalg.norm(target - xbar @ sol)
    new, resid = softmax_lstsq_weights(p, X, t0, q)
    effect = target - np_attention(p, q, X, "softmax")
    assert want > 0.05 * np.linalg.norm(effect)                    # 256 queries > n = 8: not exact
    np.testing.assert_allclose(np.linalg.norm(np.asarray(resid)), want, rtol=2e-3)
    np.testing.assert_allclose(np.linalg.norm(target - np.asarray(attention(new, q, X, kind="softmax"))), want,
                               rtol=2e-3)
    assert softmax_check(p, X, t0, q)["lstsq_attn_rel_mean"] > 0.05
    # with no more queries than context tokens, a query-independent fit is exact (the gap is real)
    assert softmax_check(p, X, t0, q[:6])["lstsq_attn_rel_max"] < 1e-4


def test_bad_inputs():
    p, X, q, _ = setup(9, 8, 32)
    t0 = np.ones(32, np.float32)
    with pytest.raises(Prop21Error, match="X must be"):
        prop21_weights(p, X[0], t0)
    with pytest.raises(Prop21Error, match="t0 must be"):
        prop21_weights(p, X, np.ones(31, np.float32))
    with pytest.raises(Prop21Error, match="queries must be"):
        prop21_check(p, X, t0, q[:, :5])
    with pytest.raises(Prop21Error, match="params must be a dict"):
        prop21_weights({k: v for k, v in p.items() if k != "wv"}, X, t0)
    with pytest.raises(Prop21Error, match=r"params\['wv'\]"):
        prop21_weights({**p, "wv": np.ones((32, 31), np.float32)}, X, t0)
    with pytest.raises(Prop21Error, match="wq and wk"):
        network({**p, "wk": np.ones((32, 3), np.float32)}, q, X)
    with pytest.raises(Prop21Error, match="unknown basis"):
        prop21_weights(p, X, t0, basis="value")
    with pytest.raises(Prop21Error, match="unknown attention kind"):
        network(p, q, X, kind="relu")
    with pytest.raises(Prop21Error, match="scale must be"):
        prop21_check(p, X, t0, q, scale=0.0)
    with pytest.raises(Prop21Error, match="one query"):
        softmax_rank1_weights(p, X, t0, q)
    with pytest.raises(Prop21Error, match=">= 2 queries"):
        softmax_check(p, X, t0, q[:1])
    assert issubclass(Prop21Error, ValueError)


def test_init_params_shapes():
    p = init_params(jax.random.PRNGKey(0), 6, 3, 5, bias=False)
    assert {k: v.shape for k, v in p.items()} == {"wq": (6, 3), "wk": (6, 3), "wv": (6, 6), "w1": (6, 5), "w2": (5, 6)}
    assert 0.2 < float(np.std(np.asarray(p["wv"]))) * np.sqrt(6) < 5
