"""The Flax adapters (`from_linen`, `from_nnx`): a small linen and a small NNX transformer,
written here, brought in through the `CausalLM` protocol.

References are independent of the adapters: the modules called directly (`module.apply`,
`model(...)`, `nnx.grad`), one plain causal forward pass per prefix for the probe, and central
finite differences for gradients."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx

import metareason.inner as inner
import metareason.probe
from metareason.model import AdapterError, CausalLM, causal_mask, from_linen, from_nnx
from metareason.probe.inputs import Example

V, D, H, F, MAXLEN = 61, 32, 4, 64, 64


# --- two small causal decoders (2 layers, pre-norm, explicit bool mask, float32) ---------------

def rope(x, positions):
    """x: [B, S, H, Dh] rotated by positions int[B, S] (half-split RoPE, theta 10^4)."""
    half = x.shape[-1] // 2
    angle = positions[..., None].astype(jnp.float32) / 10000.0 ** (jnp.arange(half) / half)
    sin, cos = jnp.sin(angle)[:, :, None], jnp.cos(angle)[:, :, None]
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def attend(q, k, v, mask):
    """q, k, v: [B, S, H, Dh]; mask bool[B, S, S] (query, key) -> [B, S, H, Dh]."""
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    s = jnp.where(mask[:, None], s, -1e30)
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v)


class LinenBlock(nn.Module):
    @nn.compact
    def __call__(self, x, positions, mask):
        h = nn.LayerNorm()(x)
        q, k, v = (nn.DenseGeneral((H, D // H), name=n)(h) for n in "qkv")
        x = x + nn.DenseGeneral(D, axis=(-2, -1), name="o")(attend(rope(q, positions), rope(k, positions), v, mask))
        return x + nn.Dense(D)(nn.gelu(nn.Dense(F)(nn.LayerNorm()(x))))


class LinenLM(nn.Module):
    """RoPE positions."""

    @nn.compact
    def __call__(self, tokens, positions, mask):
        x = nn.Embed(V, D)(tokens)
        for _ in range(2):
            x = LinenBlock()(x, positions, mask)
        return nn.Dense(V)(nn.LayerNorm()(x))


class NNXBlock(nnx.Module):
    def __init__(self, rngs):
        self.ln1, self.ln2 = nnx.LayerNorm(D, rngs=rngs), nnx.LayerNorm(D, rngs=rngs)
        self.qkv = nnx.LinearGeneral(D, (3, H, D // H), rngs=rngs)
        self.o = nnx.LinearGeneral((H, D // H), D, axis=(-2, -1), rngs=rngs)
        self.up, self.down = nnx.Linear(D, F, rngs=rngs), nnx.Linear(F, D, rngs=rngs)

    def __call__(self, x, mask):
        q, k, v = jnp.moveaxis(self.qkv(self.ln1(x)), -3, 0)
        x = x + self.o(attend(q, k, v, mask))
        return x + self.down(nnx.gelu(self.up(self.ln2(x))))


class NNXLM(nnx.Module):
    """Learned positions."""

    def __init__(self, rngs):
        self.embed, self.pos = nnx.Embed(V, D, rngs=rngs), nnx.Embed(MAXLEN, D, rngs=rngs)
        self.blocks = nnx.List([NNXBlock(rngs) for _ in range(2)])
        self.ln, self.head = nnx.LayerNorm(D, rngs=rngs), nnx.Linear(D, V, rngs=rngs)

    def __call__(self, tokens, positions, mask):
        x = self.embed(tokens) + self.pos(positions)
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.ln(x))


@dataclasses.dataclass(repr=False)
class Case:
    """An adapted model, its params, and `direct(params, tokens, positions, mask)`: the module
    called its own way, without the adapter."""

    lm: CausalLM
    params: object
    direct: object


def _linen_case():
    module = LinenLM()
    t = jnp.zeros((1, 4), jnp.int32)
    params = module.init(jax.random.key(0), t, positions=t, mask=causal_mask(t))["params"]
    direct = jax.jit(lambda p, tokens, positions, mask: module.apply({"params": p}, tokens, positions, mask))
    return Case(from_linen(module, vocab_size=V, max_length=MAXLEN), params, direct)


def _nnx_case():
    model = NNXLM(nnx.Rngs(0))
    lm, params = from_nnx(model, vocab_size=V, max_length=MAXLEN)

    def direct(p, tokens, positions, mask):
        nnx.update(model, p)
        return model(tokens, positions, mask)

    return Case(lm, params, direct)


@pytest.fixture(scope="module", params=["linen", "nnx"])
def case(request):
    return {"linen": _linen_case, "nnx": _nnx_case}[request.param]()


def _inputs(key, B=2, S=11):
    tokens = jax.random.randint(key, (B, S), 0, V, dtype=jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32), (B, S))
    return tokens, positions, causal_mask(tokens)


def _perturbed(params, key, scale=0.05):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])


def _nll(logits, tokens):
    """Mean next-token NLL of tokens under logits [B, S, V]."""
    lp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    return -jnp.mean(jnp.take_along_axis(lp, tokens[:, 1:, None], axis=-1))


# --- (a) apply equals the module called directly ------------------------------------------------

def test_apply_equals_the_module(case):
    tokens, positions, mask = _inputs(jax.random.key(1))
    got = case.lm.apply(case.params, tokens, positions, mask)  # eager once; jitted below
    apply = jax.jit(case.lm.apply)
    assert got.shape == (2, 11, V) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, case.direct(case.params, tokens, positions, mask), rtol=1e-5, atol=1e-5)
    # the params come in as an argument (not captured): other params, other logits, the module's own
    other = _perturbed(case.params, jax.random.key(2))
    got2 = apply(other, tokens, positions, mask)
    assert float(jnp.max(jnp.abs(got2 - got))) > 1e-3
    np.testing.assert_allclose(got2, case.direct(other, tokens, positions, mask), rtol=1e-5, atol=1e-5)
    # positions and mask reach the model: stretched positions / a full mask change the logits
    assert float(jnp.max(jnp.abs(apply(case.params, tokens, 2 * positions, mask) - got))) > 1e-4
    assert float(jnp.max(jnp.abs(apply(case.params, tokens, positions, jnp.ones_like(mask)) - got))) > 1e-4


def test_nnx_split_leaves_the_model_alone():
    model = NNXLM(nnx.Rngs(0))
    before = jax.tree.map(np.array, nnx.state(model, nnx.Param))
    lm, params = from_nnx(model, vocab_size=V)
    tokens, positions, mask = _inputs(jax.random.key(3))
    jax.jit(lm.apply)(_perturbed(params, jax.random.key(4)), tokens, positions, mask)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.array, nnx.state(model, nnx.Param)), before)
    assert isinstance(params, nnx.State)


class Counting(nnx.Module):
    """State besides params: a counter its call mutates, an RNG stream (dropout, off)."""

    def __init__(self, rngs):
        self.lm = NNXLM(rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs, deterministic=True)
        self.calls = nnx.BatchStat(jnp.zeros((), jnp.int32))

    def __call__(self, tokens, positions, mask):
        self.calls[...] += 1
        return self.drop(self.lm(tokens, positions, mask))


def test_nnx_state_besides_params_is_held_fixed():
    model = Counting(nnx.Rngs(0))
    lm, params = from_nnx(model, vocab_size=V)
    tokens, positions, mask = _inputs(jax.random.key(9))
    assert set(params) == {"lm"}  # the counter and the RNG state are not params
    a = jax.jit(lm.apply)(params, tokens, positions, mask)
    g = jax.grad(lambda p: jnp.sum(lm.apply(p, tokens, positions, mask)))(params)
    assert jax.tree.structure(g) == jax.tree.structure(params)
    np.testing.assert_allclose(a, model.lm(tokens, positions, mask), rtol=1e-5, atol=1e-5)
    assert int(model.calls[...]) == 0  # the call's mutation stayed inside the pure function


# --- (b) jit, grad, vmap through it ---------------------------------------------------------------

def test_jit_grad_vmap(case):
    tokens, positions, mask = _inputs(jax.random.key(5))
    loss = jax.jit(lambda p: _nll(case.lm.apply(p, tokens, positions, mask), tokens))
    value, grads = jax.jit(jax.value_and_grad(loss))(case.params)
    assert jax.tree.structure(grads) == jax.tree.structure(case.params)
    # against the module's own gradient (linen: jax.grad of module.apply; NNX: nnx.grad of the model)
    if isinstance(case.params, nnx.State):
        model = nnx.merge(*nnx.split(NNXLM(nnx.Rngs(0))))
        nnx.update(model, case.params)
        ref = nnx.grad(lambda m: _nll(m(tokens, positions, mask), tokens))(model)
    else:
        ref = jax.jit(jax.grad(lambda p: _nll(case.direct(p, tokens, positions, mask), tokens)))(case.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), grads, ref)
    # and central finite differences along a random unit direction
    d = _perturbed(jax.tree.map(jnp.zeros_like, case.params), jax.random.key(6), 1.0)
    norm = jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(d)))
    d = jax.tree.map(lambda x: x / norm, d)
    eps = 1e-2
    shift = lambda s: jax.tree.map(lambda p, u: p + s * u, case.params, d)  # noqa: E731
    fd = (loss(shift(eps)) - loss(shift(-eps))) / (2 * eps)
    an = sum(jnp.sum(g * u) for g, u in zip(jax.tree.leaves(grads), jax.tree.leaves(d)))
    np.testing.assert_allclose(an, fd, rtol=5e-3)
    np.testing.assert_allclose(jax.jvp(loss, (case.params,), (d,))[1], an, rtol=1e-4, atol=1e-6)  # forward mode
    # vmap over the batch: one row at a time gives the batched logits
    rows = jax.jit(jax.vmap(lambda t, p, m: case.lm.apply(case.params, t[None], p[None], m[None])[0]))
    np.testing.assert_allclose(rows(tokens, positions, mask), case.direct(case.params, tokens, positions, mask),
                               rtol=1e-5, atol=1e-5)
    assert np.isfinite(float(value))


def test_causal_lm_is_a_static_jit_argument(case):
    traces = []

    def f(params, tokens, *, config):
        traces.append(1)
        S = tokens.shape[1]
        return config.apply(params, tokens, jnp.broadcast_to(jnp.arange(S), tokens.shape), causal_mask(tokens))

    g = jax.jit(f, static_argnames="config")
    tokens, _, _ = _inputs(jax.random.key(7))
    hash(case.lm)
    a = g(case.params, tokens, config=case.lm)
    b = g(case.params, tokens + 1, config=case.lm)
    assert len(traces) == 1 and a.shape == b.shape


# --- (c) the packed prefix-sharing probe equals one forward per prefix ---------------------------

def per_prefix_losses(direct, params, context, cuts, probe, targets):
    """float[M]: mean NLL of probe[targets] after context[:c], one plain causal pass per cut c
    (right-padded to one length: padding after a causal sequence changes nothing before it)."""
    S = len(context) + len(probe)
    out = []
    for c in cuts:
        seq = np.zeros((1, S), np.int32)
        seq[0, :c + len(probe)] = np.concatenate([context[:c], probe])
        logp = np.asarray(jax.nn.log_softmax(direct(params, jnp.asarray(seq), jnp.arange(S)[None],
                                                     causal_mask(seq)), axis=-1))[0]
        out.append(np.mean([-logp[c + a - 1, probe[a]] for a in np.flatnonzero(targets)]))
    return np.array(out)


def packed_inputs(context, cuts, probe):
    """One sequence [context | probe x M]: tokens, positions and a mask in which probe m sees the
    first cuts[m] context tokens and itself causally (positions continue from cuts[m])."""
    N, A, M = len(context), len(probe), len(cuts)
    S = N + M * A
    tokens = np.concatenate([context, np.tile(probe, M)])
    positions = np.concatenate([np.arange(N)] + [c + np.arange(A) for c in cuts])
    mask = np.zeros((S, S), bool)
    for i in range(N):
        mask[i, :i + 1] = True
    for m, c in enumerate(cuts):
        for a in range(A):
            row = N + m * A + a
            mask[row, :c] = True
            mask[row, N + m * A:row + 1] = True
    return tokens, positions, mask


def packed_losses(lm, params, contexts, cuts, probes, targets):
    """float[B, M]: the same losses from ONE call of lm.apply over B packed rows."""
    rows = [packed_inputs(c, k, p) for c, k, p in zip(contexts, cuts, probes)]
    tokens, positions, mask = (jnp.asarray(np.stack(x)) for x in zip(*rows))
    logp = np.asarray(jax.nn.log_softmax(jax.jit(lm.apply)(params, tokens, positions, mask), axis=-1))
    N, A = contexts.shape[1], probes.shape[1]
    out = np.zeros(cuts.shape)
    for b in range(len(contexts)):
        for m in range(cuts.shape[1]):
            nll = [-logp[b, N + m * A + a - 1, probes[b, a]] for a in np.flatnonzero(targets[b])]
            out[b, m] = np.mean(nll)
    return out


def probe_batch(seed=0, B=2, N=14, A=5):
    rng = np.random.default_rng(seed)
    contexts = rng.integers(0, V, (B, N)).astype(np.int32)
    probes = rng.integers(0, V, (B, A)).astype(np.int32)
    cuts = np.array([[1, 4, 9, 14], [2, 7, 13, 14]], np.int32)
    targets = np.zeros((B, A), bool)
    targets[:, 2:] = True
    return contexts, cuts, probes, targets


def test_packed_probe_equals_per_prefix_passes(case):
    contexts, cuts, probes, targets = probe_batch()
    ref = np.stack([per_prefix_losses(case.direct, case.params, c, k, p, t)
                    for c, k, p, t in zip(contexts, cuts, probes, targets)])
    got = packed_losses(case.lm, case.params, contexts, cuts, probes, targets)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert np.ptp(ref) > 1e-3  # the cuts matter, so a wrong mask could not pass


# --- errors ---------------------------------------------------------------------------------------

class TupleLM(nn.Module):
    @nn.compact
    def __call__(self, tokens, positions, mask):
        return nn.Embed(V, V)(tokens), None


def test_errors_name_the_problem():
    t = jnp.zeros((1, 3), jnp.int32)
    with pytest.raises(AdapterError, match="from_linen takes a flax.linen.Module.*from_nnx"):
        from_linen(NNXLM(nnx.Rngs(0)), vocab_size=V)
    with pytest.raises(AdapterError, match="from_nnx takes a flax.nnx.Module.*from_linen"):
        from_nnx(LinenLM(), vocab_size=V)
    with pytest.raises(AdapterError, match="vocab_size must be a positive int"):
        from_linen(LinenLM(), vocab_size=0)
    with pytest.raises(AdapterError, match="max_length"):
        from_linen(LinenLM(), vocab_size=V, max_length=-1)
    params = TupleLM().init(jax.random.key(0), t, t, causal_mask(t))["params"]
    with pytest.raises(AdapterError, match="returned a tuple of 2.*call="):
        from_linen(TupleLM(), vocab_size=V).apply(params, t, t, causal_mask(t))
    picked_call = lambda m, p, tok, pos, mask: m.apply({"params": p}, tok, pos, mask)[0]  # noqa: E731
    picked = from_linen(TupleLM(), vocab_size=V, call=picked_call)
    assert picked.apply(params, t, t, causal_mask(t)).shape == (1, 3, V)
    wrong_v = from_linen(TupleLM(), vocab_size=7, call=picked_call)
    with pytest.raises(AdapterError, match=r"shape \(1, 3, 61\).*expected logits \(1, 3, 7\)"):
        jax.jit(wrong_v.apply)(params, t, t, causal_mask(t))


# --- (d) through the probe and a second-order meta-gradient --------------------------------------

def test_probe_over_the_adapter_equals_per_prefix_passes(case):
    contexts, cuts, probes, targets = probe_batch()
    batch = metareason.probe.ProbeBatch(contexts, np.full(len(contexts), contexts.shape[1]), cuts, probes, targets)
    got = metareason.probe.answer_loss_along_trajectory(case.params, batch, config=case.lm, method="packed",
                                                        cut_chunk=2)
    ref = np.stack([per_prefix_losses(case.direct, case.params, c, k, p, t)
                    for c, k, p, t in zip(contexts, cuts, probes, targets)])
    np.testing.assert_allclose(got.mean, ref, rtol=1e-5, atol=1e-5)


def lab_example(seed, prompt=3, trajectory=8, answer=2):
    """An Example of random tokens: probe = 3 template tokens then `answer` scored ones."""
    rng = np.random.default_rng(seed)
    probe_tokens = rng.integers(0, V, 3 + answer)
    return Example(prompt=rng.integers(0, V, prompt), trajectory=rng.integers(0, V, trajectory),
                   probe=probe_tokens, targets=np.arange(3 + answer) >= 3, types=("x",) * trajectory, meta={})


def meta_objective(lm, support, query, *, lr=0.5, steps=3, trainable=None):
    """params -> the answer loss on `query` after `steps` SGD steps on the trajectory loss of
    `support` (second order: differentiated through the unroll)."""
    def f(params):
        adapted = inner.inner_loop(functools.partial(inner.trajectory_loss, config=lm), params, support,
                                   optax.sgd(lr), steps=steps, trainable=trainable).params
        return inner.answer_loss(adapted, query, config=lm)
    return f


def unit_direction(params, key):
    d = _perturbed(jax.tree.map(jnp.zeros_like, params), key, 1.0)
    norm = jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(d)))
    return jax.tree.map(lambda x: x / norm, d)


def test_second_order_meta_gradient_equals_finite_differences(case):
    support, query = inner.prepare(lab_example(1), case.lm), inner.prepare(lab_example(2), case.lm)
    f = jax.jit(meta_objective(case.lm, support, query))
    grads = jax.jit(jax.grad(meta_objective(case.lm, support, query)))(case.params)
    d = unit_direction(case.params, jax.random.key(8))
    eps = 1e-2
    shift = lambda s: jax.tree.map(lambda p, u: p + s * u, case.params, d)  # noqa: E731
    fd = (f(shift(eps)) - f(shift(-eps))) / (2 * eps)
    an = sum(jnp.sum(g * u) for g, u in zip(jax.tree.leaves(grads), jax.tree.leaves(d)))
    np.testing.assert_allclose(an, fd, rtol=5e-3)
    # the inner steps matter: the gradient without adaptation differs
    plain = jax.jit(jax.grad(lambda p: inner.answer_loss(p, query, config=case.lm)))(case.params)
    assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(plain))) > 1e-4
