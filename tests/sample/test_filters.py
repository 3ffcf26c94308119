"""top_k_filter / top_p_filter / process_logits against plain numpy references (sort, cumulative
sum), including the documented tie rule: a token tied with the last one kept is kept."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from filter_reference import np_process, np_top_k, np_top_p
from metareason.sample import SamplingConfig, process_logits, sample_token, top_k_filter, top_p_filter


def _logits(shape, seed=0, scale=2.0):
    return jnp.asarray(scale * np.random.RandomState(seed).standard_normal(shape), jnp.float32)


def _assert_same_filter(out, ref):
    out = np.asarray(out, np.float64)
    np.testing.assert_array_equal(np.isneginf(out), np.isneginf(ref))
    kept = ~np.isneginf(ref)
    np.testing.assert_allclose(out[kept], ref[kept], rtol=1e-6)


@pytest.mark.parametrize("k", [0, 1, 2, 5, 36, 37, 100])
def test_top_k_matches_numpy(k):
    logits = _logits((4, 37))
    out = top_k_filter(logits, k)
    _assert_same_filter(out, np_top_k(logits, k))
    if 0 < k < 37:  # no ties in continuous random logits: exactly k kept
        np.testing.assert_array_equal(np.isfinite(out).sum(-1), k)


@pytest.mark.parametrize("p", [1e-6, 0.05, 0.3, 0.7, 0.9, 0.999, 1.0])
def test_top_p_matches_numpy(p):
    logits = _logits((5, 41), seed=1)
    out = top_p_filter(logits, p)
    _assert_same_filter(out, np_top_p(logits, p))
    kept_probs = np.where(np.isfinite(out), jax.nn.softmax(logits), 0).sum(-1)
    assert (kept_probs >= p - 1e-6).all()  # the nucleus reaches p
    np.testing.assert_array_equal(np.isfinite(out)[np.arange(5), np.argmax(logits, -1)], True)


def test_top_k_keeps_ties_with_the_kth():
    logits = jnp.asarray([[3.0, 1.0, 2.0, 2.0, 0.0], [2.0, 2.0, 1.0, 0.0, 2.0]])
    out = top_k_filter(logits, 2)
    np.testing.assert_array_equal(np.isfinite(out), [[1, 0, 1, 1, 0], [1, 1, 0, 0, 1]])
    _assert_same_filter(out, np_top_k(logits, 2))


@pytest.mark.parametrize("p,kept", [
    (0.3, [1, 0, 0, 0, 0]),   # 0.4 alone reaches 0.3
    (0.5, [1, 1, 1, 0, 0]),   # nucleus {0.4, 0.2}; the other 0.2 is tied with its last token
    (0.65, [1, 1, 1, 0, 0]),  # nucleus {0.4, 0.2, 0.2}
    (0.85, [1, 1, 1, 1, 1]),  # nucleus ends on a 0.1; the other 0.1 is tied with it
])
def test_top_p_keeps_ties_with_the_last_kept(p, kept):
    probs = np.asarray([0.2, 0.1, 0.4, 0.2, 0.1])
    order = [2, 0, 3, 1, 4]  # kept pattern above is listed in descending-probability order
    logits = jnp.asarray(np.log(probs), jnp.float32)
    out = top_p_filter(logits, p)
    np.testing.assert_array_equal(np.isfinite(np.asarray(out))[order], np.asarray(kept, bool))
    _assert_same_filter(out, np_top_p(logits, p))
    # the tie rule as an order-free statement: keep i iff the mass strictly above i is < p
    above = np.asarray([probs[probs > q].sum() for q in probs])
    np.testing.assert_array_equal(np.isfinite(np.asarray(out)), above < p)


def test_filters_respect_already_removed_tokens():
    logits = _logits((3, 30), seed=2)
    k_first = top_k_filter(logits, 7)
    out = top_p_filter(k_first, 0.8)
    _assert_same_filter(out, np_top_p(np_top_k(logits, 7), 0.8))
    assert (np.isfinite(out).sum(-1) <= 7).all()


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.5, 4, 1.0), (1.7, 0, 0.6), (0.8, 9, 0.9)])
def test_process_logits_is_temperature_then_top_k_then_top_p(temperature, top_k, top_p):
    logits = _logits((2, 3, 29), seed=3)
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
    _assert_same_filter(process_logits(logits, sampling), np_process(logits, temperature, top_k, top_p))


def test_greedy_sample_token_is_argmax_with_logprob_zero():
    logits = _logits((4, 11), seed=4)
    tok, logp = sample_token(logits, None, SamplingConfig(temperature=0))
    np.testing.assert_array_equal(tok, np.argmax(logits, -1))
    np.testing.assert_array_equal(logp, 0.0)


class TestVariants(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_filters_same_with_and_without_jit_on_any_leading_axes(self):
        logits = _logits((2, 3, 19), seed=5)
        fn = self.variant(lambda x, p: top_p_filter(top_k_filter(x, 6), p))  # p traced under jit
        _assert_same_filter(fn(logits, 0.75), np_top_p(np_top_k(logits, 6), 0.75))
        fn1 = self.variant(lambda x, p: top_p_filter(x, p))
        _assert_same_filter(fn1(logits, 1.0), np.asarray(logits, np.float64))  # p = 1 is off, also traced
