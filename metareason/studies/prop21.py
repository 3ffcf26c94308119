"""RaML Proposition 2.1 made precise: attending to one extra token t_0 as a weight change.

The network (row vectors, no norm): one attention layer with residual, then a 2-layer ReLU FFN
with residual,

    z = x + Attn(x; X),    out = z + relu(z W1 + b1) W2 + b2           (`network`; biases optional)

for queries x: [m, d] reading a context X: [n, d] (keys and values come from X only).

Linear (unnormalised) attention (`kind="linear"`):

    Attn(x; X) = (x Wq)(X Wk)^T (X Wv) / s = x Wq Wk^T (X^T X) Wv / s

with a fixed scale s (`scale`, a float, the same with and without t_0), or `scale=None` for the
mean over keys, s = the context length (n without t_0, n + 1 with it: `prop21_weights` then folds
the factor n / (n + 1) into W_v'). Appending t_0: [1, d] to X changes the key-value memory from
Wk^T G Wv to Wk^T (G + t_0^T t_0) Wv, G = X^T X. `prop21_weights` keeps Wq, Wk, W1, W2 and sets

    Wv' = Wv + X^+ c (t_0 Wv)        (rank 1; X^+ the pseudo-inverse, c: [n, 1])

where c writes t_0 in the context basis. With `basis="token"` (the paper's construction),
c = X^{+T} t_0^T, so X^T c = P t_0^T with P = X^+ X the orthogonal projector onto the row span of
X, and X^+ c = G^+ t_0^T: Wv' = Wv + G^+ t_0^T t_0 Wv, which gives X Wv' = X G^+ (G + t_0^T t_0) Wv
(the paper's Wv' = G^+ (G + t_0^T t_0) Wv differs from it only by (I - P) Wv, which X never
reads). Then, for EVERY query x at once,

    Attn(x; [X; t_0]) - Attn'(x; X) = x Wq Wk^T (I - P) t_0^T (t_0 Wv) / s            (closed form)

so the weights are exact when t_0 is in the row span of X (always when X has rank d), and
otherwise miss exactly the component (I - P) t_0 (`predicted_attention_error`; the FFN then
propagates the error non-linearly, bounded by |e| (1 + |W1|_2 |W2|_2) per query). With
`basis="key"`, c solves (X Wk)^T c = Wk^T t_0^T in least squares: the key of t_0 is written in the
span of the context KEYS, and the error is x Wq (I - P_K) Wk^T t_0^T (t_0 Wv) / s, P_K the
projector onto the row span of K = X Wk. When Wq has full column rank (d >= dk) a query-independent
Wv' (Wq, Wk fixed) that is exact for every query exists iff t_0 Wv = 0 or Wk^T t_0^T lies in the
column span of Wk^T X^T: the key basis is exact whenever any Wv' is, e.g. for t_0 outside the token
span when rank(X Wk) = dk (n >= dk). The token span is the condition for dk = d, Wk invertible.

Softmax attention (`kind="softmax"`): Attn(x; X) = softmax(x Wq (X Wk)^T / sqrt(dk)) X Wv
(`scale` unused). The attention weights renormalise per query, so a query-independent Wv' (Wq, Wk
fixed) must solve xbar(x) Wv' = Attn(x; [X; t_0]) for every query, xbar(x) of rank <= n: it
exists for m <= n generic queries, and (checked numerically, not proven) not for m > n.
`softmax_lstsq_weights` fits the best one over a set of queries (least squares on the attention
outputs, reported by `softmax_check`), while the query-specific rank-1 update of Dherin et al.
(2025), Wv' = Wv + xbar^T (a - xbar Wv) / |xbar|^2 with xbar = softmax(...) X the attention-weighted
mean of X for that query and a its attention output with t_0 (`softmax_rank1_weights`), is exact
for that query.

Params: {"wq": [d, dk], "wk": [d, dk], "wv": [d, d], "w1": [d, h], "w2": [h, d]} and optionally
"b1": [h], "b2": [d] (`init_params`).
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["Prop21Error", "KINDS", "BASES", "init_params", "attention", "network", "prop21_weights",
           "predicted_attention_error", "prop21_check", "softmax_rank1_weights", "softmax_lstsq_weights",
           "softmax_check", "prop21_on_model"]

KINDS = ("linear", "softmax")
BASES = ("token", "key")
_REQUIRED = ("wq", "wk", "wv", "w1", "w2")


class Prop21Error(ValueError):
    """Malformed Proposition-2.1 inputs (one line, names what is wrong)."""


def init_params(key: jax.Array, d: int, dk: int, hidden: int, *, bias: bool = True) -> dict[str, jax.Array]:
    """Gaussian weights with variance 1 / fan_in: wq, wk [d, dk], wv [d, d], w1 [d, hidden],
    w2 [hidden, d]; b1 [hidden], b2 [d] (scaled 0.1) when `bias`."""
    return _init(key, d, dk, hidden, bias)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _init(key: jax.Array, d: int, dk: int, hidden: int, bias: bool) -> dict[str, jax.Array]:
    shapes = {"wq": (d, dk), "wk": (d, dk), "wv": (d, d), "w1": (d, hidden), "w2": (hidden, d)}
    if bias:
        shapes.update(b1=(hidden,), b2=(d,))
    sizes = [math.prod(s) for s in shapes.values()]
    flat = jax.random.normal(key, (sum(sizes),), jnp.float32)       # one draw: one small compile
    parts = jnp.split(flat, list(itertools.accumulate(sizes))[:-1])
    return {k: part.reshape(s) * (0.1 if k[0] == "b" else 1.0 / math.sqrt(s[0]))
            for (k, s), part in zip(shapes.items(), parts)}


def _check_params(params: Any) -> tuple[int, int, int]:
    if not isinstance(params, dict) or any(k not in params for k in _REQUIRED):
        raise Prop21Error(f"params must be a dict with keys {', '.join(_REQUIRED)} (+ optional b1, b2)")
    s = {k: tuple(jnp.shape(v)) for k, v in params.items()}
    if len(s["wq"]) != 2 or s["wq"] != s["wk"]:
        raise Prop21Error(f"wq and wk must both be [d, dk], got {s['wq']} and {s['wk']}")
    d, dk = s["wq"]
    h = s["w1"][1] if len(s["w1"]) == 2 else -1
    want = {"wv": (d, d), "w1": (d, h), "w2": (h, d), "b1": (h,), "b2": (d,)}
    for k, shape in want.items():
        if k in s and s[k] != shape:
            raise Prop21Error(f"params[{k!r}] must be {list(shape)} (d={d}, hidden={h}), got {list(s[k])}")
    return d, dk, h


def _check_rows(name: str, a: Any, d: int) -> jax.Array:
    a = jnp.asarray(a, jnp.float32)
    if a.ndim != 2 or a.shape[1] != d or a.shape[0] < 1:
        raise Prop21Error(f"{name} must be [rows >= 1, d={d}], got {list(a.shape)}")
    return a


def _check_token(t0: Any, d: int) -> jax.Array:
    t0 = jnp.asarray(t0, jnp.float32)
    if t0.shape not in ((d,), (1, d)):
        raise Prop21Error(f"t0 must be [d={d}] or [1, d={d}], got {list(t0.shape)}")
    return t0.reshape(1, d)


def _scale(scale: float | None, n: int) -> float:
    if scale is None:
        return float(n)
    if not scale > 0:
        raise Prop21Error(f"scale must be > 0 or None (mean over keys), got {scale}")
    return float(scale)


def attention(params: dict, x: jax.Array, X: jax.Array, *, kind: str = "linear",
              scale: float | None = 1.0) -> jax.Array:
    """Attn(x; X): float[m, d] for queries x [m, d] and context X [n, d] (see the module docstring).
    scale: linear attention's fixed divisor s (None: s = n); unused by softmax (logits / sqrt(dk))."""
    d, dk, _ = _check_params(params)
    if kind not in KINDS:
        raise Prop21Error(f"unknown attention kind {kind!r} (known: {', '.join(KINDS)})")
    x, X = _check_rows("x", x, d), _check_rows("X", X, d)
    return _attention(params, x, X, kind, _scale(scale, X.shape[0]) if kind == "linear" else 1.0)


@functools.partial(jax.jit, static_argnums=(3,))
def _attention(params: dict, x: jax.Array, X: jax.Array, kind: str, s: float) -> jax.Array:
    q, k, v = x @ params["wq"], X @ params["wk"], X @ params["wv"]
    if kind == "linear":
        return (q @ k.T) @ v / s
    return jax.nn.softmax(q @ k.T / jnp.sqrt(float(q.shape[1])), axis=-1) @ v


@jax.jit
def _ffn_residual(params: dict, z: jax.Array) -> jax.Array:
    hdn = jax.nn.relu(z @ params["w1"] + params.get("b1", 0.0))
    return z + hdn @ params["w2"] + params.get("b2", 0.0)


def network(params: dict, x: jax.Array, X: jax.Array, *, kind: str = "linear",
            scale: float | None = 1.0) -> jax.Array:
    """out = z + relu(z W1 + b1) W2 + b2, z = x + Attn(x; X): float[m, d] (x [m, d], X [n, d])."""
    return _ffn_residual(params, jnp.asarray(x, jnp.float32) + attention(params, x, X, kind=kind, scale=scale))


def _coefficients(params: dict, X: jax.Array, t0: jax.Array, basis: str) -> tuple[jax.Array, jax.Array]:
    """c [n, 1] (t_0 in the context basis) and the key residual r [1, dk] = t_0 Wk - c^T X Wk."""
    wk = params["wk"]
    if basis == "token":
        c = jnp.linalg.pinv(X).T @ t0.T                       # [n, 1]: X^T c = P t_0^T
        r = (t0 - c.T @ X) @ wk                               # ((I - P) t_0) Wk
    else:
        K = X @ wk
        c = jnp.linalg.pinv(K.T) @ (t0 @ wk).T                # [n, 1]: K^T c = P_K Wk^T t_0^T
        r = t0 @ wk - c.T @ K
    return c, r


def prop21_weights(params: dict, X: jax.Array, t0: jax.Array, *, basis: str = "token",
                   scale: float | None = 1.0) -> tuple[dict, dict]:
    """The linear-attention weights that absorb t_0 into W_v (Wq, Wk, FFN unchanged).

    Args:
      params: the network's params (module docstring).
      X: float[n, d] the context; t0: float[d] or [1, d] the extra token.
      basis: "token" (the paper's: t_0 projected on the row span of X) or "key" (t_0's key on the
        span of the context keys; exact whenever any query-independent Wv' is).
      scale: the linear attention's fixed divisor; None = mean over keys (n, resp. n + 1 with t_0),
        accounted for by the factor n / (n + 1) on Wv'.

    Returns:
      (params', info): params' with wv' = gamma (Wv + X^+ c (t_0 Wv)), gamma = n / (n + 1) for
      scale None else 1; info: span_residual |(I - P) t_0| / |t_0| (P the projector onto the row
      span of X), key_residual |r| / |t_0 Wk| (r the part of t_0's key the construction misses),
      coeffs float[n] (c), rank (numerical rank of X), gamma.
    """
    d, _, _ = _check_params(params)
    X, t0 = _check_rows("X", X, d), _check_token(t0, d)
    _scale(scale, X.shape[0])
    if basis not in BASES:
        raise Prop21Error(f"unknown basis {basis!r} (known: {', '.join(BASES)})")
    n = X.shape[0]
    return _weights(params, X, t0, basis, n / (n + 1) if scale is None else 1.0)


@functools.partial(jax.jit, static_argnums=(3,))
def _weights(params: dict, X: jax.Array, t0: jax.Array, basis: str, gamma: float) -> tuple[dict, dict]:
    c, r = _coefficients(params, X, t0, basis)
    xpinv = jnp.linalg.pinv(X)                                # [d, n]
    new = dict(params)
    new["wv"] = gamma * (params["wv"] + (xpinv @ c) @ (t0 @ params["wv"]))
    out_of_span = t0 - (t0 @ xpinv) @ X
    safe = lambda a, b: jnp.where(b > 0, a / jnp.where(b > 0, b, 1.0), 0.0)  # noqa: E731
    info = {"span_residual": safe(jnp.linalg.norm(out_of_span), jnp.linalg.norm(t0)),
            "key_residual": safe(jnp.linalg.norm(r), jnp.linalg.norm(t0 @ params["wk"])),
            "coeffs": c[:, 0], "rank": jnp.linalg.matrix_rank(X), "gamma": gamma}
    return new, info


def predicted_attention_error(params: dict, X: jax.Array, t0: jax.Array, queries: jax.Array, *,
                              basis: str = "token", scale: float | None = 1.0) -> jax.Array:
    """Closed form of Attn(x; [X; t_0]) - Attn'(x; X) under `prop21_weights`: float[m, d],
    x Wq r^T (t_0 Wv) / s_ext with r = ((I - P) t_0) Wk for basis "token" (the key of t_0's
    out-of-span part), (I - P_K) applied to t_0 Wk for "key"; s_ext = scale (n + 1 for None)."""
    d, _, _ = _check_params(params)
    X, t0, x = _check_rows("X", X, d), _check_token(t0, d), _check_rows("queries", queries, d)
    if basis not in BASES:
        raise Prop21Error(f"unknown basis {basis!r} (known: {', '.join(BASES)})")
    return _predicted(params, X, t0, x, basis, _scale(scale, X.shape[0] + 1))


@functools.partial(jax.jit, static_argnums=(4,))
def _predicted(params: dict, X: jax.Array, t0: jax.Array, x: jax.Array, basis: str, s_ext: float) -> jax.Array:
    _, r = _coefficients(params, X, t0, basis)
    return (x @ params["wq"] @ r.T) @ (t0 @ params["wv"]) / s_ext


def _stats(err: jax.Array, ref: jax.Array, prefix: str) -> dict[str, jax.Array]:
    e = jnp.linalg.norm(err, axis=-1)
    r = jnp.maximum(jnp.linalg.norm(ref, axis=-1).mean(), jnp.finfo(jnp.float32).tiny)
    return {f"{prefix}_err_max": e.max(), f"{prefix}_err_mean": e.mean(),
            f"{prefix}_rel_max": e.max() / r, f"{prefix}_rel_mean": e.mean() / r, f"{prefix}_effect_mean": r}


def prop21_check(params: dict, X: jax.Array, t0: jax.Array, queries: jax.Array, *, basis: str = "token",
                 scale: float | None = 1.0) -> dict[str, Any]:
    """Measures `prop21_weights` (linear attention) against the network run on [X; t_0].

    Args: params, X [n, d], t0 [d] or [1, d], queries [m, d], basis, scale (`prop21_weights`).

    Returns a dict of scalars (norms are per query, over d; "_rel" divides the max / mean error
    norm by the mean over queries of the effect of t_0, |f([X; t_0]) - f(X)|: about 1 means the
    weights captured nothing of t_0):
      attn_err_max / _mean, attn_rel_max / _mean: |Attn'(x; X) - Attn(x; [X; t_0])|;
      out_err_max / _mean, out_rel_max / _mean: the same at the network output (after the FFN);
      attn_effect_mean / out_effect_mean: mean |f([X; t_0]) - f(X)| (the "_rel" denominators);
      out_norm_rel_max: max |out' - out_ext| / mean |out_ext| (over queries);
      pred_err_max / pred_err_mean: the closed-form attention error's norms;
      pred_gap_max: max |measured error vector - closed form| (entrywise);
      out_bound_max: max over queries of |e_attn| (1 + |W1|_2 |W2|_2), a bound on out_err;
      span_residual, key_residual, rank (from `prop21_weights`).
    """
    d, _, _ = _check_params(params)
    X, t0, x = _check_rows("X", X, d), _check_token(t0, d), _check_rows("queries", queries, d)
    predicted_attention_error(params, X, t0, x[:1], basis=basis, scale=scale)   # validates basis, scale
    res = _check(params, X, t0, x, basis, scale)
    return {k: float(v) if k != "rank" else int(v) for k, v in res.items()}


def _check(params: dict, X: jax.Array, t0: jax.Array, x: jax.Array, basis: str, scale: float | None) -> dict:
    n = X.shape[0]
    new, info = _weights(params, X, t0, basis, n / (n + 1) if scale is None else 1.0)
    Xe = jnp.concatenate([X, t0], axis=0)
    a_base = _attention(params, x, X, "linear", _scale(scale, n))
    a_ext = _attention(params, x, Xe, "linear", _scale(scale, n + 1))
    a_new = _attention(new, x, X, "linear", _scale(scale, n))
    o_base, o_ext, o_new = (_ffn_residual(p, x + a) for p, a in ((params, a_base), (params, a_ext), (new, a_new)))
    pred = _predicted(params, X, t0, x, basis, _scale(scale, n + 1))
    e_attn = a_ext - a_new
    res = {**_stats(e_attn, a_ext - a_base, "attn"), **_stats(o_ext - o_new, o_ext - o_base, "out")}
    res["out_norm_rel_max"] = _stats(o_ext - o_new, o_ext, "o")["o_rel_max"]
    pn = jnp.linalg.norm(pred, axis=-1)
    lip = 1.0 + jnp.linalg.norm(params["w1"], 2) * jnp.linalg.norm(params["w2"], 2)
    res.update(pred_err_max=pn.max(), pred_err_mean=pn.mean(), pred_gap_max=jnp.abs(e_attn - pred).max(),
               out_bound_max=(jnp.linalg.norm(e_attn, axis=-1) * lip).max(),
               span_residual=info["span_residual"], key_residual=info["key_residual"], rank=info["rank"])
    return res


def _softmax_weights(params: dict, x: jax.Array, X: jax.Array) -> jax.Array:
    dk = params["wq"].shape[1]
    return jax.nn.softmax((x @ params["wq"]) @ (X @ params["wk"]).T / jnp.sqrt(float(dk)), axis=-1)


def softmax_rank1_weights(params: dict, X: jax.Array, t0: jax.Array, x: jax.Array) -> dict:
    """Query-specific rank-1 update for softmax attention (Dherin et al. 2025): params with
    wv' = Wv + xbar^T (a - xbar Wv) / |xbar|^2, xbar = softmax(x Wq (X Wk)^T / sqrt(dk)) X [1, d],
    a = Attn(x; [X; t_0]) [1, d]. Exact at the attention and network output for this x [d] or
    [1, d] (as long as xbar != 0); other queries are not matched."""
    d, _, _ = _check_params(params)
    X, t0 = _check_rows("X", X, d), _check_token(t0, d)
    x = jnp.asarray(x, jnp.float32)
    x = _check_rows("x", x.reshape(1, -1) if x.ndim == 1 else x, d)
    if x.shape[0] != 1:
        raise Prop21Error(f"softmax_rank1_weights takes one query, got {x.shape[0]}")
    return _rank1(params, X, t0, x)


@jax.jit
def _rank1(params: dict, X: jax.Array, t0: jax.Array, x: jax.Array) -> dict:
    xbar = _softmax_weights(params, x, X) @ X
    target = _attention(params, x, jnp.concatenate([X, t0], 0), "softmax", 1.0)
    new = dict(params)
    new["wv"] = params["wv"] + xbar.T @ (target - xbar @ params["wv"]) / jnp.sum(xbar * xbar)
    return new


def softmax_lstsq_weights(params: dict, X: jax.Array, t0: jax.Array, queries: jax.Array) -> tuple[dict, jax.Array]:
    """The best query-independent Wv' for softmax attention over `queries` [m, d] (Wq, Wk fixed):
    argmin_Wv' sum_x |xbar(x) Wv' - Attn(x; [X; t_0])|^2 by lstsq (min-norm). Returns (params',
    residual float[m, d] of that fit, i.e. Attn(x; [X; t_0]) - Attn'(x; X))."""
    d, _, _ = _check_params(params)
    X, t0, x = _check_rows("X", X, d), _check_token(t0, d), _check_rows("queries", queries, d)
    return _lstsq(params, X, t0, x)


@jax.jit
def _lstsq(params: dict, X: jax.Array, t0: jax.Array, x: jax.Array) -> tuple[dict, jax.Array]:
    xbar = _softmax_weights(params, x, X) @ X                # [m, d], rank <= n
    target = _attention(params, x, jnp.concatenate([X, t0], 0), "softmax", 1.0)
    wv, *_ = jnp.linalg.lstsq(xbar, target)
    new = dict(params)
    new["wv"] = wv
    return new, target - xbar @ wv


def softmax_check(params: dict, X: jax.Array, t0: jax.Array, queries: jax.Array) -> dict[str, float]:
    """Softmax attention, queries [m, d] (m >= 2): the best query-independent Wv' (lstsq over all m
    queries) and the rank-1 update built for queries[0].

    Returns ("_rel": error norm over the mean norm of t_0's effect, as in `prop21_check`):
    lstsq_attn_rel_max / _mean, lstsq_out_rel_max (at the network output) of the lstsq fit;
    rank1_attn_err_own / rank1_out_err_own (absolute, query 0), rank1_out_rel_own (/ |out_ext|);
    rank1_attn_rel_others_mean (queries 1..m-1).
    """
    d, _, _ = _check_params(params)
    X, t0, x = _check_rows("X", X, d), _check_token(t0, d), _check_rows("queries", queries, d)
    if x.shape[0] < 2:
        raise Prop21Error(f"softmax_check needs >= 2 queries, got {x.shape[0]}")
    return {k: float(v) for k, v in _softmax_check(params, X, t0, x).items()}


def _softmax_check(params: dict, X: jax.Array, t0: jax.Array, x: jax.Array) -> dict:
    Xe = jnp.concatenate([X, t0], 0)
    att = lambda p, ctx: _attention(p, x, ctx, "softmax", 1.0)  # noqa: E731
    a_base, a_ext = att(params, X), att(params, Xe)
    o_base, o_ext = _ffn_residual(params, x + a_base), _ffn_residual(params, x + a_ext)
    fit, _ = _lstsq(params, X, t0, x)
    a_fit = att(fit, X)
    ls_a = _stats(a_ext - a_fit, a_ext - a_base, "a")
    ls_o = _stats(o_ext - _ffn_residual(fit, x + a_fit), o_ext - o_base, "o")
    r1 = _rank1(params, X, t0, x[:1])
    a_r1 = att(r1, X)
    e_a = a_ext - a_r1
    e_o = o_ext - _ffn_residual(r1, x + a_r1)
    others = _stats(e_a[1:], (a_ext - a_base)[1:], "a")
    res = {"lstsq_attn_rel_max": ls_a["a_rel_max"], "lstsq_attn_rel_mean": ls_a["a_rel_mean"],
           "lstsq_out_rel_max": ls_o["o_rel_max"],
           "rank1_attn_err_own": jnp.linalg.norm(e_a[0]), "rank1_out_err_own": jnp.linalg.norm(e_o[0]),
           "rank1_out_rel_own": jnp.linalg.norm(e_o[0]) / jnp.linalg.norm(o_ext[0]),
           "rank1_attn_rel_others_mean": others["a_rel_mean"]}
    return res


def prop21_on_model(params: Any, example, *, config) -> dict[str, Any]:
    """Proposition 2.1 on the model's first block, in the proposition's setting (one attention
    layer read as linear attention, no rotary embedding or biases).

    X: [n, D] the question's layer-0 inputs (normalised embeddings); t0: each trajectory token's.
    The construction W_v' = G^+ (G + t0^T t0) W_v (G = X^T X) is exact iff t0 lies in the row span
    of X; otherwise, for the query x (the question's last token), head h misses
    e_h = (x W_q,h)(t0_perp W_k,h)^T (t0 W_v,h) of the token's contribution
    c_h = (x W_q,h)(t0 W_k,h)^T (t0 W_v,h), t0_perp = (I - P) t0. Returns "span_residual":
    |t0_perp| / |t0| per token and "relative_error": mean over tokens of |sum_h e_h W_o,h| /
    |sum_h c_h W_o,h| (the fraction of the token's attention-output contribution the
    construction cannot reproduce)."""
    import numpy as np

    from metareason.model import rms_norm
    layer0 = jax.tree.map(lambda p: np.asarray(p[0], np.float64), params["layers"])
    emb = np.asarray(params["embed_tokens"]["embedding"], np.float32)
    scale = np.asarray(params["layers"]["input_layernorm"]["scale"][0], np.float32)
    norm = lambda ids: np.asarray(rms_norm(emb[np.asarray(ids)], scale, config.rms_norm_eps), np.float64)  # noqa
    X, t0 = norm(example.prompt), norm(example.trajectory)
    if len(t0) == 0:
        return {"span_residual": [], "relative_error": math.nan}
    u, sv, _ = np.linalg.svd(X.T, full_matrices=False)
    basis = u[:, sv > sv.max() * 1e-10]                       # [D, r] orthonormal row-span basis
    perp = t0 - (t0 @ basis) @ basis.T
    attn = layer0["self_attn"]
    G = config.num_heads // config.num_kv_heads
    wq = attn["q_proj"]["kernel"]                             # [D, H, Dh]
    wk = np.repeat(attn["k_proj"]["kernel"], G, axis=1)       # [D, H, Dh] (GQA: each query head's kv)
    wv = np.repeat(attn["v_proj"]["kernel"], G, axis=1)
    wo = attn["o_proj"]["kernel"]                             # [H, Dh, D]
    a = np.einsum("d,dhe->he", X[-1], wq)
    v = np.einsum("td,dhe->the", t0, wv)
    score = np.einsum("he,td,dhe->th", a, t0, wk)
    score_perp = np.einsum("he,td,dhe->th", a, perp, wk)
    c = np.einsum("th,the,hed->td", score, v, wo)
    e = np.einsum("th,the,hed->td", score_perp, v, wo)
    rel = np.linalg.norm(e, axis=-1) / np.maximum(np.linalg.norm(c, axis=-1), 1e-30)
    return {"span_residual": (np.linalg.norm(perp, axis=-1) / np.linalg.norm(t0, axis=-1)).tolist(),
            "relative_error": float(rel.mean()), "question_rank": int(basis.shape[1])}
