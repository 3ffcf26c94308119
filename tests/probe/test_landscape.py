"""E1 landscape: direction normalisation, the surface against direct evaluation, path placement."""

import jax
import numpy as np
import pytest

from metareason.model import flatten
from metareason.probe import ProbeBatch, answer_loss_per_prefix
from metareason.probe.landscape import loss_surface, place_path, random_directions
from reference import TINY, random_params


def test_directions_match_tensor_norms():
    config = TINY["qwen2"]
    params = random_params(config)
    d = flatten(random_directions(params, jax.random.key(0)))
    p = flatten(params)
    for name, x in p.items():
        x, u = np.asarray(x), np.asarray(d[name])
        if name.startswith(("embed_tokens", "lm_head")):
            assert not u.any(), name
        elif name.startswith("layers"):
            for layer in range(x.shape[0]):
                assert np.linalg.norm(u[layer]) == pytest.approx(np.linalg.norm(x[layer]), rel=1e-5), name
        else:
            assert np.linalg.norm(u) == pytest.approx(np.linalg.norm(x), rel=1e-5), name
    d2 = flatten(random_directions(params, jax.random.key(1)))
    assert not np.allclose(d2["norm/scale"], d["norm/scale"])


def test_surface_equals_direct_evaluation():
    config = TINY["qwen2"]
    params = random_params(config, seed=3)
    rng = np.random.default_rng(0)
    batch = ProbeBatch(rng.integers(0, config.vocab_size, (2, 10)), [10, 8], [[4], [5]],
                       rng.integers(0, config.vocab_size, (2, 4)), [[False, True, True, False]] * 2)
    d1, d2 = random_directions(params, jax.random.key(0)), random_directions(params, jax.random.key(1))
    alphas, betas = [-0.5, 0.0, 0.25], [-0.2, 0.3]
    surf = loss_surface(params, config, batch, d1, d2, alphas, betas, chunk=4)
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            p = jax.tree.map(lambda t, u, v: t + a * u + b * v, params, d1, d2)
            want = float(np.mean(answer_loss_per_prefix(p, batch, config=config).mean))
            assert surf[i, j] == pytest.approx(want, rel=1e-5)


def test_place_path_follows_descent():
    a = b = np.linspace(-1, 1, 5)
    A, B = np.meshgrid(a, b, indexing="ij")
    surface = (A - 1) ** 2 + B ** 2  # minimum at (1, 0), theta at (0, 0) with value 1
    pts = place_path(surface, a, b, [2.0, 1.0, 0.625, 0.25, 0.0, -1.0])
    np.testing.assert_allclose(pts[:2], [[0, 0], [0, 0]])       # not below the start: stays
    np.testing.assert_allclose(pts[2], [0.25, 0])                # halfway between 1.0 and 0.25
    np.testing.assert_allclose(pts[3:], [[0.5, 0], [1, 0], [1, 0]])
