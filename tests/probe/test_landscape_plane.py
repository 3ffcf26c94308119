"""E1 measured: the surface in the plane of a trajectory's implicit updates; at each plotted point
the surface value equals the probe's L-hat (the implicit update is exact and the plane holds it)."""

import jax
import numpy as np
import pytest

from metareason.inner.implicit import implicit_update, patch
from metareason.probe import ProbeBatch, answer_loss_per_prefix
from metareason.probe.inputs import Example, make_batch
from metareason.probe.landscape import measured_landscape, update_plane
from reference import TINY, random_params


def _example(config, rng, P=6, T=12, A=6):
    targets = np.zeros(A, bool)
    targets[2:5] = True
    v = config.vocab_size
    return Example(rng.integers(0, v, P).astype(np.int32), rng.integers(0, v, T).astype(np.int32),
                   rng.integers(0, v, A).astype(np.int32), targets, ("word",) * T, {})


def test_surface_at_each_plotted_point_is_lhat():
    config = TINY["qwen2"]
    params = random_params(config, seed=3)
    ex = _example(config, np.random.default_rng(0))
    ks = [0, 5, 12]
    zero = jax.tree.map(np.zeros_like, params)
    updates = [patch(zero, implicit_update(params, ex, k, config=config).delta) for k in ks]
    q = len(ex.prompt)
    ref = ProbeBatch(np.concatenate([ex.prompt, ex.trajectory])[None], [q + len(ex.trajectory)],
                     np.asarray([ks]) + q, ex.probe[None], ex.targets[None])
    lhat = np.asarray(answer_loss_per_prefix(params, ref, config=config).mean[0])  # the probe, in context
    assert np.ptp(lhat) > 0.05
    batch = make_batch([ex], [np.zeros(1, np.int32)])  # the question only
    res = measured_landscape(params, config, batch, updates, grid=3)
    np.testing.assert_allclose(res["residual"], 0, atol=1e-5)  # two non-zero updates: in the plane
    np.testing.assert_allclose(res["coords"][0], 0, atol=1e-7)  # the empty prefix is theta
    np.testing.assert_allclose(res["point_loss"], lhat, rtol=1e-4, atol=2e-4)
    np.testing.assert_allclose(res["surface_at_points"], lhat, rtol=1e-4, atol=2e-4)
    assert res["surface"].shape == (3, 3)
    # coords are projections: |u| = |(a, b)| when the residual is 0
    norms = [np.sqrt(sum(float(np.sum(np.square(x))) for x in jax.tree.leaves(u))) for u in updates]
    np.testing.assert_allclose(np.linalg.norm(res["coords"], axis=1), norms, rtol=1e-5)


def test_plane_of_three_directions_reports_residual():
    rng = np.random.default_rng(1)
    u = [{"w": rng.normal(size=(4, 3))} for _ in range(3)]
    plane = update_plane(u)
    flat = np.stack([x["w"].ravel() for x in u])
    d = np.stack([np.asarray(plane["d1"]["w"]).ravel(), np.asarray(plane["d2"]["w"]).ravel()])
    np.testing.assert_allclose(d @ d.T, np.eye(2), atol=1e-6)
    np.testing.assert_allclose(plane["coords"], flat @ d.T, rtol=1e-5)
    want = np.linalg.norm(flat - plane["coords"] @ d, axis=1) / np.linalg.norm(flat, axis=1)
    np.testing.assert_allclose(plane["residual"], want, rtol=1e-5)
    assert plane["residual"].max() > 0.01
    # the first two singular directions capture the most: no other orthonormal pair does better
    q, _ = np.linalg.qr(rng.normal(size=(12, 2)))
    assert np.sum(np.square(flat @ q)) <= np.sum(np.square(plane["coords"])) + 1e-9
    with pytest.raises(ValueError, match="at least one"):
        update_plane([])
