"""Implicit weight updates are exact: the question-only model with W + dW(t_<=k) reproduces the
in-context logits at the answer positions (checked with `apply` on literal concatenations)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metareason.inner.implicit import ImplicitError, implicit_trajectory, implicit_update, patch
from metareason.model import apply
from metareason.probe import ProbeBatch, answer_loss_per_prefix
from reference import TINY, random_example, random_params


def literal(params, config, ex, k):
    """(in-context logits, patched question-only logits) at the scored positions, by `apply`."""
    upd = implicit_update(params, ex, k, config=config)
    q = len(ex.prompt)
    pos = np.flatnonzero(ex.targets) - 1
    ctx = np.concatenate([ex.prompt, ex.trajectory[:k], ex.probe])[None]
    base = np.concatenate([ex.prompt, ex.probe])[None]
    in_ctx = np.asarray(apply(params, ctx, config=config).logits[0, q + k + pos])
    patched = np.asarray(apply(patch(params, upd.delta), base, config=config).logits[0, q + pos])
    return upd, in_ctx, patched


@pytest.mark.parametrize("name", ["qwen2", "llama3", "qwen3"])
def test_patched_model_reproduces_in_context_logits(name):
    config = TINY[name]
    params = random_params(config, seed=3)
    ex = random_example(config, np.random.default_rng(0))
    plain = np.asarray(apply(params, np.concatenate([ex.prompt, ex.probe])[None], config=config).logits[0])
    for k in (1, 5, 14):
        upd, in_ctx, patched = literal(params, config, ex, k)
        pos = len(ex.prompt) + np.flatnonzero(ex.targets) - 1
        assert np.abs(in_ctx - plain[pos]).max() > 0.1  # the trajectory changes the answer logits
        np.testing.assert_allclose(patched, in_ctx, rtol=1e-4, atol=2e-4)
        np.testing.assert_allclose(upd.logits_patched, in_ctx, rtol=1e-4, atol=2e-4)
        # rank <= Q (3 scored positions) per layer and kernel
        for d in upd.delta.values():
            assert max(np.linalg.matrix_rank(np.asarray(x), tol=1e-4) for x in d) <= 3


def test_no_trajectory_tokens_no_update():
    config = TINY["qwen2"]
    params = random_params(config, seed=1)
    upd = implicit_update(params, random_example(config, np.random.default_rng(1)), 0, config=config)
    for d in upd.delta.values():
        np.testing.assert_allclose(d, 0, atol=1e-5)


def test_one_answer_token_is_dherins_rank_one_formula():
    """Q = 1: layer 0's gate update is u0 (W^T du)^T / |u0|^2 (Dherin et al. 2025, eq. for dW)."""
    config = TINY["qwen2"]
    params = random_params(config, seed=5)
    ex = random_example(config, np.random.default_rng(2), scored=(3, 4))
    k, q, p = 9, len(ex.prompt), 2  # the scored token is probe[3], its logit at probe position 2
    upd = implicit_update(params, ex, k, config=config)
    ctx = np.concatenate([ex.prompt, ex.trajectory[:k], ex.probe])[None]
    base = np.concatenate([ex.prompt, ex.probe])[None]
    u_c = np.asarray(apply(params, ctx, config=config, return_intermediates=True).intermediates["mlp_in"][0, 0, q + k + p])
    u_0 = np.asarray(apply(params, base, config=config, return_intermediates=True).intermediates["mlp_in"][0, 0, q + p])
    W = np.asarray(params["layers"]["mlp"]["gate_proj"]["kernel"][0])
    expected = np.outer(u_0, (u_c - u_0) @ W) / (u_0 @ u_0)
    np.testing.assert_allclose(upd.delta["gate_proj"][0], expected, rtol=1e-4, atol=1e-6)


def test_trajectory_statistics_match_direct_computation():
    config = TINY["llama3"]
    params = random_params(config, seed=7)
    ex = random_example(config, np.random.default_rng(4), T=10)
    ks = [0, 2, 3, 7, 10]
    res = implicit_trajectory(params, ex, ks, config=config)
    q, pos = len(ex.prompt), np.flatnonzero(ex.targets) - 1
    # the probe reference (one forward per prefix, in the probe module)
    batch = ProbeBatch(np.concatenate([ex.prompt, ex.trajectory])[None], [q + 10], np.asarray([ks]) + q,
                       ex.probe[None], ex.targets[None])
    ref = np.asarray(answer_loss_per_prefix(params, batch, config=config).mean[0])
    np.testing.assert_allclose(res["loss_in_context"], ref, rtol=1e-5)
    np.testing.assert_allclose(res["loss_patched"], ref, rtol=1e-4)
    assert res["max_logit_error"].max() < 1e-3
    base = np.concatenate([ex.prompt, ex.probe])[None]
    labels = ex.probe[pos + 1]

    def loss(p):
        lp = jax.nn.log_softmax(apply(p, base, config=config).logits[0, q + pos])
        return -jnp.mean(lp[jnp.arange(len(pos)), labels])

    g = jax.grad(loss)(params)["layers"]["mlp"]
    gv = np.concatenate([np.asarray(g[n]["kernel"]).ravel() for n in ("gate_proj", "up_proj", "down_proj")])
    np.testing.assert_allclose(res["loss0"], loss(params), rtol=1e-5)
    np.testing.assert_allclose(res["grad_norm"], np.linalg.norm(gv), rtol=1e-4)
    d3, d7 = (implicit_update(params, ex, k, config=config).delta for k in (3, 7))
    v3, v7 = (np.concatenate([np.asarray(d[n]).ravel() for n in ("gate_proj", "up_proj", "down_proj")])
              for d in (d3, d7))
    cos = lambda a, b: a @ b / np.linalg.norm(a) / np.linalg.norm(b)  # noqa: E731
    np.testing.assert_allclose(res["cos_cumulative"][3], cos(-gv, v7), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(res["cos_token"][3], cos(-gv, v7 - v3), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(res["norm_token"][3], np.linalg.norm(v7 - v3) / np.linalg.norm(gv), rtol=1e-3)
    np.testing.assert_allclose(res["first_order"][3], gv @ v7, rtol=1e-3, atol=1e-5)
    tok = jax.tree.map(lambda a, b: a - b, d7, d3)
    np.testing.assert_allclose(res["loss_token_step"][3], loss(patch(params, tok)), rtol=1e-4)
    assert res["cos_cumulative_layer"].shape == (5, config.num_layers)


@pytest.mark.slow  # ~50 s (trains); the patched-model logit tests run by default
def test_a_trained_lab_models_blocks(tmp_path):
    from metareason.probe.inputs import LabCodec
    from metareason.tasks.lab import lab_records
    from metareason.train.presets import train_presets
    from metareason.train.sft import load_run, train_sft

    cfg = train_presets()["tiny"]
    cfg = dataclasses.replace(cfg, out=tmp_path / "run", steps=16, final_eval=False, checkpoint_every=16)
    train_sft(cfg)
    _, config, params, _ = load_run(tmp_path / "run")
    rec = next(iter(lab_records(cfg.lab, "test")))
    ex = LabCodec().example(rec["question"], rec["trajectory"], rec["answer"])
    T = len(ex.trajectory)
    res = implicit_trajectory(params, ex, [0, T // 3, T], config=config)
    np.testing.assert_allclose(res["loss_patched"], res["loss_in_context"], rtol=1e-4, atol=1e-4)
    upd, in_ctx, patched = literal(params, config, ex, T)
    np.testing.assert_allclose(patched, in_ctx, rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("change,message", [
    (dict(targets=np.array([1, 1, 0, 0, 0, 0], bool)), "first probe token"),
    (dict(targets=np.zeros(6, bool)), "at least one scored"),
    (dict(prompt=np.zeros(0, np.int32)), "prompt is empty"),
    (dict(probe=np.array([0, 1, 2, 3, 4, 999], np.int32)), "token ids"),
])
def test_bad_input(change, message):
    config = TINY["qwen2"]
    ex = dataclasses.replace(random_example(config, np.random.default_rng(0)), **change)
    with pytest.raises(ImplicitError, match=message):
        implicit_trajectory(random_params(config), ex, config=config)


def test_bad_prefix_lengths():
    config = TINY["qwen2"]
    ex = random_example(config, np.random.default_rng(0))
    with pytest.raises(ImplicitError, match="increasing prefix lengths"):
        implicit_trajectory(random_params(config), ex, [0, 3, 3], config=config)
    with pytest.raises(ImplicitError, match="out of range"):
        implicit_update(random_params(config), ex, 15, config=config)
