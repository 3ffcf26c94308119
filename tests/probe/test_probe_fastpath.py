"""The cache method's prefill through the plain causal path (mask None) and its probe rows
through the model's mask-aware kernel: the same answer losses (and parameter gradients) as the
"packed" method and as per-prefix forward passes, with attention_impl "xla" and "pallas"
(Pallas interpret mode on the CPU)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metareason.model import apply, transformer
from metareason.probe import ProbeBatch, ProbeError, answer_loss_along_trajectory, answer_loss_per_prefix
from metareason.probe.loss import answer_nll
from reference import TINY, random_params

# GQA (4 query heads on 2 kv heads); a unique attention_chunk keeps jit caches of other tests apart
CFG = TINY["qwen2"].replace(attention_chunk=91)
N, A = 24, 5


def _batch():
    """Two questions, the second right-padded (17 of 24 tokens) with an unused cut slot."""
    rng = np.random.default_rng(11)
    return ProbeBatch(context=jnp.asarray(rng.integers(0, CFG.vocab_size, (2, N)), jnp.int32),
                      context_lengths=jnp.asarray([N, 17], jnp.int32),
                      cuts=jnp.asarray([[1, 9, 16, 24], [3, 12, 17, -1]], jnp.int32),
                      probe=jnp.asarray(rng.integers(0, CFG.vocab_size, (2, A)), jnp.int32),
                      targets=jnp.asarray([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]], bool))


def _reference_loss(params, batch):
    """Independent of probe.loss: sum over questions and used cuts of the mean NLL of the
    targets, from one causal `apply` over the rows context[:c] + probe (right-padded to N + A,
    which a causal pass ignores), one row per cut (differentiable)."""
    batch = ProbeBatch(*(np.asarray(x) for x in batch))
    rows, picks = [], []
    for b in range(2):
        t = np.flatnonzero(batch.targets[b])
        for c in batch.cuts[b]:
            if c != -1:
                seq = np.zeros(N + A, np.int32)
                seq[:c + A] = np.concatenate([batch.context[b, :c], batch.probe[b]])
                picks.append((len(rows), c + t - 1, batch.probe[b, t], len(t)))
                rows.append(seq)
    logp = jax.nn.log_softmax(apply(params, jnp.asarray(np.stack(rows)), config=CFG).logits, -1)
    return -sum(logp[r, pos, tok].sum() / n for r, pos, tok, n in picks)


@pytest.fixture(scope="module")
def setup():
    params = random_params(CFG, seed=5)
    batch = _batch()
    ref = answer_loss_per_prefix(params, batch, config=CFG)
    assert np.asarray(ref.mean)[np.asarray(ref.valid)].std() > 0.1  # the losses vary along the cuts
    return params, batch, ref


@pytest.fixture
def spy(monkeypatch):
    """Records (attention_impl, mask is None, queries, keys) of every attention the trace runs."""
    calls = []
    real = transformer._attention

    def wrapped(q, k, v, mask, compute_dtype, impl, *a, **kw):
        calls.append((impl, mask is None, q.shape[1], v.shape[2]))
        return real(q, k, v, mask, compute_dtype, impl, *a, **kw)

    monkeypatch.setattr(transformer, "_attention", wrapped)
    return calls


@pytest.mark.parametrize("impl", ["xla", "pallas"])
def test_cache_one_pass_equals_packed_and_per_prefix(setup, spy, impl):
    params, batch, ref = setup
    cfg = CFG.replace(attention_impl=impl)
    # context_chunk=None: one causal pass for "pallas" (a fused kernel), 512 >= N tokens for "xla"
    got = answer_loss_along_trajectory(params, batch, config=cfg, method="cache", cut_chunk=2)
    packed = answer_loss_along_trajectory(params, batch, config=cfg, method="packed", cut_chunk=2)
    np.testing.assert_array_equal(got.valid, ref.valid)
    for field in ("per_token", "total", "mean"):
        np.testing.assert_allclose(getattr(got, field), getattr(ref, field), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(getattr(got, field), getattr(packed, field), rtol=1e-5, atol=1e-5)
    # the prefill ran with mask None over exactly the N context slots (S == T: the causal
    # kernels' contract), the probe rows (2 cuts x A tokens) with a mask against N + 2A slots,
    # both under the configured impl (nothing forces "xla")
    assert {c for c in spy if c[1]} == {(impl, True, N, N)}
    assert (impl, False, 2 * A, N + 2 * A) in spy
    assert {c[0] for c in spy} == {impl}


@pytest.fixture(scope="module")
def reference_grad(setup):
    params, batch, _ = setup
    return jax.jit(jax.value_and_grad(lambda p: _reference_loss(p, batch)))(params)


@pytest.mark.parametrize("impl", ["xla", "pallas"])
def test_parameter_gradient_through_the_causal_prefill(setup, reference_grad, impl):
    """d(sum of the mean losses)/d(params) of the one-pass cache method (the custom VJP of the
    causal and the masked kernel for "pallas") equals the gradient of the per-cut reference."""
    params, batch, _ = setup
    want_val, want = reference_grad
    cfg = CFG.replace(attention_impl=impl)
    loss = lambda p: answer_nll(p, batch, config=cfg, method="cache", cut_chunk=4).mean.sum()
    val, got = jax.jit(jax.value_and_grad(loss))(params)
    np.testing.assert_allclose(val, want_val, rtol=1e-5)
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5, err_msg=f"{impl} {jax.tree_util.keystr(path)}")


def test_bad_context_chunk_is_one_line(setup):
    params, batch, _ = setup
    with pytest.raises(ProbeError, match="context_chunk must be >= 1") as e:
        answer_loss_along_trajectory(params, batch, config=CFG, method="cache", context_chunk=0)
    assert "\n" not in str(e.value)
