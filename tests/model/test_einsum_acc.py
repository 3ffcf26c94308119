"""`einsum_acc`: float32 accumulation forward, and a backward whose matmuls stay in bf16."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from metareason.model import ModelConfig, init
from metareason.model.transformer import einsum_acc
from metareason.train import sft_loss


def _dot_operand_dtypes(fn, *args):
    """The operand dtypes of every dot_general in fn's jaxpr, sub-jaxprs included."""
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                found.append(tuple(str(v.aval.dtype) for v in eqn.invars))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)
    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


def test_forward_accumulates_in_float32_and_gradients_match_float64():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, 5, 64)), jnp.bfloat16)
    w = jnp.asarray(rng.normal(size=(64, 48)), jnp.bfloat16)
    c = rng.normal(size=(3, 5, 48))
    y = einsum_acc("bsd,df->bsf", x, w)
    assert y.dtype == jnp.float32
    x64, w64 = np.asarray(x, np.float64), np.asarray(w, np.float64)
    np.testing.assert_allclose(np.asarray(y), x64 @ w64, rtol=1e-6, atol=1e-5)  # exact products, f32 sums

    dx, dw = jax.grad(lambda x, w: (einsum_acc("bsd,df->bsf", x, w) * c).sum(), argnums=(0, 1))(x, w)
    assert dx.dtype == jnp.bfloat16 and dw.dtype == jnp.bfloat16
    c16 = np.asarray(jnp.asarray(c, jnp.float32).astype(jnp.bfloat16), np.float64)  # the cotangent, in bf16
    ref_dx, ref_dw = c16 @ w64.T, np.einsum("bsd,bsf->df", x64, c16)
    # one bf16 rounding of a float32-accumulated sum: within 2^-8 relative
    np.testing.assert_allclose(np.asarray(dx, np.float64), ref_dx, rtol=2**-8, atol=1e-2)
    np.testing.assert_allclose(np.asarray(dw, np.float64), ref_dw, rtol=2**-8, atol=1e-2)


def test_forward_mode_and_forward_over_reverse_work():
    """A JVP rule, not a VJP: jax.jvp (and the implicit inner loop's Hessian-vector products,
    jvp of grad) go through it; tangents equal float64's within a bf16 rounding of each term."""
    rng = np.random.default_rng(2)
    x, dx = (jnp.asarray(rng.normal(size=(6, 32)), jnp.bfloat16) for _ in range(2))
    w, dw = (jnp.asarray(rng.normal(size=(32, 8)), jnp.bfloat16) for _ in range(2))
    f = lambda x, w: einsum_acc("sd,df->sf", x, w)  # noqa: E731
    y, dy = jax.jvp(f, (x, w), (dx, dw))
    assert y.dtype == dy.dtype == jnp.float32
    x64, dx64, w64, dw64 = (np.asarray(a, np.float64) for a in (x, dx, w, dw))
    want = dx64 @ w64 + x64 @ dw64
    scale = np.abs(dx64) @ np.abs(w64) + np.abs(x64) @ np.abs(dw64)
    assert np.all(np.abs(np.asarray(dy, np.float64) - want) <= 2**-8 * scale + 1e-6)
    hvp = jax.jvp(jax.grad(lambda w: (f(x, w) ** 2).sum()), (w,), (dw,))[1]
    want_hvp = 2 * x64.T @ (x64 @ dw64)  # the Hessian of ||x w||^2 applied to dw
    assert hvp.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(hvp, np.float64), want_hvp, rtol=0.02, atol=0.05 * np.abs(want_hvp).max())


def test_float32_is_a_plain_einsum():
    rng = np.random.default_rng(1)
    x, w = jnp.asarray(rng.normal(size=(4, 8)), jnp.float32), jnp.asarray(rng.normal(size=(8, 3)), jnp.float32)
    f = lambda x, w: (einsum_acc("sd,df->sf", x, w) ** 2).sum()  # noqa: E731
    g = lambda x, w: (jnp.einsum("sd,df->sf", x, w) ** 2).sum()  # noqa: E731
    for a, b in zip(jax.grad(f, argnums=(0, 1))(x, w), jax.grad(g, argnums=(0, 1))(x, w)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("tie", [False, True])
def test_bf16_sft_gradient_has_no_float32_matmul(tie):
    """Every matmul of a bf16 model's SFT gradient (projections, MLP, head, attention) takes bf16
    operands: the float32 ones ran as TF32 on an H200 and took half the step."""
    config = ModelConfig(family="qwen2", vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2,
                         num_heads=4, num_kv_heads=2, tie_word_embeddings=tie, param_dtype="bfloat16",
                         compute_dtype="bfloat16", max_position_embeddings=64)
    params = init(config, jax.random.key(0))
    B, S = 2, 16
    tokens = jax.random.randint(jax.random.key(1), (B, S), 0, 64)
    batch = {"tokens": tokens, "loss_mask": jnp.ones((B, S), jnp.int32),
             "segment_ids": jnp.ones((B, S), jnp.int32),
             "positions": jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32), (B, S))}
    grad = jax.grad(lambda p: sft_loss(p, batch, config=config)[0])
    dtypes = _dot_operand_dtypes(grad, params)
    assert len(dtypes) >= 2 * (7 * 2 + 1)  # forward and backward of every layer's matmuls and the head
    bad = [d for d in dtypes if "float32" in d and "bfloat16" in d]
    assert not bad, f"mixed float32 x bf16 matmuls in the gradient: {bad}"
