"""Budget forcing inside the decode loop against a naive reference: a per-row loop with a full
forward at every step that cuts the thinking at the budget, appends the forced tokens, then goes
on greedily; rows that end thinking themselves are never forced; sampled rows keep the forced
tokens out of their logprobs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metareason.model import apply
from metareason.sample import Forcing, SamplingConfig, SamplingError, generate, generate_all
from reference import TINY, random_params

N = 9


def naive_forced_greedy(params, config, prompt, max_new, forcing, think_budget, stop_tokens=()):
    """(tokens, forced flags) of one row: greedy with a full forward per step; after
    `think_budget` generated tokens without end_think, the forced tokens are appended (with
    `forcing.always_template`, the rest of them also after the model's own end_think)."""
    seq, out, flags = list(prompt), [], []
    thinking, queue = True, []
    while len(out) < max_new:
        if queue:
            tok, f = queue.pop(0), True
        elif thinking and len(out) >= think_budget:
            queue = list(forcing.tokens[1:])
            tok, f, thinking = forcing.tokens[0], True, False
        else:
            logits = apply(params, jnp.asarray([seq]), config=config).logits[0, -1]
            tok, f = int(np.argmax(logits)), False
            if thinking and tok == forcing.end_think:
                thinking, queue = False, list(forcing.tokens[1:]) if forcing.always_template else []
        out.append(tok)
        flags.append(f)
        seq.append(tok)
        if tok in stop_tokens:
            break
    return out, flags


def _free(params, config, prompt):
    return naive_forced_greedy(params, config, prompt, N, Forcing(0, (1,)), N + 1)[0]


@pytest.mark.parametrize("always, stop", [(False, False), (True, False), (True, True)])
def test_forced_greedy_equals_the_naive_loop(always, stop):
    config = TINY["qwen2"]
    params = random_params(config, seed=1, scale=0.3)
    rng = np.random.RandomState(0)
    lengths = np.asarray([4, 2, 3, 4])
    prompts = rng.randint(0, config.vocab_size, (4, 4))
    # end_think: the 3rd free greedy token of row 2, so row 2 ends thinking itself within budget 5
    # (unless it appeared earlier in another row's thinking, which the reference handles the same way)
    end_think = _free(params, config, prompts[2, :3])[2]
    forcing = Forcing(end_think=end_think, tokens=(end_think, 7, 8), always_template=always)
    # stop: a token row 3 emits while thinking (it ends the row there), and 8, the last forced token
    stops = (_free(params, config, prompts[3])[4], 8) if stop else ()
    budgets = np.asarray([3, 0, 5, 6])
    out = generate(params, prompts, lengths, config=config, forcing=forcing, think_budgets=budgets,
                   sampling=SamplingConfig(temperature=0, max_new_tokens=N, stop_tokens=stops, pad_id=-1))
    for b, n in enumerate(lengths):
        ref, flags = naive_forced_greedy(params, config, prompts[b, :n], N, forcing, budgets[b], stops)
        assert out.lengths[b] == len(ref)
        np.testing.assert_array_equal(out.tokens[b], ref + [-1] * (N - len(ref)))
        np.testing.assert_array_equal(out.forced[b], flags + [False] * (N - len(ref)))
    own = list(out.tokens[2]).index(end_think)        # row 2 emitted end_think itself within its budget:
    assert own < 5 and not out.forced[2, :own + 1].any()   # never forced, or only the template after it
    np.testing.assert_array_equal(out.forced[2, own + 1:own + 3], always)
    np.testing.assert_array_equal(out.forced[1, :3], True)   # budget 0: forced at once
    np.testing.assert_array_equal(out.tokens[0, 3:6], forcing.tokens)
    if stop:
        assert out.finished_by_stop.all() and out.lengths[0] == 6 and out.lengths[3] <= 5


def test_without_forcing_nothing_changes_and_sampled_rows_score_forced_tokens_zero():
    config = TINY["qwen2"]
    params = random_params(config, seed=2, scale=0.3)
    prompts, lengths = np.random.RandomState(1).randint(0, config.vocab_size, (3, 4)), np.asarray([4, 4, 2])
    s = SamplingConfig(temperature=0, max_new_tokens=N)
    plain = generate(params, prompts, lengths, config=config, sampling=s)
    assert not plain.forced.any()
    never = generate(params, prompts, lengths, config=config, sampling=s, forcing=Forcing(0, (1, 2)),
                     think_budgets=np.full(3, N))
    np.testing.assert_array_equal(never.tokens, plain.tokens)
    hot = SamplingConfig(temperature=1.0, max_new_tokens=N)
    out = generate(params, prompts, lengths, config=config, sampling=hot, key=jax.random.key(0),
                   forcing=Forcing(0, (5, 6)), think_budgets=np.asarray([2, 2, 2]))
    forced, toks = np.asarray(out.forced), np.asarray(out.tokens)
    for b in range(3):  # forced at steps 2 and 3, unless the row drew end_think (0) in its first 2
        want = [] if 0 in toks[b, :2] else [2, 3]
        assert np.flatnonzero(forced[b]).tolist() == want
        if want:
            np.testing.assert_array_equal(toks[b, 2:4], [5, 6])
    np.testing.assert_array_equal(np.asarray(out.logprobs)[forced], 0.0)
    assert (np.asarray(out.logprobs)[~forced & (np.arange(N) < np.asarray(out.lengths)[:, None])] < 0).all()


def test_generate_all_takes_one_or_per_prompt_budgets():
    config = TINY["qwen2"]
    params = random_params(config, seed=1, scale=0.3)
    prompts = [[3, 4, 5], [6, 7], [8]]
    forcing = Forcing(end_think=0, tokens=(9, 10))
    s = SamplingConfig(temperature=0, max_new_tokens=N)
    got = generate_all(params, config, prompts, s, forcing=forcing, think_budget=[1, 2, 3], batch_size=2, multiple=4)
    for p, g, b in zip(prompts, got, [1, 2, 3]):
        ref, _ = naive_forced_greedy(params, config, p, N, forcing, b)
        np.testing.assert_array_equal(g, ref)
    same = generate_all(params, config, prompts, s, forcing=forcing, think_budget=2, batch_size=4)
    np.testing.assert_array_equal(same[1], got[1])


@pytest.mark.parametrize("kw, msg", [
    (dict(think_budgets=np.zeros(2, int)), "think_budgets needs forcing"),
    (dict(forcing=Forcing(0, (1,))), "forcing needs think_budgets"),
    (dict(forcing=Forcing(0, (10**6,)), think_budgets=np.zeros(2, int)), r"forcing token 1000000 out of range"),
    (dict(forcing=Forcing(0, (1,)), think_budgets=np.asarray([0, N + 1])), r"think_budgets\[1\] = 10 out of range"),
    (dict(forcing=(0, 1), think_budgets=np.zeros(2, int)), "forcing must be a Forcing"),
])
def test_bad_forcing_input(kw, msg):
    config = TINY["qwen2"]
    params = random_params(config, seed=1)
    with pytest.raises(SamplingError, match=msg):
        generate(params, np.ones((2, 3), int), [3, 2], config=config, sampling=SamplingConfig(temperature=0,
                 max_new_tokens=N), **kw)
    with pytest.raises(SamplingError, match="non-empty tuple"):
        Forcing(0, ())
    with pytest.raises(SamplingError, match=r"always_template needs tokens\[0\] == end_think"):
        Forcing(0, (1, 2), always_template=True)
    with pytest.raises(SamplingError, match="think_budget must be one int or one per prompt"):
        generate_all(params, config, [[1, 2], [3]], SamplingConfig(temperature=0, max_new_tokens=N),
                     forcing=Forcing(0, (1,)), think_budget=[1, 2, 3])
