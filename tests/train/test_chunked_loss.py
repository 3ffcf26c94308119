"""loss_chunk: the SFT loss from logits computed a chunk of positions at a time equals the plain
loss (value, metrics and gradient), and its compiled gradient never holds [B, S, V] logits."""

import jax
import jax.numpy as jnp
import numpy as np

from metareason.model import ModelConfig, init
from metareason.train.loss import sft_loss

CFG = ModelConfig(family="qwen2", vocab_size=211, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                  num_kv_heads=2, initializer_range=0.2)


def _batch(B=3, S=29):
    rng = np.random.default_rng(0)
    seg = np.concatenate([np.ones((B, 11)), 2 * np.ones((B, 14)), np.zeros((B, S - 25))], 1).astype(np.int32)
    pos = np.concatenate([np.arange(11), np.arange(14), np.zeros(S - 25, int)])[None].repeat(B, 0).astype(np.int32)
    return dict(tokens=rng.integers(0, 211, (B, S)).astype(np.int32), segment_ids=seg, positions=pos,
                loss_mask=(rng.random((B, S)) < 0.7).astype(np.int32))


def test_chunked_loss_equals_the_plain_loss_and_gradient():
    params, b = init(CFG, jax.random.key(0)), _batch()
    chunked = CFG.replace(loss_chunk=5)  # 28 targets: 6 chunks, the last one padded
    (l0, m0), g0 = jax.value_and_grad(lambda p: sft_loss(p, b, config=CFG), has_aux=True)(params)
    (l1, m1), g1 = jax.value_and_grad(lambda p: sft_loss(p, b, config=chunked), has_aux=True)(params)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    assert float(m1["tokens"]) == float(m0["tokens"]) and abs(float(m1["accuracy"]) - float(m0["accuracy"])) < 1e-7
    for x, y in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
        np.testing.assert_allclose(x, y, atol=1e-7, rtol=1e-5)


def test_chunked_grpo_logprobs_and_entropy_equal_the_plain_ones():
    from metareason.train.grpo import token_logprobs

    params, b = init(CFG, jax.random.key(1)), _batch()
    want = token_logprobs(params, b["tokens"], config=CFG, temperature=0.7)
    got = token_logprobs(params, b["tokens"], config=CFG.replace(loss_chunk=6), temperature=0.7)
    for x, y in zip(got, want):
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=1e-5)


def test_chunked_loss_never_holds_the_logits():
    cfg = CFG.replace(vocab_size=8192, attention_impl="chunked", attention_chunk=64)  # no [S, S] scores either
    params = jax.eval_shape(lambda: init(cfg, jax.random.key(0)))
    batch = {k: jax.ShapeDtypeStruct((4, 512), jnp.int32) for k in ("tokens", "segment_ids", "positions", "loss_mask")}

    def temp(c):
        f = jax.jit(jax.grad(lambda p, x: sft_loss(p, x, config=c)[0]))
        return f.lower(params, batch).compile().memory_analysis().temp_size_in_bytes

    logits = 4 * 512 * 8192 * 4
    plain, chunked = temp(cfg), temp(cfg.replace(loss_chunk=64))
    assert plain > 2 * logits and chunked < logits and chunked < plain / 4, (plain, chunked, logits)
