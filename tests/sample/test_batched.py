"""generate_all: fixed-shape batches give what one-prompt-at-a-time generation gives."""

import jax
import numpy as np
import pytest

from metareason.model import init
from metareason.sample import SamplingConfig, generate, generate_all, round_up
from reference import TINY


def test_round_up():
    assert [round_up(n, 8) for n in (0, 1, 8, 9)] == [8, 8, 8, 16]


def test_generate_all_equals_single_prompts():
    config = TINY["qwen2"].replace(max_position_embeddings=64)
    params = init(config, jax.random.key(0))
    rng = np.random.default_rng(0)
    prompts = [rng.integers(1, config.vocab_size, n).tolist() for n in (3, 7, 5, 1, 9)]
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=6, stop_tokens=(5,), pad_id=0)
    got = generate_all(params, config, prompts, sampling, batch_size=2, multiple=4)
    for p, g in zip(prompts, got):
        one = generate(params, np.asarray([p]), np.asarray([len(p)]), config=config, sampling=sampling)
        np.testing.assert_array_equal(g, np.asarray(one.tokens[0, :one.lengths[0]]))


def test_generate_all_caps_to_the_context():
    config = TINY["qwen2"].replace(max_position_embeddings=16)
    params = init(config, jax.random.key(0))
    got = generate_all(params, config, [[1, 2, 3]], SamplingConfig(temperature=0.0, max_new_tokens=100), multiple=8)
    assert len(got[0]) == 8  # 16 - (3 rounded up to 8)
    with pytest.raises(ValueError, match="no room"):
        generate_all(params, config, [[1] * 20], SamplingConfig(temperature=0.0, max_new_tokens=4))
