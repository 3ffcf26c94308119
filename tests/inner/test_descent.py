"""Line-searched true gradient steps: against a hand-written numpy loop and direct losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metareason.inner.descent import descend, question_descent
from metareason.inner.objectives import ExampleError
from metareason.model import apply
from metareason.probe.inputs import Example
from reference import TINY, random_params


def test_descend_equals_a_numpy_grid_line_search():
    rng = np.random.default_rng(0)
    M = rng.standard_normal((5, 5))
    A = M @ M.T + 0.5 * np.eye(5)
    b = rng.standard_normal(5)
    f = lambda x: 0.5 * x @ A @ x - b @ x  # noqa: E731
    lrs = [0.0, 0.01, 0.05, 0.1, 0.3]
    x = np.zeros(5)
    ref_vals, ref_lrs = [], []
    for _ in range(6):
        g = A @ x - b
        vals = [f(x - lr * g) for lr in lrs]
        ref_vals.append(f(x))
        ref_lrs.append(lrs[int(np.argmin(vals))])
        x = x - ref_lrs[-1] * g
    ref_vals.append(f(x))
    fj = lambda p: 0.5 * p["x"] @ jnp.asarray(A, jnp.float32) @ p["x"] - jnp.asarray(b, jnp.float32) @ p["x"]  # noqa
    res = jax.jit(lambda p: descend(fj, p, steps=6, lrs=lrs, measure=lambda q: jnp.sum(q["x"])))(
        {"x": jnp.zeros(5)})
    np.testing.assert_allclose(res.objective, ref_vals, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.lr, ref_lrs)
    np.testing.assert_allclose(res.params["x"], x, rtol=1e-4, atol=1e-6)
    assert np.all(np.diff(res.objective) <= 1e-6)  # lr = 0 is in the grid: never worse
    np.testing.assert_allclose(res.measure[-1], x.sum(), rtol=1e-4)


def example(config, rng, P=5, T=9, A=5):
    v = config.vocab_size
    return Example(rng.integers(0, v, P).astype(np.int32), rng.integers(0, v, T).astype(np.int32),
                   rng.integers(0, v, A).astype(np.int32), np.array([0, 0, 1, 1, 0], bool), ("word",) * T, {})


def direct_losses(params, config, ex):
    """(question-only answer loss, trajectory SFT loss) from `apply` on the literal sequences."""
    q, T = len(ex.prompt), len(ex.trajectory)
    lp = jax.nn.log_softmax(apply(params, np.concatenate([ex.prompt, ex.probe])[None], config=config).logits[0])
    ans = -np.mean([lp[q + j - 1, ex.probe[j]] for j in np.flatnonzero(ex.targets)])
    seq = np.concatenate([ex.prompt, ex.trajectory])
    lp = jax.nn.log_softmax(apply(params, seq[None], config=config).logits[0])
    traj = -np.mean([lp[q + i - 1, ex.trajectory[i]] for i in range(T)])
    return ans, traj


@pytest.mark.parametrize("subset", [pytest.param("all", marks=pytest.mark.slow), "mlp"])  # "all": ~25 s more
def test_question_descent_losses_and_subset(subset):
    config = TINY["qwen2"]
    params = random_params(config, seed=2)
    ex = example(config, np.random.default_rng(1))
    res = question_descent(params, ex, config=config, steps=4, subset=subset)
    ans, traj = direct_losses(params, config, ex)
    np.testing.assert_allclose(res["answer_gd"][0], ans, rtol=1e-5)
    np.testing.assert_allclose(res["answer_sft"][0], ans, rtol=1e-5)
    np.testing.assert_allclose(res["sft_loss"][0], traj, rtol=1e-5)
    assert res["answer_gd"][-1] < 0.5 * ans  # four line-searched steps on the answer loss itself
    assert np.all(np.diff(res["answer_gd"]) <= 1e-5) and np.all(np.diff(res["sft_loss"]) <= 1e-5)
    assert res["lr_gd"].shape == (4,) and np.all(res["lr_gd"] > 0)


def test_mlp_subset_moves_only_mlp_kernels():
    config = TINY["qwen2"]
    params = random_params(config, seed=3)
    ex = example(config, np.random.default_rng(2))
    from metareason.inner.objectives import answer_loss, prepare
    p = prepare(ex, config)
    out = descend(lambda w: answer_loss(w, p, 0, config=config), params, steps=2, subset="mlp").params
    flat_in = jax.tree_util.tree_flatten_with_path(params)[0]
    flat_out = jax.tree.leaves(out)
    for (path, a), b in zip(flat_in, flat_out):
        moved = not np.array_equal(np.asarray(a), np.asarray(b))
        assert moved == ("mlp" in jax.tree_util.keystr(path)), jax.tree_util.keystr(path)


def test_bad_input():
    config = TINY["qwen2"]
    ex = example(config, np.random.default_rng(0))
    with pytest.raises(ExampleError, match="steps must be >= 1"):
        question_descent(random_params(config), ex, config=config, steps=0)
    with pytest.raises(ExampleError, match="unknown weight subset"):
        question_descent(random_params(config), ex, config=config, steps=1, subset="attention")
