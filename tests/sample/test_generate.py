"""`generate` (left-aligned prefill + KV-cache decode loop) against naive references: per-row
loops that run the full forward over the growing sequence at every step, log_softmax of the
full forward, and (for sampling) the softmax probabilities themselves."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from metareason.model import apply
from metareason.sample import SamplingConfig, decode as decode_module, generate
from filter_reference import np_process
from reference import TINY, random_params

PAD = -1  # distinguishable from every token id
# Prompts at most P = 4 wide and N = 5 new tokens everywhere: the naive references then run the
# full forward on lengths 1..P + N - 1 only, compiled once per family and shared by the tests.
N = 5


def _prompts(config, lengths, seed=0, junk=None):
    """Right-padded int[B, max(lengths)]: random real tokens, then `junk` (default: random tokens)."""
    rng = np.random.RandomState(seed)
    P = max(lengths)
    prompts = rng.randint(0, config.vocab_size, (len(lengths), P))
    if junk is not None:
        for b, n in enumerate(lengths):
            prompts[b, n:] = junk
    return prompts, np.asarray(lengths)


def naive_greedy(params, config, prompt, max_new, stop_tokens=(), budget=None):
    """One row, no cache: a full forward over prompt + generated at every step, argmax."""
    seq, out = list(prompt), []
    budget = max_new if budget is None else budget
    while len(out) < budget:
        logits = apply(params, jnp.asarray([seq]), config=config).logits[0, -1]
        tok = int(np.argmax(logits))
        out.append(tok)
        seq.append(tok)
        if tok in stop_tokens:
            return out, True
    return out, False


def _full_logits(params, config, prompt, generated):
    """float64[len(generated), V]: the logits of one full forward over prompt + generated[:-1],
    at the positions that predict each generated token."""
    seq = np.concatenate([prompt, generated[:-1]])[None]
    logits = apply(params, jnp.asarray(seq), config=config).logits[0]
    return np.asarray(logits, np.float64)[len(prompt) - 1:]


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    with np.errstate(invalid="ignore"):
        return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.parametrize("name", ["qwen2", "qwen3"])  # llama3: the sampled-logprob tests below
def test_greedy_equals_naive_full_forward_loop(name):
    config = TINY[name]
    params = random_params(config, seed=1, scale=0.3)  # layers strong enough that tied models don't just repeat
    prompts, lengths = _prompts(config, [4, 2, 3], seed=2, junk=10**6)  # padding never read
    out = generate(params, prompts, lengths, config=config, sampling=SamplingConfig(temperature=0, max_new_tokens=N))
    for b, n in enumerate(lengths):
        ref, _ = naive_greedy(params, config, prompts[b, :n], N)
        np.testing.assert_array_equal(out.tokens[b], ref)
    np.testing.assert_array_equal(out.lengths, N)
    np.testing.assert_array_equal(out.finished_by_stop, False)
    np.testing.assert_array_equal(out.logprobs, 0.0)  # greedy: a point mass


def test_stop_tokens_and_budgets_match_naive_loop():
    config = TINY["qwen2"]
    params = random_params(config, seed=3)
    prompts, lengths = _prompts(config, [4, 3, 4, 2, 1], seed=4)
    free = [naive_greedy(params, config, prompts[b, :n], N)[0] for b, n in enumerate(lengths)]
    # stop token: row 0's greedy continuation at the first index >= 2 where it is new to the row
    # (and not among row 1's first 3 tokens, so that row 1 ends by its budget)
    j = next(i for i in range(2, N) if free[0][i] not in free[0][:i] + free[1][:3])
    stop = free[0][j]
    budgets = np.asarray([N, 3, N, 0, 4])
    sampling = SamplingConfig(temperature=0, max_new_tokens=N, stop_tokens=(stop, config.vocab_size - 1), pad_id=PAD)
    out = generate(params, prompts, lengths, config=config, sampling=sampling, budgets=budgets)
    for b, n in enumerate(lengths):
        ref, stopped = naive_greedy(params, config, prompts[b, :n], N, sampling.stop_tokens, budgets[b])
        assert int(out.lengths[b]) == len(ref)
        assert bool(out.finished_by_stop[b]) == stopped
        np.testing.assert_array_equal(out.tokens[b], ref + [PAD] * (N - len(ref)))
    assert int(out.lengths[0]) == j + 1 and bool(out.finished_by_stop[0])  # the stop token is kept and counted
    assert int(out.lengths[1]) == 3 and int(out.lengths[3]) == 0           # budgets bind
    np.testing.assert_array_equal(out.tokens[3], PAD)


def test_decoding_stops_as_soon_as_every_row_is_done(monkeypatch):
    """Budgets 2 and 1 of 8: the model runs twice (prefill, one decode step), not 8 times; the
    outputs after each row's end are pad / 0."""
    config = TINY["qwen2"]
    params = random_params(config, seed=3)
    prompts, lengths = _prompts(config, [4, 3], seed=4)
    calls = []
    real_apply = decode_module.apply

    def counting_apply(*args, **kwargs):
        jax.debug.callback(lambda: calls.append(1))  # runs once per executed model call
        return real_apply(*args, **kwargs)

    monkeypatch.setattr(decode_module, "apply", counting_apply)
    sampling = SamplingConfig(max_new_tokens=8, pad_id=-7)  # a config no other test compiles
    out = generate(params, prompts, lengths, config=config, key=jax.random.key(0), sampling=sampling,
                   budgets=np.asarray([2, 1]))
    jax.block_until_ready(out)
    jax.effects_barrier()
    assert len(calls) == 2
    np.testing.assert_array_equal(out.lengths, [2, 1])
    np.testing.assert_array_equal(out.tokens[:, 2:], -7)
    np.testing.assert_array_equal(out.tokens[1, 1:], -7)
    np.testing.assert_array_equal(out.logprobs[:, 2:], 0.0)
    np.testing.assert_array_equal(out.logprobs[1, 1:], 0.0)
    assert (np.asarray(out.logprobs[:, 0]) < 0).all()


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 10, 0.9)])
def test_sampled_logprobs_equal_log_softmax_of_the_full_forward(temperature, top_k, top_p):
    """Sampled continuations, teacher-forced through a full forward: each logprob is log_softmax
    of the (temperature-scaled, filtered) full-forward logits at the drawn token."""
    config = TINY["llama3"]
    params = random_params(config, seed=5, scale=0.3)
    prompts, lengths = _prompts(config, [4, 3, 1], seed=6)
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=N, pad_id=PAD)
    out = generate(params, prompts, lengths, config=config, sampling=sampling, key=jax.random.key(7),
                   budgets=np.asarray([N, N, 4]))
    np.testing.assert_array_equal(out.lengths, [N, N, 4])
    for b, n in enumerate(lengths):
        m = int(out.lengths[b])
        gen = np.asarray(out.tokens[b, :m])
        logp = _log_softmax(np_process(_full_logits(params, config, prompts[b, :n], gen), temperature, top_k, top_p))
        ref = logp[np.arange(m), gen]
        assert np.isfinite(ref).all()  # every drawn token was inside the filtered set
        np.testing.assert_allclose(out.logprobs[b, :m], ref, atol=2e-5, rtol=1e-5)
        np.testing.assert_array_equal(out.logprobs[b, m:], 0.0)
        np.testing.assert_array_equal(out.tokens[b, m:], PAD)
    assert float(out.logprobs.sum() / out.lengths.sum()) < -0.5  # not a near-deterministic model


def test_same_key_same_draws_also_under_an_outer_jit():
    """Deterministic in the key; works on traced inputs (value checks skipped) inside jax.jit.
    (The set-up of the temperature-1 case above, so the direct calls are already compiled.)"""
    config = TINY["llama3"]
    params = random_params(config, seed=5, scale=0.3)
    prompts, lengths = _prompts(config, [4, 3, 1], seed=6)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=N, pad_id=PAD)
    budgets = np.asarray([N, N, 4])
    out = generate(params, prompts, lengths, config=config, key=jax.random.key(0), sampling=sampling, budgets=budgets)
    again = generate(params, prompts, lengths, config=config, key=jax.random.key(0), sampling=sampling, budgets=budgets)
    jax.tree.map(np.testing.assert_array_equal, out, again)
    other = generate(params, prompts, lengths, config=config, key=jax.random.key(1), sampling=sampling, budgets=budgets)
    assert not np.array_equal(other.tokens, out.tokens)
    jitted = jax.jit(lambda p, x, n, k, bud: generate(p, x, n, config=config, sampling=sampling, key=k, budgets=bud))
    inner = jitted(params, prompts, lengths, jax.random.key(0), budgets)
    np.testing.assert_array_equal(inner.tokens, out.tokens)
    np.testing.assert_array_equal(inner.lengths, out.lengths)
    np.testing.assert_allclose(inner.logprobs, out.logprobs, atol=1e-6)


def chi_square_pvalue(counts, probs):
    """Pearson's goodness-of-fit p-value of `counts` against `probs` (> 0), bins expecting fewer
    than 5 draws pooled into one."""
    expected = counts.sum() * probs
    small = expected < 5
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return scipy.stats.chi2.sf(((obs - exp) ** 2 / exp).sum(), len(exp) - 1)


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, 0, 1.0), (1.0, 20, 0.9)])
def test_first_token_frequencies_match_the_softmax(temperature, top_k, top_p):
    """100,000 keys (vmap over keys): the first drawn token's counts pass a chi-square test
    (p-value > 1e-6) against the reference probabilities (softmax of the full forward's
    temperature-scaled, filtered logits), and filtered-out tokens are never drawn. The test
    notices a 5% error in the temperature (tried)."""
    config = TINY["qwen2"]
    params = random_params(config, seed=8)
    prompts, lengths = _prompts(config, [3, 4], seed=9)
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=1)
    keys = jax.random.split(jax.random.key(10), 100_000)
    first = jax.vmap(lambda k: generate(params, prompts, lengths, config=config, sampling=sampling,
                                        key=k).tokens[:, 0])(keys)
    for b, n in enumerate(lengths):
        logits = np.asarray(apply(params, jnp.asarray(prompts[b:b + 1, :n]), config=config).logits[0, -1], np.float64)
        probs = np.exp(_log_softmax(np_process(logits, temperature, top_k, top_p)))
        counts = np.bincount(np.asarray(first[:, b]), minlength=config.vocab_size)
        assert probs.max() < 0.5 and (probs > 0.01).sum() >= 8  # a distribution worth testing
        np.testing.assert_array_equal(counts[probs == 0], 0)
        kept = probs > 0
        assert chi_square_pvalue(counts[kept], probs[kept]) > 1e-6
