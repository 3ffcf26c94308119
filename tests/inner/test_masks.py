"""trainable_mask: the one "which weights move" mechanism, against hand-written masks and the
callers that use it (optax.masked, inner_loop, descend, the implicit update's weights)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metareason.inner import InnerLoopError, MaskError, descend, inner_loop, trainable_mask
from metareason.inner.masks import leaf_path
from metareason.model import flatten, init
from reference import TINY

MLP = {"layers/mlp/gate_proj/kernel", "layers/mlp/up_proj/kernel", "layers/mlp/down_proj/kernel"}


def paths_marked(mask):
    return {k for k, v in flatten(mask).items() if v}


def test_mlp_marks_exactly_the_mlp_kernels_of_our_params():
    config = TINY["qwen2"]  # has q/k/v biases, untied head
    params = init(config, jax.random.key(0))
    assert paths_marked(trainable_mask(params, "mlp")) == MLP
    assert paths_marked(trainable_mask(params, "all")) == set(flatten(params))
    head = trainable_mask(params, lambda path, leaf: path[0] == "lm_head")
    assert paths_marked(head) == {"lm_head/kernel"}
    attn = trainable_mask(params, lambda path, leaf: "self_attn" in path and leaf.ndim == 4)
    assert paths_marked(attn) == {f"layers/self_attn/{n}/kernel" for n in ("q_proj", "k_proj", "v_proj", "o_proj")}


def test_paths_of_flax_nnx_state_and_lists():
    from flax import nnx

    class Block(nnx.Module):
        def __init__(self, rngs):
            self.attn = nnx.Linear(4, 4, rngs=rngs)
            self.mlp = nnx.Linear(4, 8, rngs=rngs)

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.blocks = nnx.List([Block(rngs), Block(rngs)])

    _, state = nnx.split(Net(nnx.Rngs(0)))
    mask = trainable_mask(state, "mlp")
    marked = {leaf_path(p) for p, m in jax.tree_util.tree_flatten_with_path(mask)[0] if m}
    assert marked == {("blocks", "0", "mlp", "kernel"), ("blocks", "1", "mlp", "kernel")}


def test_optax_masked_moves_only_the_mask():
    params = init(TINY["qwen3"], jax.random.key(1))
    mask = trainable_mask(params, "mlp")
    grads = jax.tree.map(jnp.ones_like, params)
    opt = optax.chain(optax.masked(optax.sgd(0.5), mask),
                      optax.masked(optax.set_to_zero(), jax.tree.map(lambda m: not m, mask)))
    updates, _ = opt.update(grads, opt.init(params), params)
    for path, u in flatten(updates).items():
        np.testing.assert_array_equal(u, -0.5 if path in MLP else 0.0)


def quad(params, batch):
    return sum(jnp.sum((x - batch) ** 2 * (i + 1)) for i, x in enumerate(jax.tree.leaves(params)))


def test_inner_loop_and_descend_take_names_predicates_and_pytrees_alike():
    params = {"mlp": {"kernel": jnp.ones(3), "bias": jnp.ones(2)}, "head": {"kernel": jnp.ones(4)}}
    want = {"mlp": {"kernel": True, "bias": False}, "head": {"kernel": False}}
    assert trainable_mask(params, "mlp") == want
    by_tree = inner_loop(quad, params, 0.0, optax.sgd(0.1), steps=2, trainable=want).params
    for spec in ("mlp", lambda path, leaf: path == ("mlp", "kernel")):
        got = inner_loop(quad, params, 0.0, optax.sgd(0.1), steps=2, trainable=spec).params
        jax.tree.map(np.testing.assert_array_equal, got, by_tree)
        moved = descend(lambda p: quad(p, 0.0), params, steps=2, lrs=[0.0, 0.1], subset=spec).params
        np.testing.assert_allclose(moved["mlp"]["kernel"], 0.16, rtol=1e-6)  # x - 0.1 * 6x twice (weight 3)
        np.testing.assert_array_equal(moved["mlp"]["bias"], 1.0)
        np.testing.assert_array_equal(moved["head"]["kernel"], 1.0)
    np.testing.assert_array_equal(by_tree["mlp"]["bias"], 1.0)
    assert float(by_tree["mlp"]["kernel"][0]) < 1.0


def test_bad_specs():
    params = {"a": {"kernel": jnp.ones(2)}}
    with pytest.raises(MaskError, match="unknown weight subset 'attention'"):
        trainable_mask(params, "attention")
    with pytest.raises(MaskError, match="selects no leaf"):
        trainable_mask(params, "mlp")
    with pytest.raises(MaskError, match="must return a Python bool"):
        trainable_mask(params, lambda path, leaf: leaf > 0)
    with pytest.raises(InnerLoopError, match="unknown weight subset"):
        inner_loop(quad, params, 0.0, optax.sgd(0.1), steps=1, trainable="heads")
