"""attention_impl="chunked": the same logits and gradients as the plain XLA attention (packed
segments, a length that is not a multiple of the chunk, a KV-cache prefill), with a smaller peak."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metareason.model import ModelConfig, apply, init, init_cache
from metareason.train.loss import sft_loss

CFG = ModelConfig(family="qwen2", vocab_size=97, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                  num_kv_heads=2, initializer_range=0.2)
CHUNKED = CFG.replace(attention_impl="chunked", attention_chunk=8)


def _batch(B=3, S=30, seed=0):
    rng = np.random.default_rng(seed)
    seg = np.concatenate([np.ones((B, 13)), 2 * np.ones((B, 12)), np.zeros((B, S - 25))], 1).astype(np.int32)
    return dict(tokens=rng.integers(0, 97, (B, S)).astype(np.int32), segment_ids=seg,
                positions=np.zeros((B, S), np.int32) + np.concatenate([np.arange(13), np.arange(12),
                                                                       np.zeros(S - 25, int)])[None],
                loss_mask=np.ones((B, S), np.int32))


def test_chunked_equals_xla_logits_and_gradients():
    params = init(CFG, jax.random.key(0))
    b = _batch()
    want = apply(params, b["tokens"], config=CFG).logits  # plain causal (packed: the gradients below)
    got = apply(params, b["tokens"], config=CHUNKED).logits
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    g_want = jax.grad(lambda p: sft_loss(p, b, config=CFG)[0])(params)
    g_got = jax.grad(lambda p: sft_loss(p, b, config=CHUNKED)[0])(params)
    for x, y in zip(jax.tree.leaves(g_got), jax.tree.leaves(g_want)):
        np.testing.assert_allclose(x, y, atol=1e-6, rtol=1e-4)


def test_chunked_prefill_into_a_cache_then_decode():
    params = init(CFG, jax.random.key(1))
    tokens = np.random.default_rng(2).integers(0, 97, (2, 21)).astype(np.int32)
    outs = []
    for cfg in (CFG, CHUNKED):
        cache = init_cache(cfg, 2, 32)
        pre = apply(params, tokens[:, :20], config=cfg, cache=cache)
        step = apply(params, tokens[:, 20:], config=cfg, cache=pre.cache)
        outs.append((pre.logits, step.logits))
    for a, b in zip(*outs):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("S", [1024])
def test_chunked_training_peak_is_smaller(S):
    """The compiled train-loss gradient at 1024 tokens: with chunks of 128 the backward pass keeps
    no [B, H, S, S] scores (two layers of them alone are 2x the size below)."""
    cfg = CFG.replace(max_position_embeddings=2048)
    params = jax.eval_shape(lambda: init(cfg, jax.random.key(0)))
    batch = {k: jax.ShapeDtypeStruct((2, S), jnp.int32) for k in ("tokens", "segment_ids", "positions", "loss_mask")}

    def temp(c):
        f = jax.jit(jax.grad(lambda p, b: sft_loss(p, b, config=c)[0]))
        return f.lower(params, batch).compile().memory_analysis().temp_size_in_bytes

    full, chunked = temp(cfg), temp(cfg.replace(attention_impl="chunked", attention_chunk=128))
    scores = 2 * cfg.num_heads * S * S * 4  # one layer's float32 scores
    assert full > 2 * scores and chunked < full / 4, (full, chunked, scores)
