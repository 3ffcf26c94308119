"""The forward pass against itself in simpler forms: a cache against the full pass, packing
and custom masks against separate runs, remat against none, intermediates against logits."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metareason.model import (InputError, ModelConfig, ParamsError, apply, check_params, init_cache, prefill_causal,
                              segment_positions,
                              split_layers, stack_layers)
from reference import TINY, random_params

CONFIGS = ["qwen2", "llama3", "qwen3"]
TOL = dict(atol=2e-5, rtol=1e-5)


def _setup(name, seed=0):
    config = TINY[name]
    return config, random_params(config, seed=seed)


def _tokens(config, shape, seed=0):
    return jnp.asarray(np.random.RandomState(seed).randint(0, config.vocab_size, shape))


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("chunks", [(7, 1, 1, 1, 5), (1,) * 15, (15,)])
@pytest.mark.parametrize("per_layer", [False, True])
def test_incremental_decoding_with_cache_equals_full_pass(name, chunks, per_layer):
    """Stacked cache and weights, or the per-layer layouts a decode loop carries (split_layers)."""
    config, params = _setup(name)
    tokens = _tokens(config, (3, sum(chunks)))
    full = apply(params, tokens, config=config)
    run_params = split_layers(params) if per_layer else params
    cache = init_cache(config, batch_size=3, max_length=20, per_layer=per_layer)
    pieces, start = [], 0
    for n in chunks:
        out = apply(run_params, tokens[:, start:start + n], config=config, cache=cache)
        cache = out.cache
        pieces.append(out.logits)
        start += n
    np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full.logits, **TOL)
    assert int(cache.index) == sum(chunks)
    assert cache.per_layer == per_layer and cache.shape == (config.num_layers, 3, config.num_kv_heads, 20,
                                                            config.head_dim)
    # the cached keys are the full pass's: one more token through the cache equals the full pass on it
    nxt = _tokens(config, (3, 1), seed=5)
    one = apply(params, nxt, config=config, cache=cache.stacked()).logits
    both = apply(params, jnp.concatenate([tokens, nxt], axis=1), config=config).logits[:, -1:]
    np.testing.assert_allclose(one, both, **TOL)
    if per_layer:  # and the split weights are the same model without a cache
        np.testing.assert_allclose(apply(run_params, tokens, config=config).logits, full.logits, **TOL)
        chex.assert_trees_all_equal(cache.stacked().split(), cache)  # the layouts convert both ways


@pytest.mark.parametrize("name", ["qwen3"])  # its q/k norms touch the cached keys; the probe's tests run the others
def test_prefill_causal_equals_the_cache_path_on_real_tokens_and_decodes_the_same(name):
    """One plain causal pass over right-padded prompts (what the fused kernels take) gives the
    keys/values `apply` writes through a cache, on every real slot; a token decoded after it sees
    only its own row's real tokens (each row's full pass on prompt + token is the reference)."""
    config, params = _setup(name)
    lengths = np.array([9, 5, 1])
    tokens = _tokens(config, (3, 9)) * (np.arange(9)[None] < lengths[:, None])  # padding after each prompt
    cache = prefill_causal(params, tokens, lengths, config=config, max_length=12)
    ref = apply(params, tokens, config=config, cache=init_cache(config, batch_size=3, max_length=12)).cache
    assert int(cache.index) == 9 and cache.shape == ref.shape
    for b, n in enumerate(lengths):
        np.testing.assert_allclose(cache.k[:, b, ..., :n], ref.k[:, b, ..., :n], **TOL)
        np.testing.assert_allclose(cache.v[:, b, :, :n], ref.v[:, b, :, :n], **TOL)
    np.testing.assert_array_equal(cache.segment_ids, np.arange(12)[None] < lengths[:, None])
    nxt = _tokens(config, (3, 1), seed=5)
    one = apply(params, nxt, config=config, positions=jnp.asarray(lengths)[:, None], segment_ids=jnp.ones((3, 1), int),
                cache=cache).logits
    for b, n in enumerate(lengths):
        row = jnp.concatenate([tokens[b:b + 1, :n], nxt[b:b + 1]], axis=1)
        np.testing.assert_allclose(one[b, -1], apply(params, row, config=config).logits[0, -1], **TOL)
    with pytest.raises(InputError, match="max_length 8 is below the 9 prompt tokens"):
        prefill_causal(params, tokens, lengths, config=config, max_length=8)


def test_split_layers_round_trip_and_errors():
    config, params = _setup("qwen3")
    split = split_layers(params)
    assert len(split["layers"]) == config.num_layers
    chex.assert_trees_all_equal(stack_layers(split), params)
    check_params(config, split)
    bad = dict(split, layers=(*split["layers"][:-1], jax.tree.map(lambda x: x[..., :1], split["layers"][-1])))
    with pytest.raises(ParamsError, match="of split layer [0-9]+ has shape"):
        check_params(config, bad)
    cache = init_cache(config, 2, 8, per_layer=True)
    with pytest.raises(InputError, match="per-layer cache"):
        apply(params, _tokens(config, (2, 1)), config=config, cache=cache._replace(k=cache.k[:-1]))


@pytest.mark.parametrize("name", CONFIGS)
def test_packed_segments_equal_separate_runs(name):
    config, params = _setup(name)
    lengths = [5, 9, 3, 7]
    seqs = [_tokens(config, (1, n), seed=i) for i, n in enumerate(lengths)]
    packed = jnp.concatenate(seqs, axis=1)
    segment_ids = jnp.asarray(np.repeat(np.arange(1, 5), lengths)[None])
    out = apply(params, packed, config=config, segment_ids=segment_ids).logits
    separate = jnp.concatenate([apply(params, s, config=config).logits for s in seqs], axis=1)
    np.testing.assert_allclose(out, separate, **TOL)


def test_segment_positions_restart_at_each_segment():
    seg = jnp.asarray([[1, 1, 1, 2, 2, 3, 0, 0]])
    np.testing.assert_array_equal(segment_positions(seg), [[0, 1, 2, 0, 1, 0, 0, 1]])


@pytest.mark.parametrize("name", CONFIGS)
def test_custom_mask_with_prefix_blocks_equals_shorter_runs(name):
    """[context | block_1 | block_2]: block m sees the first c_m context tokens and itself
    causally, with positions continuing from c_m. Each block's logits must equal a plain run
    on context[:c_m] + block_m. This is the layout of the one-pass probe."""
    config, params = _setup(name)
    n_ctx, block, cuts = 12, 4, [3, 8, 12]
    ctx = _tokens(config, (1, n_ctx), seed=1)
    blocks = [_tokens(config, (1, block), seed=10 + m) for m in range(len(cuts))]
    tokens = jnp.concatenate([ctx] + blocks, axis=1)
    S = tokens.shape[1]
    mask = np.zeros((S, S), bool)
    mask[:n_ctx, :n_ctx] = np.tril(np.ones((n_ctx, n_ctx), bool))
    positions = list(range(n_ctx))
    for m, c in enumerate(cuts):
        rows = slice(n_ctx + m * block, n_ctx + (m + 1) * block)
        mask[rows, :c] = True
        mask[rows, rows] = np.tril(np.ones((block, block), bool))
        positions += list(range(c, c + block))
    out = apply(params, tokens, config=config, mask=jnp.asarray(mask[None]),
                positions=jnp.asarray([positions])).logits
    for m, c in enumerate(cuts):
        ref = apply(params, jnp.concatenate([ctx[:, :c], blocks[m]], axis=1), config=config).logits
        np.testing.assert_allclose(out[:, n_ctx + m * block: n_ctx + (m + 1) * block], ref[:, c:], **TOL)


def test_custom_mask_against_a_cache_equals_shorter_runs():
    """The other probe layout: the context in the cache once, each row's block seeing a prefix."""
    config, params = _setup("qwen2")
    n_ctx, block, cuts = 10, 3, [2, 6, 10]
    ctx = _tokens(config, (1, n_ctx), seed=2)
    cache = apply(params, ctx, config=config, cache=init_cache(config, 1, n_ctx + block)).cache
    cache = jax.tree.map(lambda x: jnp.repeat(x, len(cuts), axis=1) if x.ndim == 5 else
                         (jnp.repeat(x, len(cuts), axis=0) if x.ndim == 2 else x), cache)
    blocks = _tokens(config, (len(cuts), block), seed=3)
    T = n_ctx + block
    mask = np.zeros((len(cuts), block, T), bool)
    for m, c in enumerate(cuts):
        mask[m, :, :c] = True
        mask[m, :, n_ctx:] = np.tril(np.ones((block, block), bool))
    positions = np.asarray(cuts)[:, None] + np.arange(block)
    out = apply(params, blocks, config=config, cache=cache, mask=jnp.asarray(mask),
                positions=jnp.asarray(positions)).logits
    for m, c in enumerate(cuts):
        ref = apply(params, jnp.concatenate([ctx[:, :c], blocks[m:m + 1]], axis=1), config=config).logits
        np.testing.assert_allclose(out[m:m + 1], ref[:, c:], **TOL)


@pytest.mark.parametrize("policy", ["full", "dots", "dots_no_batch"])
def test_remat_policies_change_nothing_but_memory(policy):
    config, params = _setup("llama3")
    tokens = _tokens(config, (2, 9))

    def loss(p, cfg):
        return jax.nn.log_softmax(apply(p, tokens, config=cfg).logits)[..., 0].mean()

    base_val, base_grad = jax.value_and_grad(loss)(params, config)
    val, grad = jax.value_and_grad(loss)(params, config.replace(remat=policy))
    np.testing.assert_allclose(val, base_val, rtol=1e-6)
    jax.tree.map(functools.partial(np.testing.assert_allclose, atol=1e-6, rtol=1e-5), grad, base_grad)


def test_intermediates_compose_to_the_output():
    config, params = _setup("qwen3")
    tokens = _tokens(config, (2, 6))
    out = apply(params, tokens, config=config, return_intermediates=True)
    it = out.intermediates
    L = config.num_layers
    assert it["residual"].shape == (L, 2, 6, config.hidden_size)
    np.testing.assert_allclose(it["residual"][0], params["embed_tokens"]["embedding"][tokens], atol=1e-6)
    for layer in range(L - 1):  # residual stream: x_{l+1} = x_l + attn_out_l + mlp_out_l
        np.testing.assert_allclose(it["residual"][layer + 1],
                                   it["residual"][layer] + it["attn_out"][layer] + it["mlp_out"][layer], atol=1e-5)
    logits = it["final_hidden"] @ params["embed_tokens"]["embedding"].T  # qwen3 config is tied
    np.testing.assert_allclose(logits, out.logits, atol=1e-4)
    np.testing.assert_allclose(apply(params, tokens, config=config).logits, out.logits, atol=1e-6)


class TestVariants(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_apply_same_with_and_without_jit(self):
        config, params = _setup("qwen2")
        tokens = _tokens(config, (2, 5))
        ref = apply(params, tokens, config=config).logits
        fn = self.variant(lambda p, t: apply(p, t, config=config).logits)
        np.testing.assert_allclose(fn(params, tokens), ref, **TOL)

    @chex.variants(with_jit=True, without_jit=True)
    def test_vmap_over_a_batch_of_params(self):
        config = TINY["qwen2"]
        stacked = jax.tree.map(lambda *x: jnp.stack(x), *(random_params(config, seed=s) for s in (0, 1)))
        tokens = _tokens(config, (1, 5))
        fn = self.variant(jax.vmap(lambda p: apply(p, tokens, config=config).logits))
        out = fn(stacked)
        for s in (0, 1):
            np.testing.assert_allclose(out[s], apply(random_params(config, seed=s), tokens, config=config).logits,
                                       **TOL)


def test_param_and_compute_dtypes_are_separate():
    config = TINY["qwen2"].replace(param_dtype="float32", compute_dtype="bfloat16")
    params = random_params(config)
    tokens = _tokens(config, (1, 8))
    out = apply(params, tokens, config=config, return_intermediates=True)
    assert out.logits.dtype == jnp.float32
    assert out.intermediates["residual"].dtype == jnp.bfloat16
    ref = apply(params, tokens, config=config.replace(compute_dtype="float32")).logits
    assert 0 < float(jnp.abs(out.logits - ref).max()) < 0.5


def test_config_is_hashable_and_static():
    config = ModelConfig()
    assert hash(config) == hash(ModelConfig())
    assert config.replace(num_layers=3) != config
