"""E12 helpers: budget truncation equals a budgeted generation; forced-answer NLL equals the reference."""

import jax
import numpy as np

from metareason.model import init
from metareason.probe import ProbeBatch, answer_loss_per_prefix
from metareason.probe.efficiency import efficiency_table, forced_answers, greedy_continue
from metareason.tasks.lab import LabConfig, lab_records
from metareason.train.presets import model_preset


def model():
    config = model_preset("lab-tiny")
    return config, init(config, jax.random.key(1))


def test_truncated_greedy_equals_budgeted_generation():
    config, params = model()
    prompts = [np.array([1, 10, 11, 12, 3]), np.array([1, 20, 3])]
    long = greedy_continue(params, config, prompts, max_new_tokens=12, stop_tokens=(2,))
    short = greedy_continue(params, config, prompts, max_new_tokens=5, stop_tokens=(2,))
    for a, b in zip(long, short):
        np.testing.assert_array_equal(a[:5], b)


def test_forced_answer_nll_matches_reference():
    config, params = model()
    ctx = [np.array([1, 10, 11, 12, 3, 14]), np.array([1, 20, 3])]
    force, answers = np.array([4, 5, 6, 7]), [np.array([40, 41]), np.array([42])]
    _, nll = forced_answers(params, config, ctx, force, answers, close_id=8, parse=lambda ids: str(list(ids)))
    for i, (c, a) in enumerate(zip(ctx, answers)):
        probe = np.concatenate([force, a])[None]
        targets = np.arange(probe.shape[1])[None] >= len(force)
        ref = answer_loss_per_prefix(params, ProbeBatch(c[None], [len(c)], [[len(c)]], probe, targets), config=config)
        assert abs(float(ref.mean[0, 0]) - nll[i]) < 1e-5 * max(1.0, nll[i])


def test_efficiency_table_rows():
    config, params = model()
    cfg = LabConfig(families=("arith",), train_size=2, eval_size=3)
    recs = list(lab_records(cfg, "test", also_styles=("summary",)))
    rows = efficiency_table(params, config, recs, budgets=[0, 4, 8], summaries=[r["also"]["summary"] for r in recs])
    assert [r["mode"] for r in rows] == ["none", "budget", "budget", "full", "summary"]
    assert rows[0]["mean_tokens"] == 0 and rows[1]["mean_tokens"] <= 4 and rows[2]["mean_tokens"] <= 8
    assert all(r["n"] == 3 and 0 <= r["accuracy"] <= 1 and r["answer_nll"] > 0 for r in rows)


def cut_then_force(params, config, prompts, force, *, end_think, close, budget):
    """The two-phase reference (the old efficiency path): greedy thinking stopped at end_think,
    cut at the budget, then forced_answers on prompt + thinking."""
    think = greedy_continue(params, config, prompts, max_new_tokens=max(budget, 1), stop_tokens=(end_think,))
    think = [t[:-1] if len(t) and t[-1] == end_think else t for t in think]
    ctx = [np.concatenate([p, t[:budget]]) for p, t in zip(prompts, think)]
    want, _ = forced_answers(params, config, ctx, force, [np.array([40])] * len(prompts), close_id=close,
                             parse=lambda ids: [int(i) for i in ids])
    return want, ctx


def test_sampler_budget_forcing_equals_cut_then_force():
    # end_think: a token prompt 1's greedy thinking emits second, so it ends its thinking itself before
    # budgets 3 and 6 (and still gets the answer template); close: one prompt 0 emits while thinking,
    # which must not end its row
    from metareason.probe.efficiency import budget_forced_answers

    config, params = model()
    prompts = [np.array([1, 10, 11, 12, 3]), np.array([1, 20, 3]), np.array([1, 30, 31, 3])]
    free = greedy_continue(params, config, prompts, max_new_tokens=6, stop_tokens=())
    end_think = int(free[1][1])
    close = next(int(t) for t in free[0] if t != end_think)
    force = np.array([end_think, 5, 6, 7])
    for budget in (0, 3, 6):
        want, ctx = cut_then_force(params, config, prompts, force, end_think=end_think, close=close, budget=budget)
        got = budget_forced_answers(params, config, prompts, force, end_think=end_think, close_id=close, budget=budget)
        assert [g.tolist() for g in got] == want
        if budget:
            assert len(ctx[1]) < len(prompts[1]) + budget   # prompt 1 ended its thinking itself
    per_row = budget_forced_answers(params, config, prompts, force, end_think=end_think, close_id=close,
                                    budget=[0, 3, 6])
    for b, (g, budget) in enumerate(zip(per_row, (0, 3, 6))):
        want, _ = cut_then_force(params, config, prompts[b:b + 1], force, end_think=end_think, close=close,
                                 budget=budget)
        assert g.tolist() == want[0]


def test_full_row_is_not_capped_at_the_largest_budget():
    """"full" is the model's own thinking until it ends it (or the context's room), not the largest
    budget: with budgets (0, 2, 4) its mean length equals the greedy thinking's own (uncapped) length."""
    from metareason.format import LabFormat

    config, params = model()
    cfg = LabConfig(families=("arith",), train_size=2, eval_size=2)
    recs = list(lab_records(cfg, "test"))
    rows = efficiency_table(params, config, recs, budgets=[0, 2, 4], max_thinking=48)
    full = next(r for r in rows if r["mode"] == "full")
    fmt = LabFormat()
    think = greedy_continue(params, config, [np.asarray(fmt.prompt(r), np.int32) for r in recs], max_new_tokens=48,
                            stop_tokens=(fmt.vocab.end_think_id,))
    lengths = [len(t) - (len(t) and t[-1] == fmt.vocab.end_think_id) for t in think]
    assert full["mean_tokens"] == np.mean(lengths) and full["mean_tokens"] > 4  # the old cap was max(budgets) = 4
    default = next(r for r in efficiency_table(params, config, recs[:1], budgets=[0, 4]) if r["mode"] == "full")
    assert default["mean_tokens"] > 4
