"""sft_loss on an unpacked batch (no segment_ids / positions: one sequence per row, plain causal
attention) equals a numpy next-token NLL of the model's logits and the packed form with one segment
per row, plain and chunked."""

import jax
import numpy as np
import pytest

from metareason.model import ModelConfig, apply, init
from metareason.train.loss import sft_loss

CFG = ModelConfig(family="qwen2", vocab_size=97, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                  num_kv_heads=2, initializer_range=0.2)


@pytest.mark.parametrize("loss_chunk", [0, 4])
def test_unpacked_batch_equals_reference_and_packed_form(loss_chunk):
    config = CFG.replace(loss_chunk=loss_chunk)
    rng = np.random.default_rng(0)
    B, S = 3, 17
    tokens = rng.integers(0, 97, (B, S)).astype(np.int32)
    loss_mask = (rng.random((B, S)) < 0.6).astype(np.int32)
    params = init(config, jax.random.key(0))
    unpacked = dict(tokens=tokens, loss_mask=loss_mask)
    packed = dict(unpacked, segment_ids=np.ones((B, S), np.int32),
                  positions=np.broadcast_to(np.arange(S, dtype=np.int32), (B, S)).copy())

    logits = np.asarray(apply(params, tokens, config=CFG).logits, np.float64)[:, :-1]
    logz = logits - logits.max(-1, keepdims=True)
    logz -= np.log(np.exp(logz).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logz, tokens[:, 1:, None].astype(np.int64), -1)[..., 0]
    weight = loss_mask[:, 1:].astype(np.float64)
    want = (nll * weight).sum() / weight.sum()

    (l_u, m_u), g_u = jax.value_and_grad(lambda p: sft_loss(p, unpacked, config=config), has_aux=True)(params)
    (l_p, m_p), g_p = jax.value_and_grad(lambda p: sft_loss(p, packed, config=config), has_aux=True)(params)
    np.testing.assert_allclose(float(l_u), want, rtol=1e-5)
    np.testing.assert_allclose(float(l_u), float(l_p), rtol=1e-6)
    assert float(m_u["tokens"]) == weight.sum() == float(m_p["tokens"])
    for x, y in zip(jax.tree.leaves(g_u), jax.tree.leaves(g_p)):
        np.testing.assert_allclose(x, y, atol=1e-6, rtol=1e-5)


def test_unpacked_batch_reaches_the_plain_causal_path(monkeypatch):
    """Without segment ids attention gets no mask (cuDNN's causal kernel, not a dense [B, S, S] bias);
    with them it gets the segment mask."""
    from metareason.model import transformer

    seen = []
    real = transformer._attention

    def spy(q, k, v, mask, *args, **kwargs):
        seen.append(None if mask is None else mask.shape)
        return real(q, k, v, mask, *args, **kwargs)

    monkeypatch.setattr(transformer, "_attention", spy)
    params = init(CFG, jax.random.key(0))
    B, S = 2, 23  # shapes no other test traces, so nothing comes from jit's cache
    tokens = np.zeros((B, S), np.int32)
    ones = np.ones((B, S), np.int32)
    sft_loss(params, dict(tokens=tokens, loss_mask=ones), config=CFG)
    assert seen and set(seen) == {None}
    seen.clear()
    sft_loss(params, dict(tokens=tokens, loss_mask=ones, segment_ids=ones, positions=np.cumsum(ones, 1) - 1),
             config=CFG)
    assert seen and set(seen) == {(B, S, S)}
