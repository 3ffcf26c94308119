"""Exact implicit weight updates of trajectory tokens (Dherin et al. 2025, "Learning without
training", with the residual stream handled as in Innocenti & Achour 2025).

A block computes mid = h + Attn(h); out = mid + MLP(norm(mid)) with a SwiGLU MLP
MLP(u) = (silu(u W_gate) * (u W_up)) W_down. Take a question, a trajectory prefix t_<=k, and the
probe (answer template + answer). The in-context run reads [question, t_<=k, probe]; the
question-only run reads [question, probe]. At the Q probe positions whose logits score the
answer, block l of the question-only run sees (mid_0, u_0 = norm(mid_0)) where the in-context run
sees (mid_C, u_C). The rank-<=Q updates

    dW_gate = U_0^+ (U_C - U_0) W_gate,   dW_up = U_0^+ (U_C - U_0) W_up,
    dW_down = H_C^+ (Mid_C - Mid_0),      H_C = silu(U_C W_gate) * (U_C W_up)

(U_0: [Q, D] rows u_0, ^+ the Moore-Penrose pseudo-inverse; for Q = 1 this is Dherin et al.'s
dW = (W dA) A(x)^T / |A(x)|^2) make the patched block's output at those positions equal the
in-context output exactly (when U_0 and H_C have full row rank, Q <= D). Applied block by block
(block l's U_0 read from the already patched run), the question-only model with weights
W + dW(t_<=k) reproduces the in-context logits at the answer positions to rounding: the
trajectory prefix *is* a weight update. dW(t_<=k) - dW(t_<k) is the literal pseudo-gradient step
of trajectory token k, which `implicit_trajectory` sets beside the true gradient of the
question-only answer loss with respect to the same weights.

The closest exact update. The pseudo-inverse member is one of many exact updates. Let layer l's
constraint rows X_l be the MLP inputs u (for gate/up) and the patched activations h (for down) of
the question-only run patched by the update at every position up to the last scored one (l < L-1)
and at the scored positions only (the last layer, whose other positions nothing reads). Any
N_l with X_l N_l = 0 added to a kernel leaves the patched run unchanged at every position that
reaches the answer logits, in this layer and (through attention) in every later one, so

    dW0 + S,  S = {N : X_l N_l = 0 for every layer and kernel}

is an affine family of exact updates (a subset of all exact ones: null-space terms of the
scored rows alone, X_l restricted to the Q scored positions, would also move the other
positions and with them the next layers' inputs, so they stay exact only if the later layers
are recomputed; the family here is the largest affine one that needs no recomputation).
`metareason.inner.closest` maximises the cosine with -grad L over it in closed form (jointly
over all kernels, the cosine of the concatenated vector): the maximiser is
x_perp + t* P_S(-g). `closest_update` returns it; `implicit_trajectory` reports its cosine
beside the pseudo-inverse member's.

The weights are the "mlp" selection of `metareason.inner.trainable_mask` (each layer's
gate/up/down kernels, `WEIGHTS`): the true gradient set beside the update is taken over them.
Our transformer only: `config` is a `ModelConfig` or a `CausalLM` wrapping one (`.config` set);
the update reads each block's residual stream and MLP input, which the protocol's logits-only
`apply` does not expose, so any other model gets a one-line `ImplicitError`.

Axes: N context tokens (prompt + trajectory, padded), A probe tokens (padded), Q scored probe
positions (padded), M cuts (padded), L layers, D hidden, F MLP width.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from metareason.inner.closest import closest_cosine
from metareason.inner.masks import leaf_path, trainable_mask
from metareason.inner.objectives import ExampleError, Prepared, answer_loss, prepare, splice, token_nll
from metareason.model import ModelConfig, apply, rms_norm
from metareason.model.protocol import CausalLM, as_causal_lm
from metareason.model.rope import inverse_frequencies
from metareason.model.transformer import attention_block, mlp, mlp_activations
from metareason.sample.batched import round_up

__all__ = ["WEIGHTS", "ImplicitError", "ImplicitUpdate", "ClosestUpdate", "implicit_update", "closest_update",
           "implicit_trajectory", "patch"]

#: The weights the implicit update changes, per layer: layers/mlp/<name>/kernel.
WEIGHTS = ("gate_proj", "up_proj", "down_proj")


#: Malformed inputs (one line, names what is wrong); the same class as `objectives.ExampleError`.
ImplicitError = ExampleError


class ImplicitUpdate(NamedTuple):
    """delta: {"gate_proj": [L, D, F], "up_proj": [L, D, F], "down_proj": [L, F, D]}, the update
    of each layer's MLP kernels; logits_in_context / logits_patched: float32[Q, V] at the scored
    positions of [question, t_<=k, probe] with W, and of [question, probe] with W + delta."""

    delta: dict[str, jax.Array]
    logits_in_context: jax.Array
    logits_patched: jax.Array


class ClosestUpdate(NamedTuple):
    """The exact update closest in direction to -grad L (module docstring). delta: as in
    `ImplicitUpdate` (the member at t); logits_in_context / logits_patched: float32[Q, V] (the
    patched run under W + delta); cos: its cosine with -g (at t* the family's maximum);
    cos_pinv: the pseudo-inverse member's; t: the step along P_S(-g) (t_best: the optimum, inf
    when not attained); null_share: |P_S g| / |g|."""

    delta: dict[str, jax.Array]
    logits_in_context: jax.Array
    logits_patched: jax.Array
    cos: float
    cos_pinv: float
    t: float
    t_best: float
    null_share: float


def patch(params: dict[str, Any], delta: dict[str, jax.Array]) -> dict[str, Any]:
    """params with each layer's MLP kernels moved by delta (see `ImplicitUpdate`)."""
    mlp_p = dict(params["layers"]["mlp"])
    for name, d in delta.items():
        k = mlp_p[name]["kernel"]
        mlp_p[name] = dict(mlp_p[name], kernel=(k + d.astype(k.dtype)))
    return dict(params, layers=dict(params["layers"], mlp=mlp_p))


def _update_one(params, ex: Prepared, cut, *, config, grad=None):
    """The implicit update for the context prefix ex.context[:cut] (fixed shapes).

    grad: None, or the gradient's MLP kernels {name: [L, ...]}; then also returns, per kernel
    {name: [L, ...]}, (P_S grad, P_S delta): their projections onto the null space S of each
    layer's exactness constraints (`_constraint_rows`)."""
    cdt = jnp.dtype(config.compute_dtype)
    qidx, valid = ex.qidx, ex.qvalid[:, None]
    ctx_tokens = splice(ex.context, cut, ex.probe)[None]
    out = apply(params, ctx_tokens, config=config, return_intermediates=True)
    inter = out.intermediates
    cpos = cut + qidx
    mid_c = (inter["residual"] + inter["attn_out"])[:, 0, cpos]  # [L, Q, D]
    u_c = inter["mlp_in"][:, 0, cpos]
    logits_c = out.logits[0, cpos]

    base_tokens = splice(ex.context, ex.prompt_length, ex.probe)[None]
    bpos = ex.prompt_length + qidx
    positions = jnp.arange(base_tokens.shape[1], dtype=jnp.int32)[None]
    inv_freq = inverse_frequencies(config)
    layers = jax.tree.map(lambda p: p.astype(cdt), params["layers"])
    eps = config.rms_norm_eps
    L = config.num_layers
    pos = positions[0]
    scored = jnp.any((pos[:, None] == bpos[None, :]) & ex.qvalid[None, :], axis=1)  # [S]
    upto = pos <= jnp.max(jnp.where(ex.qvalid, bpos, 0))

    def body(h, xs):
        layer, mc, uc, index, g = xs
        mid, _, _ = attention_block(config, inv_freq, h, layer, positions=positions)
        m = rms_norm(mid, layer["post_attention_layernorm"]["scale"], eps)
        acc = jnp.promote_types(cdt, jnp.float32)
        u0 = jnp.where(valid, m[0, bpos], 0).astype(acc)
        uc = jnp.where(valid, uc, 0).astype(acc)
        mp = layer["mlp"]
        pinv_u0 = jnp.linalg.pinv(u0)  # [D, Q]
        du = uc - u0
        d_gate = pinv_u0 @ (du @ mp["gate_proj"]["kernel"].astype(acc))
        d_up = pinv_u0 @ (du @ mp["up_proj"]["kernel"].astype(acc))
        h_c = jnp.where(valid, mlp_activations(uc, mp).astype(acc), 0)  # [Q, F]
        resid = jnp.where(valid, mc.astype(acc) - mid[0, bpos].astype(acc), 0)  # [Q, D]
        d_down = jnp.linalg.pinv(h_c) @ resid
        d = {"gate_proj": d_gate, "up_proj": d_up, "down_proj": d_down}
        patched = {name: {"kernel": mp[name]["kernel"] + d[name].astype(cdt)} for name in WEIGHTS}
        extra = None
        if g is not None:
            rows = jnp.where(index == L - 1, scored, upto)[:, None]  # `_constraint_rows`
            x_all = jnp.where(rows, m[0], 0).astype(acc)  # [S, D]
            h_all = jnp.where(rows, mlp_activations(m[0], patched), 0).astype(acc)  # [S, F]
            px, ph = jnp.linalg.pinv(x_all), jnp.linalg.pinv(h_all)

            def null(name, z):
                X, P = (h_all, ph) if name == "down_proj" else (x_all, px)
                z = z.astype(acc)
                return z - P @ (X @ z)

            extra = ({n: null(n, g[n]) for n in WEIGHTS}, {n: null(n, d[n]) for n in WEIGHTS})
        return mid + mlp(m, patched), (d, extra)

    h = params["embed_tokens"]["embedding"][base_tokens].astype(cdt)
    _, (delta, extra) = lax.scan(body, h, (layers, mid_c, u_c, jnp.arange(L), grad))
    logits_p = apply(patch(params, delta), base_tokens, config=config).logits[0, bpos]
    return ImplicitUpdate(delta, logits_c, logits_p), extra


def _our_config(config: ModelConfig | CausalLM) -> ModelConfig:
    lm = as_causal_lm(config)
    if lm.config is None:
        raise ImplicitError(f"the implicit update needs our transformer's blocks (a ModelConfig, or a CausalLM with "
                            f".config); {lm.name!r} has none")
    return lm.config


def _checked(example, config: ModelConfig) -> Prepared:
    ex = prepare(example, config)
    if int(ex.qvalid.sum()) > config.hidden_size:
        raise ImplicitError(f"{int(ex.qvalid.sum())} scored positions exceed the hidden size {config.hidden_size}: "
                            "the update cannot be exact")
    return ex


def implicit_update(params: dict[str, Any], example, k: int, *, config: ModelConfig | CausalLM) -> ImplicitUpdate:
    """The exact implicit weight update of the first k trajectory tokens of `example` (a
    `metareason.probe.Example`): see the module docstring. Compute in float32 for exactness.
    config: our `ModelConfig` (or a `CausalLM` wrapping it)."""
    config = _our_config(config)
    ex = _checked(example, config)
    if not 0 <= k <= len(example.trajectory):
        raise ImplicitError(f"k={k} is out of range [0, {len(example.trajectory)}] (trajectory length)")
    res, _ = _update_jit(params, ex, ex.prompt_length + k, config=config)
    n = int(ex.qvalid.sum())
    return ImplicitUpdate(res.delta, res.logits_in_context[:n], res.logits_patched[:n])


@functools.partial(jax.jit, static_argnames=("config",))
def _update_jit(params, ex, cut, *, config):
    return _update_one(params, ex, cut, config=config)


def _mlp_selection(params) -> list[bool]:
    """The "mlp" leaves of `trainable_mask` (in leaf order), checked to be the kernels the update
    moves: layers/mlp/<WEIGHTS>/kernel."""
    flat = jax.tree_util.tree_flatten_with_path(trainable_mask(params, "mlp", error=ImplicitError))[0]
    chosen = {leaf_path(path) for path, mark in flat if mark}
    expected = {("layers", "mlp", name, "kernel") for name in WEIGHTS}
    if chosen != expected:
        raise ImplicitError(f"the 'mlp' weights {sorted(chosen)} are not the update's {sorted(expected)}")
    return [mark for _, mark in flat]


def _flat(tree, selection, layer=None, dtype=jnp.float32):
    """float32[...] (or dtype): the selected leaves of a params-like tree (layer: that layer's
    slices), flattened."""
    leaves = [x if layer is None else x[layer] for x, m in zip(jax.tree.leaves(tree), selection) if m]
    return jnp.concatenate([x.reshape(-1).astype(dtype) for x in leaves])


def _acc(config) -> Any:
    """The accumulation dtype: float32, or float64 for a float64 model."""
    return jnp.promote_types(jnp.dtype(config.compute_dtype), jnp.float32)


def _cos(a, b):
    return jnp.vdot(a, b) / jnp.maximum(jnp.linalg.norm(a) * jnp.linalg.norm(b), 1e-30)


def _mlp_grad(g, dtype=jnp.float32) -> dict[str, jax.Array]:
    return {n: g["layers"]["mlp"][n]["kernel"].astype(dtype) for n in WEIGHTS}


def _closest_parts(delta, extra, grad, flat, g_norm):
    """(x_perp tree, P_S(-g) tree, `Closest` scalars) of one prefix's family."""
    pg, pd = extra
    x_perp = jax.tree.map(lambda d, q: d.astype(q.dtype) - q, delta, pd)
    p = jax.tree.map(lambda q: -q, pg)
    v, xf, pf = -flat(grad), flat(x_perp), flat(p)
    res = closest_cosine(jnp.vdot(v, xf), jnp.vdot(xf, xf), jnp.vdot(pf, pf), g_norm, xp=jnp)
    return x_perp, p, res


def _along(x_perp, p, t):
    return jax.tree.map(lambda x, q: x + t * q, x_perp, p)


@functools.partial(jax.jit, static_argnames=("config",))
def _trajectory_jit(params, ex, cuts, *, config):
    L = config.num_layers
    acc = _acc(config)
    selection = _mlp_selection(params)
    zero_params = jax.tree.map(lambda x: jnp.zeros(x.shape, acc), params)

    def mlp_loss(d):
        return answer_loss(patch(params, d), ex, 0, config=config)

    def flat(delta, layer=None):  # an update {name: [L, ...]} in params' leaf order
        return _flat(patch(zero_params, delta), selection, layer, dtype=acc)

    zeros = {n: jnp.zeros(params["layers"]["mlp"][n]["kernel"].shape, acc) for n in WEIGHTS}
    loss0, g = jax.value_and_grad(lambda p: answer_loss(p, ex, 0, config=config))(params)
    g_flat = _flat(g, selection, dtype=acc)
    g_norm = jnp.linalg.norm(g_flat)
    g_layers = [_flat(g, selection, l, dtype=acc) for l in range(L)]
    grad = _mlp_grad(g, acc)
    base_tokens = splice(ex.context, ex.prompt_length, ex.probe)[None]
    bpos = ex.prompt_length + ex.qidx

    def step(prev, cut):
        ok = cut >= 0
        res, extra = _update_one(params, ex, jnp.where(ok, cut, ex.prompt_length), config=config, grad=grad)
        delta = jax.tree.map(lambda d: d.astype(acc), res.delta)
        tok = jax.tree.map(jnp.subtract, delta, prev)
        d_flat, t_flat = flat(delta), flat(tok)
        err = jnp.abs(res.logits_patched - res.logits_in_context)
        x_perp, p, best = _closest_parts(delta, extra, grad, flat, g_norm)
        attained = jnp.isfinite(best.t)
        closest = _along(x_perp, p, jnp.where(attained, best.t, 0.0))
        logits_closest = apply(patch(params, closest), base_tokens, config=config).logits[0, bpos]
        err_closest = jnp.abs(logits_closest - res.logits_in_context)
        out = {
            "loss_in_context": token_nll(res.logits_in_context, ex.labels, ex.qvalid),
            "loss_patched": token_nll(res.logits_patched, ex.labels, ex.qvalid),
            "max_logit_error": jnp.max(jnp.where(ex.qvalid[:, None], err, 0)),
            "loss_token_step": mlp_loss(tok),
            "first_order": jnp.vdot(g_flat, d_flat),
            "first_order_token": jnp.vdot(g_flat, t_flat),
            "cos_cumulative": _cos(-g_flat, d_flat),
            "cos_token": _cos(-g_flat, t_flat),
            "norm_cumulative": jnp.linalg.norm(d_flat) / g_norm,
            "norm_token": jnp.linalg.norm(t_flat) / g_norm,
            "cos_cumulative_layer": jnp.stack([_cos(-g_layers[l], flat(delta, l)) for l in range(L)]),
            "cos_token_layer": jnp.stack([_cos(-g_layers[l], flat(tok, l)) for l in range(L)]),
            "cos_closest": best.cos,
            "t_closest": best.t,
            "null_share": best.null_share,
            "norm_closest": jnp.where(attained, jnp.linalg.norm(flat(closest)) / g_norm, jnp.inf),
            "max_logit_error_closest": jnp.where(
                attained, jnp.max(jnp.where(ex.qvalid[:, None], err_closest, 0)), jnp.nan),
        }
        new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), delta, prev)
        return new, out

    _, per_cut = lax.scan(step, zeros, cuts)
    return loss0, g_norm, per_cut


@functools.partial(jax.jit, static_argnames=("config",))
def _closest_jit(params, ex, cut, t, *, config):
    acc = _acc(config)
    selection = _mlp_selection(params)
    zero_params = jax.tree.map(lambda x: jnp.zeros(x.shape, acc), params)
    flat = lambda delta: _flat(patch(zero_params, delta), selection, dtype=acc)  # noqa: E731
    g = jax.grad(lambda p: answer_loss(p, ex, 0, config=config))(params)
    g_norm = jnp.linalg.norm(_flat(g, selection, dtype=acc))
    grad = _mlp_grad(g, acc)
    res, extra = _update_one(params, ex, cut, config=config, grad=grad)
    delta = jax.tree.map(lambda d: d.astype(acc), res.delta)
    x_perp, p, best = _closest_parts(delta, extra, grad, flat, g_norm)
    t = jnp.where(jnp.isnan(t), best.t, t)
    closest = _along(x_perp, p, t)
    base_tokens = splice(ex.context, ex.prompt_length, ex.probe)[None]
    logits = apply(patch(params, closest), base_tokens, config=config).logits[0, ex.prompt_length + ex.qidx]
    return (closest, res.logits_in_context, logits, _cos(-flat(grad), flat(closest)), _cos(-flat(grad), flat(delta)),
            t, best.t, best.null_share)


def closest_update(params: dict[str, Any], example, k: int, *, config: ModelConfig | CausalLM,
                   t: float | None = None) -> ClosestUpdate:
    """The exact update of the first k trajectory tokens closest in direction to -grad L (the
    module docstring), with the question-only model's logits under it. t: None for the optimum
    t* (an `ImplicitError` when the optimum is not attained, i.e. the supremum lies at t = inf;
    give a finite t for a member there), or any step along P_S(-g) (every t gives an exact
    update). Compute in float32 for exactness."""
    config = _our_config(config)
    ex = _checked(example, config)
    if not 0 <= k <= len(example.trajectory):
        raise ImplicitError(f"k={k} is out of range [0, {len(example.trajectory)}] (trajectory length)")
    res = _closest_jit(params, ex, ex.prompt_length + k, jnp.asarray(np.nan if t is None else t, _acc(config)),
                       config=config)
    delta, lc, lp, cos, cos0, t_used, t_best, share = res
    if not np.isfinite(float(t_used)):
        raise ImplicitError(f"the closest exact update is not attained (its cosine {float(cos):.4g} is a supremum "
                            "at t = inf: the pseudo-inverse member points away from -grad L); pass a finite t")
    n = int(ex.qvalid.sum())
    return ClosestUpdate(delta, lc[:n], lp[:n], float(cos), float(cos0), float(t_used), float(t_best), float(share))


def implicit_trajectory(params: dict[str, Any], example, ks: Sequence[int] | None = None, *,
                        config: ModelConfig | CausalLM) -> dict[str, Any]:
    """Implicit updates along a trajectory, set beside the true gradient at the same weights.

    example: a `metareason.probe.Example`; ks: trajectory prefix lengths (sorted; default every
    token 0..T). g is the gradient of the question-only answer loss (mean NLL of the answer given
    [question, probe]) with respect to every layer's MLP kernels at W; dW_k the implicit update of
    t_<=k; the token step is dW_k - dW_{k_prev}. Returns numpy arrays per cut [M]:

      loss_in_context   L-hat(k): the answer loss given [question, t_<=k, probe] (the probe)
      loss_patched      the answer loss of [question, probe] under W + dW_k (== loss_in_context)
      max_logit_error   max |patched - in-context| logit at the answer positions (exactness)
      loss_token_step   the answer loss under W + (dW_k - dW_k_prev) alone
      first_order(_token)  g . dW_k (g . token step): the loss change a linear model predicts
      cos_cumulative / cos_token      cosine of dW_k / the token step with -g
      norm_cumulative / norm_token    |dW_k| / |g|, |token step| / |g|
      cos_cumulative_layer / cos_token_layer  [M, L] the cosines per layer
      cos_closest       the largest cosine with -g of any member of dW_k's affine family of exact
                        updates (module docstring; a supremum when t_closest is inf), >= cos_cumulative
      t_closest         where it is attained along P_S(-g) (inf: not attained; see `closest`)
      null_share        |P_S g| / |g|: the share of the gradient the family's freedom can reach
      norm_closest      |closest member| / |g| (inf when not attained)
      max_logit_error_closest  max |logit error| of the closest member (NaN when not attained)

    Per token: the token steps of exact updates are differences of two members of two families
    whose null spaces differ after layer 0, so their sum is nearly the whole space and a "closest
    token step" is nearly unconstrained; the per-token view of the closest update is
    cos_closest along the prefixes.

    plus "k", "loss0" (the question-only loss at W) and "grad_norm" |g|."""
    config = _our_config(config)
    T = len(example.trajectory)
    ks = np.arange(T + 1) if ks is None else np.asarray(ks, np.int64)
    if ks.ndim != 1 or len(ks) == 0 or ks.min() < 0 or ks.max() > T or np.any(np.diff(ks) <= 0):
        raise ImplicitError(f"ks must be increasing prefix lengths in [0, {T}] (trajectory length), got {ks.tolist()}")
    ex = _checked(example, config)
    cuts = np.full(round_up(len(ks), 32), -1, np.int32)  # buckets of 32 cuts share a compilation
    cuts[:len(ks)] = ex.prompt_length + ks
    loss0, g_norm, per_cut = _trajectory_jit(params, ex, cuts, config=config)
    out = {name: np.asarray(v)[:len(ks)] for name, v in per_cut.items()}
    out.update(k=ks, loss0=float(loss0), grad_norm=float(g_norm))
    return out
