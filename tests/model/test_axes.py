"""Params declare their logical axes (`param_axes`), and `constrain` does nothing without a mesh and
logical-axis rules."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractMesh, PartitionSpec as P

from metareason.model import ModelConfig, apply, flatten, init, param_axes, param_shapes
from metareason.model.axes import AXIS_NAMES, K_CACHE_AXES, V_CACHE_AXES, constrain, logical_spec
from reference import TINY

# The axes of every tensor, written out by hand from the layout in model/params.py's docstring
# (the same table the string-matching code in parallel/rules.py produced before the params
# declared their own axes).
WANT_AXES = {
    "embed_tokens/embedding": ("vocab", "embed"),
    "layers/input_layernorm/scale": ("layers", "norm"),
    "layers/mlp/down_proj/kernel": ("layers", "mlp", "embed"),
    "layers/mlp/gate_proj/kernel": ("layers", "embed", "mlp"),
    "layers/mlp/up_proj/kernel": ("layers", "embed", "mlp"),
    "layers/post_attention_layernorm/scale": ("layers", "norm"),
    "layers/self_attn/k_norm/scale": ("layers", "head_dim"),
    "layers/self_attn/k_proj/bias": ("layers", "kv_heads", "head_dim"),
    "layers/self_attn/k_proj/kernel": ("layers", "embed", "kv_heads", "head_dim"),
    "layers/self_attn/o_proj/bias": ("layers", "norm"),
    "layers/self_attn/o_proj/kernel": ("layers", "heads", "head_dim", "embed"),
    "layers/self_attn/q_norm/scale": ("layers", "head_dim"),
    "layers/self_attn/q_proj/bias": ("layers", "heads", "head_dim"),
    "layers/self_attn/q_proj/kernel": ("layers", "embed", "heads", "head_dim"),
    "layers/self_attn/v_proj/bias": ("layers", "kv_heads", "head_dim"),
    "layers/self_attn/v_proj/kernel": ("layers", "embed", "kv_heads", "head_dim"),
    "lm_head/kernel": ("embed", "vocab"),
    "norm/scale": ("norm",),
}


def _sizes(c: ModelConfig) -> dict[str, int]:
    return {"vocab": c.vocab_size, "embed": c.hidden_size, "norm": c.hidden_size, "mlp": c.intermediate_size,
            "layers": c.num_layers, "heads": c.num_heads, "kv_heads": c.num_kv_heads, "head_dim": c.head_dim}


@pytest.mark.parametrize("name", sorted(TINY))
def test_param_axes_match_the_params_leaf_by_leaf(name):
    """Same tree as `param_shapes` and `init`; one name per dimension; each name's size is the
    config's for that axis; and the names are the hand-written table's."""
    config = TINY[name]
    axes = param_axes(config)
    is_names = lambda x: isinstance(x, tuple)  # noqa: E731
    shapes = param_shapes(config)
    assert jax.tree.structure(axes, is_leaf=is_names) == jax.tree.structure(shapes)
    assert jax.tree.structure(axes, is_leaf=is_names) == jax.tree.structure(init(config, jax.random.key(0)))
    sizes = _sizes(config)
    flat_shapes = flatten(shapes)
    for path, names in flatten(axes).items():
        assert len(names) == len(flat_shapes[path].shape), path
        assert tuple(sizes[n] for n in names) == flat_shapes[path].shape, path
        assert set(names) <= set(AXIS_NAMES), path
        assert names == WANT_AXES[path], path
    # the families' optional tensors are there exactly when the config has them
    got = set(flatten(axes))
    assert ("lm_head/kernel" in got) == (not config.tie_word_embeddings)
    assert ("layers/self_attn/q_norm/scale" in got) == (config.family == "qwen3")
    assert ("layers/self_attn/q_proj/bias" in got) == config.qkv_bias
    assert ("layers/self_attn/o_proj/bias" in got) == config.o_bias


def test_cache_axes_name_the_cache_layout():
    """k [L, B, K, Dh, T] and v [L, B, K, T, Dh] (`KVCache`)."""
    assert K_CACHE_AXES == ("layers", "batch", "kv_heads", "head_dim", "seq")
    assert V_CACHE_AXES == ("layers", "batch", "kv_heads", "seq", "head_dim")


RULES = (("batch", ("data", "fsdp")), ("vocab", "tensor"), ("embed", "fsdp"), ("heads", "tensor"),
         ("kv_heads", "tensor"), ("mlp", "tensor"), ("layers", None), ("head_dim", None), ("norm", None),
         ("seq", None), ("act_embed", None))


def test_logical_spec_is_flax_rules_fitted_to_the_mesh():
    mesh = AbstractMesh((2, 2, 2), ("data", "fsdp", "tensor"))
    names = ("batch", "seq", "heads", "head_dim")
    # every dimension divisible: exactly Flax's own mapping (less its trailing Nones)
    flax_spec = tuple(nn.logical_to_mesh_axes(names, RULES))
    assert tuple(logical_spec(names, (8, 5, 4, 16), mesh, RULES)) == flax_spec[:3] and flax_spec[3] is None
    assert tuple(logical_spec(names, (8, 5, 4, 16), mesh, RULES)) == (("data", "fsdp"), None, "tensor")
    # 6 rows: data x fsdp = 4 does not divide them, data alone does; 3 heads: not split at all
    assert tuple(logical_spec(names, (6, 5, 3, 16), mesh, RULES)) == ("data",)
    # axes of size 1 and axes the mesh lacks are dropped
    assert tuple(logical_spec(names, (8, 5, 4, 16), AbstractMesh((4, 1), ("data", "fsdp")), RULES)) == ("data",)
    with pytest.raises(ValueError, match="unknown logical axis 'heeds'"):
        logical_spec(("batch", "heeds"), (8, 4), mesh, RULES)
    with pytest.raises(ValueError, match="do not match an array of shape"):
        logical_spec(("batch",), (8, 4), mesh, RULES)


def _has_constraint(fn, *args) -> bool:
    # a fresh function each time: JAX caches traces by mesh, not by the Flax rules in effect
    return "sharding_constraint" in str(jax.make_jaxpr(lambda *a: fn(*a))(*args))


def test_constrain_is_a_no_op_without_a_mesh_and_rules():
    x = jnp.arange(24.0).reshape(2, 3, 4)
    f = lambda x: constrain(x * 2, ("batch", "seq", "vocab"))  # noqa: E731
    assert not _has_constraint(f, x)
    np.testing.assert_array_equal(jax.jit(f)(x), x * 2)
    with nn.logical_axis_rules(RULES):  # rules but no mesh
        assert not _has_constraint(f, x)
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 3)
    with jax.set_mesh(mesh):  # a mesh but no rules
        assert not _has_constraint(f, x)
        with nn.logical_axis_rules(RULES):  # both: it constrains
            assert _has_constraint(f, x)
            y = jax.jit(f)(x)
    np.testing.assert_array_equal(y, x * 2)
    assert tuple(y.sharding.spec) == ("data", None, "tensor")  # 2 rows: data x fsdp = 4 does not divide them


def test_apply_has_no_constraint_on_one_device():
    config = TINY["qwen3"]
    params = init(config, jax.random.key(0))
    tokens = jnp.zeros((1, 4), jnp.int32)
    assert not _has_constraint(lambda p, t: apply(p, t, config=config).logits, params, tokens)
