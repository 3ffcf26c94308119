"""E12: reasoning efficiency at equal token counts (Figs 10, 11 of the paper), with the sampler.

Three ways to spend thinking tokens before the answer is forced with the answer template:
- budget forcing: the model's own greedy thinking cut at B tokens, then the answer template
  forced, inside the sampler's decode loop (`metareason.sample.Forcing`); a model that ends its
  thinking before B goes on by itself. (For the NLL at the cut: greedy decoding is prefix
  consistent, so one thinking generation at the largest budget serves every smaller one.)
- summarised trajectories: a given compressed trajectory (the lab's "summary" style);
- no thinking: the answer forced right after the start of thinking.
For each, the forced answer is decoded greedily and checked, and the true answer's NLL
(the probe L-hat) is measured at the same context.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from metareason.model import ModelConfig
from metareason.probe.loss import ProbeBatch, answer_loss_along_trajectory
from metareason.sample import Forcing, SamplingConfig, generate_all, round_up

__all__ = ["greedy_continue", "forced_answers", "budget_forced_answers", "efficiency_table"]


def greedy_continue(params: Any, config: ModelConfig, prompts: Sequence[np.ndarray], *, max_new_tokens: int,
                    stop_tokens: Sequence[int], pad_id: int = 0, batch_size: int = 64) -> list[np.ndarray]:
    """Greedy continuations of each prompt (the stop token, if emitted, included)."""
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens, stop_tokens=tuple(stop_tokens),
                              pad_id=pad_id)
    return generate_all(params, config, prompts, sampling, batch_size=batch_size)


def forced_answers(params: Any, config: ModelConfig, contexts: Sequence[np.ndarray], force: np.ndarray,
                   answers: Sequence[np.ndarray], *, close_id: int, parse: Callable[[np.ndarray], str],
                   max_answer_tokens: int = 8) -> tuple[list[str], np.ndarray]:
    """Appends `force` (e.g. `</think> **Final Answer** \\boxed{`) to each context, decodes the
    answer greedily up to `close_id`, and measures the true answer's mean NLL there.
    Returns (decoded answers, NLL float[n])."""
    prompts = [np.concatenate([c, force]).astype(np.int32) for c in contexts]
    gens = greedy_continue(params, config, prompts, max_new_tokens=max_answer_tokens, stop_tokens=(close_id,))
    decoded = [parse(g[:-1] if len(g) and g[-1] == close_id else g) for g in gens]
    # the probe at the end of each context: probe = force + answer (targets: the answer)
    n = len(contexts)
    N = round_up(max(len(c) for c in contexts), 32)
    A = round_up(len(force) + max(len(a) for a in answers), 8)
    ctx = np.zeros((n, N), np.int32)
    probe = np.zeros((n, A), np.int32)
    targets = np.zeros((n, A), bool)
    for i, (c, a) in enumerate(zip(contexts, answers)):
        ctx[i, :len(c)] = c
        probe[i, :len(force) + len(a)] = np.concatenate([force, a])
        targets[i, len(force):len(force) + len(a)] = True
    lens = np.asarray([len(c) for c in contexts], np.int32)
    res = answer_loss_along_trajectory(params, ProbeBatch(ctx, lens, lens[:, None], probe, targets), config=config)
    return decoded, np.asarray(res.mean[:, 0], np.float64)


def budget_forced_answers(params: Any, config: ModelConfig, prompts: Sequence[np.ndarray], force: np.ndarray, *,
                          end_think: int, close_id: int, budget: int, max_answer_tokens: int = 8,
                          batch_size: int = 64) -> list[np.ndarray]:
    """Budget forcing in one greedy generation per prompt: at most `budget` thinking tokens, then
    `force` (which starts with `end_think`), then the answer up to `close_id`. Returns each
    prompt's answer ids: what follows the forced tokens (or, for a row that ended its thinking by
    itself, what follows the model's own answer template; empty if it wrote none)."""
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=budget + len(force) + max_answer_tokens,
                              stop_tokens=(close_id,))
    outs = generate_all(params, config, prompts, sampling, forcing=Forcing(end_think, tuple(int(t) for t in force)),
                        think_budget=budget, batch_size=batch_size)
    template = [int(t) for t in force[1:]]
    answers = []
    for o in outs:
        o = [int(t) for t in o]
        o = o[:-1] if o and o[-1] == close_id else o
        starts = [i for i in range(len(o) - len(template) + 1) if o[i:i + len(template)] == template]
        answers.append(np.asarray(o[starts[-1] + len(template):] if starts else [], np.int32))
    return answers


def efficiency_table(params: Any, config: ModelConfig, records: Sequence[dict], *, budgets: Sequence[int],
                     summaries: Sequence[str] | None = None, vocab=None, max_thinking: int | None = None) -> list[dict]:
    """Rows {"mode", "budget", "mean_tokens", "accuracy", "answer_nll", "n"} for lab records:
    mode "none" (budget 0), "budget" (each B in `budgets`, the model's own greedy thinking cut at
    B tokens), "full" (thinking until the model ends it) and, given `summaries` (one text per
    record), "summary"."""
    from metareason.tasks.lab import prompt_tokens
    from metareason.tokenize.lab import ANSWER_CLOSE, ANSWER_TEMPLATE, LAB_VOCAB

    v = vocab or LAB_VOCAB
    force = np.asarray([v.end_think_id, *v.encode_tokens(ANSWER_TEMPLATE)], np.int32)
    close_id = v.ids[ANSWER_CLOSE]
    prompts = [np.asarray(prompt_tokens(r["question"], v), np.int32) for r in records]
    answers = [np.asarray(v.encode(r["answer"]), np.int32) for r in records]
    truth = [r["answer"] for r in records]
    max_thinking = max_thinking or max(budgets)
    thinking = greedy_continue(params, config, prompts, max_new_tokens=max_thinking, stop_tokens=(v.end_think_id,))
    thinking = [t[:-1] if len(t) and t[-1] == v.end_think_id else t for t in thinking]

    def parse(ids):
        return "".join(v.tokens[int(i)] for i in ids if int(i) in v.digit_ids) if len(ids) else ""

    def row(mode, budget, thoughts):
        ctx = [np.concatenate([p, t]).astype(np.int32) for p, t in zip(prompts, thoughts)]
        got, nll = forced_answers(params, config, ctx, force, answers, close_id=close_id, parse=parse)
        if mode == "budget":  # the answers from the sampler's own budget forcing
            got = [parse(a) for a in budget_forced_answers(params, config, prompts, force, end_think=v.end_think_id,
                                                           close_id=close_id, budget=budget)]
        return {"mode": mode, "budget": budget, "mean_tokens": float(np.mean([len(t) for t in thoughts])),
                "accuracy": float(np.mean([g == a for g, a in zip(got, truth)])), "answer_nll": float(nll.mean()),
                "n": len(records)}

    rows = [row("none", 0, [np.zeros(0, np.int32)] * len(records))]
    rows += [row("budget", int(b), [t[:b] for t in thinking]) for b in sorted(budgets) if b > 0]
    rows.append(row("full", None, thinking))
    if summaries is not None:
        rows.append(row("summary", None, [np.asarray(v.encode(s), np.int32) for s in summaries]))
    return rows
