"""The one-pass probes equal per-prefix forward passes (the official notebook's method)."""

import dataclasses

import numpy as np
import pytest

from metareason.probe import ProbeBatch, ProbeError, answer_loss_along_trajectory, answer_loss_per_prefix
from reference import TINY, random_params



def random_batch(config, rng, B=3, N=40, M=7, A=6):
    lens = rng.integers(N // 2, N + 1, B)
    lens[0] = N
    context = rng.integers(0, config.vocab_size, (B, N))
    cuts = np.full((B, M), -1)
    for b in range(B):
        m = rng.integers(2, M + 1) if b else M
        cuts[b, :m] = np.sort(rng.choice(np.arange(1, lens[b] + 1), m, replace=False))
    probe = rng.integers(0, config.vocab_size, (B, A))
    targets = np.zeros((B, A), bool)
    for b in range(B):
        start = rng.integers(1, A - 1)
        targets[b, start:rng.integers(start + 1, A + 1)] = True
    return ProbeBatch(context, lens, cuts, probe, targets)


@pytest.mark.parametrize("name", ["qwen2", "llama3", "qwen3"])
@pytest.mark.parametrize("method,cut_chunk,context_chunk", [("packed", 3, 512), ("cache", 3, 16), ("cache", 7, 40)])
def test_matches_per_prefix(name, method, cut_chunk, context_chunk):
    config = TINY[name]  # GQA in all three (num_kv_heads < num_heads)
    params = random_params(config, seed=1)
    batch = random_batch(config, np.random.default_rng(0))
    ref = answer_loss_per_prefix(params, batch, config=config)
    got = answer_loss_along_trajectory(params, batch, config=config, method=method, cut_chunk=cut_chunk,
                                       context_chunk=context_chunk)
    assert np.asarray(ref.mean).std() > 0.1  # the reference varies along the cuts
    np.testing.assert_array_equal(got.valid, ref.valid)
    for field in ("per_token", "total", "mean"):
        np.testing.assert_allclose(getattr(got, field), getattr(ref, field), rtol=1e-5, atol=1e-5)


def test_cuts_on_cache_chunk_boundaries():
    config = TINY["qwen2"]
    params = random_params(config, seed=2)
    rng = np.random.default_rng(3)
    N, A = 48, 5
    cuts = np.array([[1, 15, 16, 17, 31, 32, 33, 47, 48]])
    batch = ProbeBatch(rng.integers(0, config.vocab_size, (1, N)), [N], cuts, rng.integers(0, config.vocab_size, (1, A)),
                       np.array([[False, False, True, True, True]]))
    ref = answer_loss_per_prefix(params, batch, config=config)
    got = answer_loss_along_trajectory(params, batch, config=config, method="cache", cut_chunk=4, context_chunk=16)
    np.testing.assert_allclose(got.per_token, ref.per_token, rtol=1e-5, atol=1e-5)


def test_hand_computed_single_cut():
    """One cut, checked against `apply` on the literal concatenation (no helper shared)."""
    from metareason.model import apply

    config = TINY["qwen2_tied"]
    params = random_params(config, seed=4)
    ctx, probe = np.array([[5, 9, 2, 7, 1, 8]]), np.array([[3, 4, 6]])
    batch = ProbeBatch(ctx, [6], np.array([[4]]), probe, np.array([[False, True, True]]))
    logits = np.asarray(apply(params, np.array([[5, 9, 2, 7, 3, 4, 6]]), config=config).logits[0], np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
    want = -(logp[4, 4] + logp[5, 6]) / 2
    for method in ("packed", "cache"):
        got = answer_loss_along_trajectory(params, batch, config=config, method=method)
        np.testing.assert_allclose(float(got.mean[0, 0]), want, rtol=1e-5)


@pytest.mark.parametrize("change,message", [
    (dict(cuts=np.array([[0, 3]])), "out of range"),
    (dict(cuts=np.array([[3, 9]])), "out of range"),
    (dict(targets=np.array([[False, False, False]])), "no target tokens"),
    (dict(targets=np.array([[True, True, False]])), "first probe token"),
    (dict(context_lengths=np.array([7])), "context_lengths"),
    (dict(probe=np.array([[1, 2, 999]])), "token ids"),
])
def test_bad_input(change, message):
    config = TINY["qwen2"]
    base = dict(context=np.array([[1, 2, 3, 4, 5, 6]]), context_lengths=np.array([6]), cuts=np.array([[2, 6]]),
                probe=np.array([[1, 2, 3]]), targets=np.array([[False, True, True]]))
    batch = ProbeBatch(**{**base, **change})
    with pytest.raises(ProbeError, match=message):
        answer_loss_along_trajectory(random_params(config), batch, config=config)


def test_longer_than_the_model_context():
    config = TINY["qwen2"].replace(max_position_embeddings=8)
    batch = ProbeBatch(np.ones((1, 6), int), [6], [[3]], np.ones((1, 3), int), [[False, True, True]])
    with pytest.raises(ProbeError, match="longer than the model's context"):
        answer_loss_along_trajectory(random_params(config), batch, config=config)


def plain_causal_lm(config):
    """Our transformer behind the bare protocol (no .config: no fast path, no KV cache)."""
    from metareason.model import apply
    from metareason.model.protocol import CausalLM

    return CausalLM(apply=lambda p, t, pos, m: apply(p, t, config=config, positions=pos, mask=m).logits,
                    vocab_size=config.vocab_size, max_length=config.max_position_embeddings, name="plain")


@pytest.mark.parametrize("name", ["qwen2", "qwen3"])
def test_any_causal_lm_packed_equals_per_prefix(name):
    config = TINY[name]
    lm = plain_causal_lm(config)
    params = random_params(config, seed=5)
    batch = random_batch(config, np.random.default_rng(6))
    ref = answer_loss_per_prefix(params, batch, config=config)  # our model's own per-prefix passes
    np.testing.assert_allclose(answer_loss_per_prefix(params, batch, config=lm).per_token, ref.per_token,
                               rtol=1e-5, atol=1e-5)
    got = answer_loss_along_trajectory(params, batch, config=lm, method="packed", cut_chunk=3)
    np.testing.assert_array_equal(got.valid, ref.valid)
    for field in ("per_token", "total", "mean"):
        np.testing.assert_allclose(getattr(got, field), getattr(ref, field), rtol=1e-5, atol=1e-5)
    with pytest.raises(ProbeError, match="use method='packed'"):
        answer_loss_along_trajectory(params, batch, config=lm, method="cache")
    short = dataclasses.replace(lm, max_length=8)
    with pytest.raises(ProbeError, match="longer than the model's context"):
        answer_loss_along_trajectory(params, batch, config=short, method="packed")
