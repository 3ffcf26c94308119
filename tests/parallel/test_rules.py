"""Params' specs from their declared logical axes and Flax's logical-axis rules, and the model's
`constrain` under `use_mesh` (the 8 fake CPU devices of conftest.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractMesh

from metareason.model import ModelConfig, apply, flatten, init
from metareason.model.axes import LOGITS_AXES, constrain
from metareason.parallel import (DEFAULT_RULES, MeshConfig, batch_vmap, current_rules, make_mesh, param_specs,
                                 spec_for, use_mesh)

DIMS = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=8, num_kv_heads=2,
            head_dim=8)
FAMILIES = {"qwen2_tied": ModelConfig(family="qwen2", tie_word_embeddings=True, **DIMS),
            "qwen2": ModelConfig(family="qwen2", **DIMS),
            "llama3": ModelConfig(family="llama", **DIMS),
            "llama_bias": ModelConfig(family="llama", attention_bias=True, **DIMS),
            "qwen3": ModelConfig(family="qwen3", **DIMS)}

# The specs the string-matching `param_axes` of parallel/rules.py gave (before the params declared
# their axes) for these dimensions, recorded from that code: the independent reference.
OLD_SPECS = {
    (2, 2, 2): {
        "embed_tokens/embedding": ("tensor", "fsdp"),
        "layers/input_layernorm/scale": (),
        "layers/mlp/down_proj/kernel": (None, "tensor", "fsdp"),
        "layers/mlp/gate_proj/kernel": (None, "fsdp", "tensor"),
        "layers/mlp/up_proj/kernel": (None, "fsdp", "tensor"),
        "layers/post_attention_layernorm/scale": (),
        "layers/self_attn/k_norm/scale": (),
        "layers/self_attn/k_proj/bias": (None, "tensor"),
        "layers/self_attn/k_proj/kernel": (None, "fsdp", "tensor"),
        "layers/self_attn/o_proj/bias": (),
        "layers/self_attn/o_proj/kernel": (None, "tensor", None, "fsdp"),
        "layers/self_attn/q_norm/scale": (),
        "layers/self_attn/q_proj/bias": (None, "tensor"),
        "layers/self_attn/q_proj/kernel": (None, "fsdp", "tensor"),
        "layers/self_attn/v_proj/bias": (None, "tensor"),
        "layers/self_attn/v_proj/kernel": (None, "fsdp", "tensor"),
        "lm_head/kernel": ("fsdp", "tensor"),
        "norm/scale": (),
    },
    # tensor = 4 does not divide the 2 kv heads: replicated there
    (1, 2, 4): {
        "embed_tokens/embedding": ("tensor", "fsdp"),
        "layers/input_layernorm/scale": (),
        "layers/mlp/down_proj/kernel": (None, "tensor", "fsdp"),
        "layers/mlp/gate_proj/kernel": (None, "fsdp", "tensor"),
        "layers/mlp/up_proj/kernel": (None, "fsdp", "tensor"),
        "layers/post_attention_layernorm/scale": (),
        "layers/self_attn/k_norm/scale": (),
        "layers/self_attn/k_proj/bias": (),
        "layers/self_attn/k_proj/kernel": (None, "fsdp"),
        "layers/self_attn/o_proj/bias": (),
        "layers/self_attn/o_proj/kernel": (None, "tensor", None, "fsdp"),
        "layers/self_attn/q_norm/scale": (),
        "layers/self_attn/q_proj/bias": (None, "tensor"),
        "layers/self_attn/q_proj/kernel": (None, "fsdp", "tensor"),
        "layers/self_attn/v_proj/bias": (),
        "layers/self_attn/v_proj/kernel": (None, "fsdp"),
        "lm_head/kernel": ("fsdp", "tensor"),
        "norm/scale": (),
    },
    (1, 8, 1): {
        "embed_tokens/embedding": (None, "fsdp"),
        "layers/input_layernorm/scale": (),
        "layers/mlp/down_proj/kernel": (None, None, "fsdp"),
        "layers/mlp/gate_proj/kernel": (None, "fsdp"),
        "layers/mlp/up_proj/kernel": (None, "fsdp"),
        "layers/post_attention_layernorm/scale": (),
        "layers/self_attn/k_norm/scale": (),
        "layers/self_attn/k_proj/bias": (),
        "layers/self_attn/k_proj/kernel": (None, "fsdp"),
        "layers/self_attn/o_proj/bias": (),
        "layers/self_attn/o_proj/kernel": (None, None, None, "fsdp"),
        "layers/self_attn/q_norm/scale": (),
        "layers/self_attn/q_proj/bias": (),
        "layers/self_attn/q_proj/kernel": (None, "fsdp"),
        "layers/self_attn/v_proj/bias": (),
        "layers/self_attn/v_proj/kernel": (None, "fsdp"),
        "lm_head/kernel": ("fsdp",),
        "norm/scale": (),
    },
}


@pytest.mark.parametrize("shape", sorted(OLD_SPECS))
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_specs_from_axes_and_rules_equal_the_old_string_matching(family, shape):
    config = FAMILIES[family]
    mesh = AbstractMesh(shape, ("data", "fsdp", "tensor"))
    got = {path: tuple(spec) for path, spec in flatten(param_specs(config, mesh)).items()}
    want = {path: spec for path, spec in OLD_SPECS[shape].items() if path in got}
    assert got == want
    assert len(got) == len(jax.tree.leaves(init(config, jax.random.key(0))))


def test_default_rules_are_flax_rules():
    """A sequence of (logical name, mesh axes or None), the one `current_rules` gives outside
    `use_mesh`; `use_mesh` accepts a mapping too and checks the names."""
    assert all(isinstance(name, str) and (t is None or isinstance(t, (str, tuple))) for name, t in DEFAULT_RULES)
    assert current_rules() == DEFAULT_RULES
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    custom = dict(DEFAULT_RULES, vocab=None)
    with use_mesh(mesh, custom):
        assert current_rules() == tuple(custom.items())
        with use_mesh(mesh):  # nested: the enclosing rules stay
            assert current_rules() == tuple(custom.items())
    assert current_rules() == DEFAULT_RULES
    with pytest.raises(ValueError, match="rules must name exactly the logical axes.*'vocab'"):
        with use_mesh(mesh, {k: v for k, v in DEFAULT_RULES if k != "vocab"}):
            pass


def test_constrain_applies_the_rules_under_use_mesh():
    """The model's `constrain` (no import of parallel) lays activations out by the rules
    `use_mesh` sets: logits [B, S, V] on (data, fsdp) x - x tensor by default, vocab whole under
    custom rules, nothing at all outside the block."""
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    x = jnp.arange(8 * 3 * 6, dtype=jnp.float32).reshape(8, 3, 6)

    def run():
        return jax.jit(lambda x: constrain(x + 1, LOGITS_AXES))(x)

    assert "sharding_constraint" not in str(jax.make_jaxpr(lambda x: constrain(x, LOGITS_AXES))(x))
    with use_mesh(mesh):
        y = run()
    assert tuple(y.sharding.spec) == (("data", "fsdp"), None, "tensor")
    np.testing.assert_array_equal(y, x + 1)
    with use_mesh(mesh, dict(DEFAULT_RULES, vocab=None)):
        assert tuple(run().sharding.spec) == (("data", "fsdp"),)


def test_batch_vmap_takes_the_batch_axes_inside():
    """Two tasks on data = 2: inside, each task's own "batch" rows resolve to fsdp only."""
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    x = jnp.ones((2, 4, 3, 6))
    inner = []

    def per_task(t):
        inner.append(tuple(spec_for(("batch",), (4,), mesh)))
        return constrain(t * 2, LOGITS_AXES)

    with use_mesh(mesh):
        y = jax.jit(batch_vmap(per_task))(x)
        assert current_rules() == DEFAULT_RULES  # restored after the vmap
    assert inner == [("fsdp",)]
    assert tuple(y.sharding.spec) == ("data", "fsdp", None, "tensor")


def test_apply_is_constrained_under_use_mesh_only():
    config = FAMILIES["qwen3"]
    params = init(config, jax.random.key(0))
    tokens = jnp.zeros((8, 4), jnp.int32)
    f = lambda p, t: apply(p, t, config=config).logits  # noqa: E731
    assert "sharding_constraint" not in str(jax.make_jaxpr(f)(params, tokens))
    with use_mesh(make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))):
        assert "sharding_constraint" in str(jax.make_jaxpr(lambda p, t: f(p, t))(params, tokens))
