"""The SFT loss on packed batches against separate per-sequence computations; the step's
NaN guard; the E10 slot rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metareason.model import apply
from metareason.train.loss import sft_loss
from metareason.train.state import OptimizerConfig, init_state, make_optimizer
from metareason.train.step import make_train_step
from metareason.train.trajectories import trajectory_slots
from reference import TINY, random_params

CONFIG = TINY["qwen2"]


def _packed(seqs, masks, S):
    """A one-row packed batch built by hand."""
    tokens, seg, pos, lm = (np.zeros((1, S), np.int32) for _ in range(4))
    at = 0
    for i, (t, m) in enumerate(zip(seqs, masks)):
        n = len(t)
        tokens[0, at:at + n], seg[0, at:at + n], pos[0, at:at + n], lm[0, at:at + n] = t, i + 1, np.arange(n), m
        at += n
    return {"tokens": tokens, "segment_ids": seg, "positions": pos, "loss_mask": lm}


def test_packed_loss_equals_per_sequence_reference():
    params = random_params(CONFIG)
    rng = np.random.RandomState(0)
    seqs = [rng.randint(0, CONFIG.vocab_size, n) for n in (7, 12, 5)]
    masks = [np.r_[np.zeros(3), np.ones(n - 3)].astype(np.int32) for n in (7, 12, 5)]
    batch = _packed(seqs, masks, 30)
    loss, metrics = sft_loss(params, batch, config=CONFIG)
    nll, count = 0.0, 0
    for t, m in zip(seqs, masks):  # reference: each sequence alone, targets where the mask says
        logp = jax.nn.log_softmax(apply(params, t[None], config=CONFIG).logits[0])
        for s in range(1, len(t)):
            if m[s]:
                nll -= float(logp[s - 1, t[s]])
                count += 1
    assert int(metrics["tokens"]) == count
    np.testing.assert_allclose(float(loss), nll / count, rtol=1e-5)


def test_step_with_nan_commits_nothing():
    params = random_params(CONFIG)
    bad_token = 7
    params["embed_tokens"]["embedding"] = params["embed_tokens"]["embedding"].at[bad_token].set(jnp.nan)
    opt = make_optimizer(OptimizerConfig(lr=1e-2, warmup_steps=1), total_steps=10)
    step = make_train_step(CONFIG, opt)
    good = _packed([np.array([1, 2, 3, 4, 5, 6])], [np.array([0, 1, 1, 1, 1, 1])], 8)
    bad = _packed([np.array([1, 2, bad_token, 4, 5, 6])], [np.array([0, 1, 1, 1, 1, 1])], 8)
    state = init_state(params, opt, seed=0)
    state, m = step(state, good)
    assert bool(m["finite"]) and int(state.step) == 1
    before = jax.tree.map(np.asarray, state)
    state, m = step(state, bad)
    assert not bool(m["finite"])
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), jax.tree.map(np.asarray, state), before)
    state, m = step(state, good)
    assert bool(m["finite"]) and int(state.step) == 2


def test_trajectory_slots_equal_frequency():
    for k in (1, 2, 4, 8, 16, 32):
        s = trajectory_slots(5, k, 32, seed=0)
        assert s.shape == (160, 2)
        for q in range(5):
            counts = np.bincount(s[s[:, 0] == q, 1], minlength=k)
            assert counts.sum() == 32 and counts.min() == counts.max() == 32 // k
    assert not np.array_equal(trajectory_slots(3, 2, 4, 0), trajectory_slots(3, 2, 4, 1))
    with pytest.raises(ValueError, match="cannot fit"):
        trajectory_slots(1, 5, 4, 0)
