"""A real outside model through the protocol: Tunix's Qwen2 (a Flax NNX model), loaded by Tunix's
own safetensors loader from the Hugging Face directory our `save_hf_checkpoint` writes, adapted
with `from_nnx`. Its logits, its probe and its meta-gradient equal our own model's (float32).

Needs `google-tunix` 0.1.7 (installed beside jax 0.10.2 / flax 0.12.8 with `pip install --no-deps`,
as its metadata pins safetensors<0.8); skipped without it."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("tunix", reason="needs google-tunix 0.1.7 (pip install --no-deps google-tunix==0.1.7)")

from reference import TINY, random_params  # noqa: E402
from test_adapters import lab_example, meta_objective, packed_losses, probe_batch  # noqa: E402
from tunix.models.qwen2 import model as qwen2_model  # noqa: E402
from tunix.models.qwen2 import params as qwen2_params  # noqa: E402

import metareason.inner as inner  # noqa: E402
import metareason.probe  # noqa: E402
from metareason.model import ModelConfig, apply, causal_mask, from_nnx, save_hf_checkpoint  # noqa: E402


def tunix_config(config: ModelConfig) -> qwen2_model.ModelConfig:
    """Tunix's Qwen2 config for our qwen2 `config` (float32)."""
    return qwen2_model.ModelConfig(
        num_layers=config.num_layers, vocab_size=config.vocab_size, embed_dim=config.hidden_size,
        hidden_dim=config.intermediate_size, num_heads=config.num_heads, head_dim=config.head_dim,
        num_kv_heads=config.num_kv_heads, rope_theta=int(config.rope_theta), norm_eps=config.rms_norm_eps,
        use_tied_embedding=config.tie_word_embeddings)


def tunix_call(model, tokens, positions, mask):
    """Tunix's Qwen2 takes (tokens, positions, cache, attention_mask) and returns (logits, cache)."""
    logits, _ = model(tokens, positions, None, mask)
    return logits


@pytest.fixture(scope="module", params=["qwen2", "qwen2_tied"])
def pair(request, tmp_path_factory):
    """(our config, our params, the Tunix CausalLM, its params), both from one HF directory."""
    config = TINY[request.param]
    params = random_params(config, seed=3)
    path = save_hf_checkpoint(tmp_path_factory.mktemp("hf") / request.param, config, params)
    model = qwen2_params.create_model_from_safe_tensors(str(path), tunix_config(config))
    lm, tunix_params = from_nnx(model, vocab_size=config.vocab_size, max_length=config.max_position_embeddings,
                                call=tunix_call, name="tunix-qwen2")
    return config, params, lm, tunix_params


def test_logits_equal_ours(pair):
    config, params, lm, tunix_params = pair
    tokens = jax.random.randint(jax.random.key(0), (2, 13), 0, config.vocab_size, dtype=jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(13, dtype=jnp.int32), tokens.shape)
    theirs = jax.jit(lm.apply)(tunix_params, tokens, positions, causal_mask(tokens))
    ours = apply(params, tokens, config=config).logits
    assert float(jnp.std(ours)) > 0.5  # random weights everywhere: every tensor's mapping is exercised
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=2e-5)


def test_packed_probe_equals_ours(pair):
    """The pack-mask answer loss over Tunix's model (one call of its apply) = our probe over ours."""
    config, params, lm, tunix_params = pair
    contexts, cuts, probes, targets = probe_batch(seed=1)
    batch = metareason.probe.ProbeBatch(contexts, np.full(len(contexts), contexts.shape[1]), cuts, probes, targets)
    ours = metareason.probe.answer_loss_along_trajectory(params, batch, config=config, method="packed")
    theirs = packed_losses(lm, tunix_params, contexts, cuts, probes, targets)
    np.testing.assert_allclose(theirs, ours.mean, rtol=1e-5, atol=1e-5)


def test_our_probe_over_tunix_equals_ours(pair):
    config, params, lm, tunix_params = pair
    contexts, cuts, probes, targets = probe_batch(seed=2)
    batch = metareason.probe.ProbeBatch(contexts, np.full(len(contexts), contexts.shape[1]), cuts, probes, targets)
    probe = functools.partial(metareason.probe.answer_loss_along_trajectory, batch=batch, method="packed")
    np.testing.assert_allclose(probe(tunix_params, config=lm).mean, probe(params, config=config).mean,
                               rtol=1e-5, atol=1e-5)


def _global_norm(tree):
    return float(jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(tree))))


def _mlp_sizes(params):
    mask = inner.trainable_mask(params, "mlp")
    return sorted(int(np.size(x)) for x, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask)) if m)


def test_mlp_kernels_are_found_by_name(pair):
    config, params, _, tunix_params = pair
    sizes = _mlp_sizes(tunix_params)  # layers/i/mlp/{gate,up,down}_proj/kernel
    assert len(sizes) == 3 * config.num_layers
    assert sum(sizes) == sum(_mlp_sizes(params)) == 3 * config.num_layers * config.hidden_size * config.intermediate_size


def test_meta_gradient_through_tunix_equals_ours(pair):
    """3 SGD steps on the trajectory loss moving the MLP kernels, query = answer loss,
    differentiated through the unroll. Tunix's tensors are ours transposed / reshaped (a
    permutation of coordinates), under which SGD is equivariant: the meta-loss and the
    meta-gradient's norm must agree."""
    config, params, lm, tunix_params = pair
    support, query = inner.prepare(lab_example(3), config), inner.prepare(lab_example(4), config)
    meta = functools.partial(meta_objective, support=support, query=query, trainable="mlp")
    v_ours, g_ours = jax.jit(jax.value_and_grad(meta(config)))(params)
    v_theirs, g_theirs = jax.jit(jax.value_and_grad(meta(lm)))(tunix_params)
    assert jax.tree.structure(g_theirs) == jax.tree.structure(tunix_params)
    np.testing.assert_allclose(float(v_theirs), float(v_ours), rtol=1e-5)
    np.testing.assert_allclose(_global_norm(g_theirs), _global_norm(g_ours), rtol=1e-4)
