"""GRPO's loss and gradient against a plain per-rollout, per-token reference (clip, KL, entropy,
update mask, every aggregation); advantages against numpy; the update mask's counts."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metareason.model import ModelConfig, apply, init
from metareason.train.grpo import (AGGREGATIONS, GRPOLossConfig, group_advantages, grpo_loss, token_logprobs,
                                   update_mask)
from metareason.train.rl import rollout_batch

CONFIG = ModelConfig(family="qwen2", vocab_size=40, hidden_size=32, intermediate_size=64, num_layers=2,
                     num_heads=4, num_kv_heads=2, max_position_embeddings=64)
Q, G, WIDTH, N = 2, 3, 6, 7


def _rollouts(seed=0):
    rng = np.random.default_rng(seed)
    prompts = [list(rng.integers(1, 40, int(rng.integers(2, WIDTH + 1)))) for _ in range(Q)]
    lengths = rng.integers(1, N + 1, Q * G).astype(np.int32)
    tokens = rng.integers(1, 40, (Q * G, N)).astype(np.int32)
    return prompts, tokens, lengths


def reference_loss(params, prompts, tokens, lengths, adv, old, ref, rows, loss: GRPOLossConfig, temperature):
    """Plain GRPO: one unpadded forward per rollout, the formulas written out on its completion
    tokens. `old`, `ref`: per row, per completion token; `rows`: the rollouts that enter the loss."""
    per_row, count = [], 0
    for b in rows:
        p, n = prompts[b // G], int(lengths[b])
        seq = jnp.asarray(list(p) + list(tokens[b, :n]))[None]
        logits = apply(params, seq, config=CONFIG).logits[0] / temperature
        lp = jax.nn.log_softmax(logits[len(p) - 1:len(p) + n - 1])          # predicts completion token j
        logp = lp[jnp.arange(n), jnp.asarray(tokens[b, :n])]
        ratio = jnp.exp(logp - jnp.asarray(old[b]))
        surrogate = jnp.minimum(ratio * adv[b], jnp.clip(ratio, 1 - loss.clip_low, 1 + loss.clip_high) * adv[b])
        d = jnp.asarray(ref[b]) - logp
        kl = jnp.exp(d) - d - 1
        entropy = -(jnp.exp(lp) * lp).sum(-1)
        per_row.append(-surrogate + loss.kl_coef * kl - loss.entropy_coef * entropy)
        count += n
    if loss.aggregation == "token-mean":
        return sum(t.sum() for t in per_row) / count
    if loss.aggregation == "seq-mean-token-mean":
        return sum(t.mean() for t in per_row) / len(per_row)
    return sum(t.sum() for t in per_row) / (len(per_row) * (WIDTH + N))


def _case(seed=0, temperature=1.0):
    params = init(CONFIG, jax.random.key(seed))
    prompts, tokens, lengths = _rollouts(seed)
    batch = rollout_batch(prompts, tokens, lengths, group=G, width=WIDTH)
    rng = np.random.default_rng(seed + 1)
    logp, _ = token_logprobs(params, batch["tokens"], config=CONFIG, temperature=temperature)
    mask = batch["loss_mask"]
    # an old policy half a nat away (so the ratio leaves the clip range) and a reference further off
    old = (np.asarray(logp) + rng.uniform(-0.5, 0.5, mask.shape)) * mask
    ref = (np.asarray(logp) + rng.uniform(-1.0, 1.0, mask.shape)) * mask
    adv = rng.normal(size=Q * G).astype(np.float32)
    batch.update(advantages=adv, old_logprobs=old.astype(np.float32), ref_logprobs=ref.astype(np.float32))

    def per_token(x):  # row b's completion values, as the reference indexes them
        return [x[b, len(prompts[b // G]):len(prompts[b // G]) + lengths[b]] for b in range(Q * G)]

    return params, prompts, tokens, lengths, batch, per_token(old), per_token(ref)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_loss_and_gradient_equal_the_plain_reference(aggregation):
    loss = GRPOLossConfig(clip_low=0.2, clip_high=0.28, kl_coef=0.05, entropy_coef=0.01, aggregation=aggregation)
    params, prompts, tokens, lengths, batch, old, ref = _case(0, temperature=0.9)
    batch["update_mask"] = np.ones(Q * G, np.float32)
    fn = functools.partial(grpo_loss, batch=batch, config=CONFIG, loss=loss, temperature=0.9)
    (got, metrics), g_got = jax.value_and_grad(lambda p: fn(p), has_aux=True)(params)
    ref_fn = functools.partial(reference_loss, prompts=prompts, tokens=tokens, lengths=lengths, adv=batch["advantages"],
                               old=old, ref=ref, rows=range(Q * G), loss=loss, temperature=0.9)
    want, g_want = jax.value_and_grad(lambda p: ref_fn(p))(params)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), g_got, g_want)
    assert 0.05 < float(metrics["clip_fraction"]) < 0.95        # the clip is exercised both ways
    assert float(metrics["tokens"]) == lengths.sum()


def test_update_mask_equals_the_reference_on_the_chosen_rollouts_and_n_equal_g_is_plain_grpo():
    loss = GRPOLossConfig(kl_coef=0.01)
    params, prompts, tokens, lengths, batch, old, ref = _case(1)
    ref_fn = functools.partial(reference_loss, prompts=prompts, tokens=tokens, lengths=lengths,
                               adv=batch["advantages"], old=old, ref=ref, loss=loss, temperature=1.0)
    for n in (1, 2, G):
        mask = np.asarray(update_mask(jax.random.key(n), Q, G, n))
        assert mask.reshape(Q, G).sum(1).tolist() == [n] * Q
        batch["update_mask"] = mask
        got, g_got = jax.value_and_grad(lambda p: grpo_loss(p, batch, config=CONFIG, loss=loss)[0])(params)
        want, g_want = jax.value_and_grad(lambda p: ref_fn(p, rows=np.flatnonzero(mask)))(params)
        np.testing.assert_allclose(got, want, rtol=1e-5)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), g_got, g_want)
    assert np.all(mask == 1)  # n = G: every rollout, the plain GRPO above


def test_first_pass_ratio_is_one_and_the_loss_is_the_advantage_weighted_logprob():
    # at old = current policy, the policy gradient equals -mean(A * grad logp) (the REINFORCE form)
    params, prompts, tokens, lengths, batch, *_ = _case(2)
    logp, _ = token_logprobs(params, batch["tokens"], config=CONFIG)
    batch.update(old_logprobs=np.asarray(logp) * batch["loss_mask"], ref_logprobs=np.asarray(logp) * batch["loss_mask"],
                 update_mask=np.ones(Q * G, np.float32))
    loss = GRPOLossConfig(kl_coef=0.0)
    g = jax.grad(lambda p: grpo_loss(p, batch, config=CONFIG, loss=loss)[0])(params)
    w = batch["loss_mask"] / batch["loss_mask"].sum()

    def reinforce(p):
        lp, _ = token_logprobs(p, batch["tokens"], config=CONFIG)
        return -(batch["advantages"][:, None] * lp * w).sum()

    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), g, jax.grad(reinforce)(params))


def test_group_advantages():
    r = np.array([[1.0, 0.0, -1.0, 1.0], [0.5, 0.5, 0.5, 0.5], [-1.0, -1.0, 1.0, -1.0]], np.float32)
    want = (r - r.mean(1, keepdims=True)) / (r.std(1, ddof=1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(group_advantages(r), want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(group_advantages(r, "dr-grpo"), r - r.mean(1, keepdims=True), atol=1e-7)
    assert np.all(np.asarray(group_advantages(r))[1] == 0)            # equal rewards: zero, not NaN
    assert np.all(np.asarray(group_advantages(np.ones((2, 1)))) == 0)  # G = 1
    with pytest.raises(ValueError, match="unknown advantage mode"):
        group_advantages(r, "ppo")


def test_update_mask_is_uniform_over_rollouts():
    counts = sum(np.asarray(update_mask(jax.random.key(i), 1, 8, 2)) for i in range(400))
    assert counts.sum() == 800 and counts.min() > 60 and counts.max() < 140   # about 100 each
    with pytest.raises(ValueError, match=r"update_n must be in \[1, group_size=8\]"):
        update_mask(jax.random.key(0), 1, 8, 9)


@pytest.mark.parametrize("kw, msg", [(dict(aggregation="sum"), "unknown loss aggregation"),
                                     (dict(clip_low=1.0), "clip_low must be < 1"),
                                     (dict(kl_coef=-1.0), "kl_coef must be >= 0")])
def test_bad_loss_config(kw, msg):
    with pytest.raises(ValueError, match=msg):
        GRPOLossConfig(**kw)
