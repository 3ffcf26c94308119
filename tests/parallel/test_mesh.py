"""The SFT step, the GRPO step, the probe, the meta-training step and the sampler on meshes of
the 8 fake CPU devices (conftest.py) give the single-device results, with params, optimizer
state and batches really sharded (data x fsdp x tensor = 8x1x1, 2x2x2, 1x4x2)."""

from __future__ import annotations

import functools

import jax
import numpy as np
import optax
import pytest

from metareason.inner.meta import make_meta_step
from metareason.model import ModelConfig, init
from metareason.parallel import (MeshConfig, make_mesh, param_specs, shard_batch, shard_params, sharded_init,
                                 use_mesh)
from metareason.probe.loss import ProbeBatch, answer_loss_along_trajectory
from metareason.sample import SamplingConfig, generate
from metareason.train.grpo import GRPOLossConfig, grpo_loss
from metareason.train.loss import sft_loss
from metareason.train.state import OptimizerConfig, init_state, make_optimizer
from metareason.train.step import make_train_step

# every dimension the rules split is divisible by 8 (so every mesh really splits it), except
# kv heads (2): tensor 4 must fall back to replicating them
CONFIG = ModelConfig(family="qwen2", vocab_size=96, hidden_size=64, intermediate_size=128, num_layers=2,
                     num_heads=8, num_kv_heads=2, head_dim=8, initializer_range=0.1)
B, S = 8, 32


def batch_of(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    seg = np.repeat([[1] * 20 + [2] * 12], B, 0).astype(np.int32)
    pos = np.concatenate([np.arange(20), np.arange(12)])[None].repeat(B, 0).astype(np.int32)
    return dict(tokens=rng.integers(0, CONFIG.vocab_size, (B, S)).astype(np.int32), segment_ids=seg,
                positions=pos, loss_mask=(rng.random((B, S)) < 0.8).astype(np.int32))


def rollouts(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, CONFIG.vocab_size, (B, S)).astype(np.int32)
    mask = np.zeros((B, S), np.int32)
    mask[:, 10:] = 1
    return dict(tokens=tokens, loss_mask=mask, update_mask=(np.arange(B) % 4 != 3).astype(np.int32),
                advantages=rng.normal(size=B).astype(np.float32),
                old_logprobs=(-2.0 + 0.3 * rng.normal(size=(B, S))).astype(np.float32),
                ref_logprobs=(-2.0 + 0.3 * rng.normal(size=(B, S))).astype(np.float32))


def maxdiff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def specs_match(tree, config, mesh) -> bool:
    want = jax.tree.leaves(param_specs(config, mesh), is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    got = [x.sharding.spec for x in jax.tree.leaves(tree)]
    return all(tuple(g) == tuple(w) for g, w in zip(got, want))


def run_all(params, mesh=None) -> dict:
    """Every computation, on one device (mesh None) or sharded on `mesh`."""
    out = {}
    optimizer = make_optimizer(OptimizerConfig(lr=1e-2, warmup_steps=1), 10)
    # fresh copies each time: the train steps donate their input state
    place_params = (lambda p: jax.tree.map(np.array, p)) if mesh is None else (
        lambda p: shard_params(jax.tree.map(np.array, p), CONFIG, mesh))
    place_batch = (lambda b: b) if mesh is None else (lambda b: shard_batch(b, mesh))
    ctx = use_mesh(mesh) if mesh is not None else _null()
    with ctx:
        # SFT: two steps
        step = make_train_step(CONFIG, optimizer)
        state = init_state(place_params(params), optimizer, 0)
        for i in range(2):
            state, metrics = step(state, place_batch(batch_of(i)))
        out["sft"] = (state.params, float(metrics["loss"]))
        if mesh is not None:
            out["sft_sharded"] = specs_match(state.params, CONFIG, mesh) and specs_match(
                state.opt_state[1][0].mu, CONFIG, mesh)
        # GRPO: one step on a rollout batch (clip, KL and the update mask active)
        loss_fn = functools.partial(grpo_loss, loss=GRPOLossConfig(kl_coef=0.05, entropy_coef=0.01))
        gstep = make_train_step(CONFIG, optimizer, loss_fn)
        gstate, gmetrics = gstep(init_state(place_params(params), optimizer, 0), place_batch(rollouts(7)))
        out["grpo"] = (gstate.params, float(gmetrics["loss"]))
        # probe: the answer's loss after every cut (KV-cache method)
        rng = np.random.default_rng(3)
        probe = ProbeBatch(context=rng.integers(0, 96, (B, 24)).astype(np.int32),
                           context_lengths=np.full(B, 24, np.int32) - np.arange(B, dtype=np.int32),
                           cuts=np.tile(np.arange(4, 20, 4, dtype=np.int32), (B, 1)),
                           probe=rng.integers(0, 96, (B, 5)).astype(np.int32),
                           targets=np.array([[False, False, True, True, True]] * B))
        out["probe"] = answer_loss_along_trajectory(place_params(params), probe, config=CONFIG, cut_chunk=2,
                                                    context_chunk=8).mean
        # meta-training: 8 tasks, an inner SGD step each, second order (an SGD outer step: Adam's
        # normalisation would blow up the rounding of near-zero meta-gradients)
        meta_step = make_meta_step(lambda p, b: sft_loss(p, b, config=CONFIG)[0], optax.sgd(0.1), optax.sgd(1.0),
                                   steps=1)
        support = {k: np.stack([v[:2]] * 8) + 0 * np.arange(8).reshape(8, 1, 1) for k, v in batch_of(11).items()}
        support["tokens"] = (support["tokens"] + np.arange(8).reshape(8, 1, 1)) % 96
        query = {k: np.stack([v[2:4]] * 8) for k, v in batch_of(12).items()}
        p = place_params(params)
        p, _, meta_metrics = meta_step(p, optax.sgd(1.0).init(p), place_batch(support), place_batch(query))
        out["meta"] = (p, float(meta_metrics["loss"]))
        # sampler: temperature sampling with the KV cache
        prompts = np.random.default_rng(5).integers(0, 96, (B, 6)).astype(np.int32)
        lengths = np.array([6, 5, 4, 6, 3, 6, 2, 6], np.int32)
        o = generate(place_params(params), place_batch(prompts), place_batch(lengths), config=CONFIG,
                     sampling=SamplingConfig(max_new_tokens=12, temperature=1.0), key=jax.random.key(1))
        out["sample"] = (np.asarray(o.tokens), np.asarray(o.logprobs))
    return out


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


KEY = jax.random.key(0)


@pytest.fixture(scope="module")
def reference():
    params = init(CONFIG, KEY)
    return params, run_all(params)


# 2x2x2 uses every axis at once and runs by default; the others run with -m slow
@pytest.mark.parametrize("shape", [pytest.param("8x1x1", marks=pytest.mark.slow), "2x2x2",
                                   pytest.param("1x4x2", marks=pytest.mark.slow)])
def test_mesh_matches_single_device(reference, shape):
    assert jax.device_count() == 8
    params, ref = reference
    d, f, t = (int(x) for x in shape.split("x"))
    mesh = make_mesh(MeshConfig(data=d, fsdp=f, tensor=t))
    assert dict(zip(mesh.axis_names, mesh.axis_sizes)) == {"data": d, "fsdp": f, "tensor": t}
    # sharded init: each device draws its own slice; equal to the unsharded init (to fp32
    # rounding: the jitted scaling of the normal draws may round differently from eager)
    init_sharded = sharded_init(CONFIG, KEY, mesh)
    assert specs_match(init_sharded, CONFIG, mesh)
    assert maxdiff(init_sharded, params) < 1e-7
    got = run_all(params, mesh)
    # the steps keep params and Adam moments in their layout (so donation aliases them)
    assert got["sft_sharded"]
    for name in ("sft", "grpo", "meta"):
        assert maxdiff(got[name][0], ref[name][0]) < 2e-6, name
        assert abs(got[name][1] - ref[name][1]) < 1e-5 * max(1.0, abs(ref[name][1])), name
    assert maxdiff(got["probe"], ref["probe"]) < 1e-5
    # temperature sampling draws the same tokens (the KV cache sharded on batch and kv heads)
    np.testing.assert_array_equal(got["sample"][0], ref["sample"][0])
    assert maxdiff(got["sample"][1], ref["sample"][1]) < 1e-5


def test_sharding_really_splits():
    """The specs the tests above check are not trivially replicated."""
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    specs = param_specs(CONFIG, mesh)
    assert tuple(specs["layers"]["self_attn"]["q_proj"]["kernel"]) == (None, "fsdp", "tensor")
    assert tuple(specs["layers"]["mlp"]["down_proj"]["kernel"]) == (None, "tensor", "fsdp")
    assert tuple(specs["embed_tokens"]["embedding"]) == ("tensor", "fsdp")
    mesh = make_mesh(MeshConfig(data=1, fsdp=2, tensor=4))
    # 2 kv heads cannot be split 4 ways: replicated on tensor, still split on fsdp
    assert tuple(param_specs(CONFIG, mesh)["layers"]["self_attn"]["k_proj"]["kernel"]) == (None, "fsdp")


def test_cache_specs_follow_each_layout():
    """Keys [L, B, K, Dh, T] and values [L, B, K, T, Dh], stacked or per layer: batch on (data,
    fsdp), kv heads on tensor, the rest replicated."""
    from metareason.model import init_cache
    from metareason.parallel import cache_specs

    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    want_k, want_v = (None, ("data", "fsdp"), "tensor"), (None, ("data", "fsdp"), "tensor")
    stacked = cache_specs(init_cache(CONFIG, 4, 8), mesh)
    assert tuple(stacked.k)[:3] == want_k and tuple(stacked.v)[:3] == want_v
    assert tuple(stacked.segment_ids) == (("data", "fsdp"),)
    split = cache_specs(init_cache(CONFIG, 4, 8, per_layer=True), mesh)
    assert len(split.k) == CONFIG.num_layers
    assert all(tuple(s)[:2] == want_k[1:] for s in (*split.k, *split.v))
