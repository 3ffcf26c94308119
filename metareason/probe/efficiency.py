"""E12: reasoning efficiency at equal token counts (Figs 10, 11 of the paper), with the sampler.

Three ways to spend thinking tokens before the answer is forced with the answer template:
- budget forcing: the model's own greedy thinking cut at B tokens (or where it ends it itself),
  then the answer template forced, inside the sampler's decode loop (`metareason.sample.Forcing`,
  one generation for every budget). (For the NLL at the cut: greedy decoding is prefix
  consistent, so one thinking generation at the largest budget serves every smaller one.)
- summarised trajectories: a given compressed trajectory (the lab's "summary" style);
- no thinking: the answer forced right after the start of thinking.
For each, the forced answer is decoded greedily and checked, and the true answer's NLL
(the probe L-hat) is measured at the same context.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from metareason.format import LabFormat
from metareason.model import ModelConfig
from metareason.probe.loss import ProbeBatch, answer_loss_along_trajectory
from metareason.sample import Forcing, SamplingConfig, generate_all, round_up

#: Answer tokens decoded after the forced template (`forced_answers`, `budget_forced_answers`).
MAX_ANSWER_TOKENS = 8

__all__ = ["greedy_continue", "answer_nll", "forced_answers", "budget_forced_answers", "efficiency_table",
           "mode_prompt", "mode_efficiency", "mode_table"]


def greedy_continue(params: Any, config: ModelConfig, prompts: Sequence[np.ndarray], *, max_new_tokens: int,
                    stop_tokens: Sequence[int], pad_id: int = 0, batch_size: int = 64) -> list[np.ndarray]:
    """Greedy continuations of each prompt (the stop token, if emitted, included)."""
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens, stop_tokens=tuple(stop_tokens),
                              pad_id=pad_id)
    return generate_all(params, config, prompts, sampling, batch_size=batch_size)


def answer_nll(params: Any, config: ModelConfig, contexts: Sequence[np.ndarray], force: np.ndarray,
               answers: Sequence[np.ndarray]) -> np.ndarray:
    """The true answer's mean NLL right after each context + `force` (the probe L-hat): float[n]."""
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
    return np.asarray(res.mean[:, 0], np.float64)


def forced_answers(params: Any, config: ModelConfig, contexts: Sequence[np.ndarray], force: np.ndarray,
                   answers: Sequence[np.ndarray], *, close_id: int, parse: Callable[[np.ndarray], str],
                   max_answer_tokens: int = 8) -> tuple[list[str], np.ndarray]:
    """Appends `force` (e.g. `</think> **Final Answer** \\boxed{`) to each context, decodes the
    answer greedily up to `close_id`, and measures the true answer's mean NLL there.
    Returns (decoded answers, NLL float[n])."""
    prompts = [np.concatenate([c, force]).astype(np.int32) for c in contexts]
    gens = greedy_continue(params, config, prompts, max_new_tokens=max_answer_tokens, stop_tokens=(close_id,))
    decoded = [parse(g[:-1] if len(g) and g[-1] == close_id else g) for g in gens]
    return decoded, answer_nll(params, config, contexts, force, answers)


def budget_forced_answers(params: Any, config: ModelConfig, prompts: Sequence[np.ndarray], force: np.ndarray, *,
                          end_think: int, close_id: int, budget: int | Sequence[int], max_answer_tokens: int = 8,
                          batch_size: int = 64) -> list[np.ndarray]:
    """Budget forcing in one greedy generation (the sampler's `Forcing`, `always_template`): each
    prompt thinks for at most `budget` tokens (one int, or one per prompt), then `force` (which
    starts with `end_think`; after the model's own `end_think` only the rest of it) is forced and
    the answer decoded. Returns each prompt's answer ids: the at most `max_answer_tokens` tokens
    after the forced ones, up to (not including) `close_id`. Equals `forced_answers` on the
    prompt + the greedy thinking cut at the budget (and at the model's own `end_think`)."""
    budget = np.broadcast_to(np.asarray(budget, np.int32), (len(prompts),))
    forcing = Forcing(int(end_think), tuple(int(t) for t in force), always_template=True)
    # no stop token: a close_id inside the thinking must not end the row (the cut-then-force does not)
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=int(budget.max()) + len(force) + max_answer_tokens)
    outs = generate_all(params, config, prompts, sampling, forcing=forcing, think_budget=budget,
                        batch_size=batch_size)
    answers = []
    for o in outs:
        ends = np.flatnonzero(o == end_think)  # the first one ends the thinking (own or forced)
        a = o[ends[0] + len(force):][:max_answer_tokens] if ends.size else o[:0]
        closes = np.flatnonzero(a == close_id)
        answers.append(a[:closes[0]] if closes.size else a)
    return answers


def efficiency_table(params: Any, config: ModelConfig, records: Sequence[dict], *, budgets: Sequence[int],
                     summaries: Sequence[str] | None = None, vocab=None, max_thinking: int | None = None) -> list[dict]:
    """Rows {"mode", "budget", "mean_tokens", "accuracy", "answer_nll", "n"} for lab records:
    mode "none" (budget 0), "budget" (each B in `budgets`, the model's own greedy thinking cut at
    B tokens), "full" (the model's own full thinking, until it ends it itself: not capped at the
    largest budget, only at the sampler's `max_thinking` new tokens, by default all the room the
    context leaves after the longest prompt, the forced template and the answer) and, given
    `summaries` (one text per record), "summary". A forced answer is judged by `LabFormat.verdict`."""
    from metareason.tokenize.lab import ANSWER_CLOSE

    fmt = LabFormat(vocab)
    v, force = fmt.vocab, np.asarray(fmt.force_tokens, np.int32)
    close_id = v.ids[ANSWER_CLOSE]
    prompts = [np.asarray(fmt.prompt(r), np.int32) for r in records]
    answers = [np.asarray(v.encode(r["answer"]), np.int32) for r in records]
    room = config.max_position_embeddings - max(len(p) for p in prompts) - len(force) - MAX_ANSWER_TOKENS
    max_thinking = max_thinking or room
    if not 1 <= max_thinking <= room:
        raise ValueError(f"max_thinking must be in [1, {room}] (the context's room after the prompt), "
                         f"got {max_thinking}")
    thinking = greedy_continue(params, config, prompts, max_new_tokens=max_thinking, stop_tokens=(v.end_think_id,))
    thinking = [t[:-1] if len(t) and t[-1] == v.end_think_id else t for t in thinking]

    def judge(answer_ids):  # one forced answer (ids after the template) per record -> correct or not
        return [fmt.verdict([*force, *a], r).correct for a, r in zip(answer_ids, records)]

    # none (cut 0), each budget, full (cut max_thinking): one budget-forced generation for all
    cuts = [0, *sorted(int(b) for b in budgets if b > 0), max_thinking]
    n = len(records)
    forced = budget_forced_answers(params, config, list(prompts) * len(cuts), force, end_think=v.end_think_id,
                                   close_id=close_id, budget=np.repeat(np.minimum(cuts, max_thinking), n))
    by_cut = [judge(forced[i * n:(i + 1) * n]) for i in range(len(cuts))]

    def row(mode, budget, thoughts, ok=None):
        ctx = [np.concatenate([p, t]).astype(np.int32) for p, t in zip(prompts, thoughts)]
        if ok is None:
            got, nll = forced_answers(params, config, ctx, force, answers, close_id=close_id, parse=np.asarray)
            ok = judge(got)
        else:
            nll = answer_nll(params, config, ctx, force, answers)
        return {"mode": mode, "budget": budget, "mean_tokens": float(np.mean([len(t) for t in thoughts])),
                "accuracy": float(np.mean(ok)), "answer_nll": float(nll.mean()),
                "n": n}

    rows = [row("none", 0, [np.zeros(0, np.int32)] * n, by_cut[0])]
    rows += [row("budget", b, [t[:b] for t in thinking], ok) for b, ok in zip(cuts[1:-1], by_cut[1:-1])]
    rows.append(row("full", None, thinking, by_cut[-1]))
    if summaries is not None:
        rows.append(row("summary", None, [np.asarray(v.encode(s), np.int32) for s in summaries]))
    return rows


# -- the two modes of one model (E4, E12): /think against /no_think at matched token counts -----------

def mode_prompt(fmt: Any, record: dict, mode: str) -> list[int]:
    """The prompt of `record` in `mode` ("think" or "no_think") for a lab or Hugging Face format.

    Lab (`LabFormat`): `<bos> question <MARK> <think>` (the two-mode model's markers). Hugging Face
    (`HFFormat`): "think" is the format's prompt (chat template + think_prefix); "no_think" is the
    chat template with enable_thinking=False (Qwen3 writes the empty think block itself) or, where
    the template ignores that switch, the prompt followed by an empty think block
    (think_prefix or "<think>\\n", then "\\n</think>\\n\\n")."""
    if mode not in ("think", "no_think"):
        raise ValueError(f"mode must be 'think' or 'no_think', got {mode!r}")
    if isinstance(fmt, LabFormat):
        return fmt.prompt({**record, "mode": mode})
    if mode == "think":
        return list(fmt.prompt(record))
    msgs = [{"role": "user", "content": record["question"]}]
    plain = fmt.tok.apply_chat_template(msgs, add_generation_prompt=True)
    off = fmt.tok.apply_chat_template(msgs, add_generation_prompt=True, enable_thinking=False)
    if off != plain:
        return fmt.tok.encode(off)
    return fmt.tok.encode(plain + (fmt.think_prefix or "<think>\n") + "\n" + fmt.delimiter + "\n\n")


def _prompt_has_end(fmt: Any, prompt: Sequence[int]) -> bool:
    """Whether `prompt` already closed its think block (a Hugging Face no-thinking prompt)."""
    return fmt.end_think is not None and int(fmt.end_think) in [int(t) for t in prompt]


def mode_efficiency(params: Any, config: ModelConfig, records: Sequence[dict], *, budgets: Sequence[int],
                    summaries: Sequence[str] | None = None, fmt: Any = None,
                    max_thinking: int | None = None, batch_size: int = 64) -> dict:
    """Per-question raw numbers of E4 / E12 for ONE model prompted in its two modes.

    Rows (each with "tokens" int[n]: the thinking tokens before the forced answer, "correct"
    int[n] (0/1, the forced answer judged by `fmt.verdict`) and "nll" float[n] (the true answer's
    mean NLL right after the forced `</think>` + template, the probe L-hat)):
    - "no_think": the /no_think prompt (HF: `mode_prompt`), the answer forced at once (0 tokens);
    - "think@B" for B in `budgets`: the /think prompt, the model's own greedy thinking cut at B
      tokens (or where it ends it itself), then the answer forced (budget forcing);
    - "think": the /think prompt and the model's full own thinking (at most `max_thinking`);
    - given `summaries` (one text per record): "summary", the summary as the thinking of the
      /think prompt, and "think@summary", the model's own thinking cut at each question's summary
      length (matched to "summary" by construction).
    Also "end_nll_no_delimiter" float[n]: the NLL at the end of the full thinking with the
    template but no `</think>` (E4's delimiter effect: "think"'s nll minus it).

    fmt: `LabFormat()` by default, or an `HFFormat`. Returns {"rows": {name: {...}}, "budgets",
    "n"}; lists, JSON-able."""
    fmt = fmt or LabFormat()
    if not records:
        raise ValueError("mode_efficiency needs at least one record")
    if summaries is not None and len(summaries) != len(records):
        raise ValueError(f"one summary per record: {len(summaries)} summaries for {len(records)} records")
    n = len(records)
    force, template = np.asarray(fmt.force_tokens, np.int32), np.asarray(fmt.template_tokens, np.int32)
    is_lab = isinstance(fmt, LabFormat)
    examples = [fmt.probe_example(r["question"], "", r["answer"], delimiter=True) for r in records]
    answers = [e.probe[e.targets].astype(np.int32) for e in examples]
    close = fmt.vocab.ids["}"] if is_lab else _single_id(fmt, "}")
    think = [np.asarray(mode_prompt(fmt, r, "think"), np.int32) for r in records]
    no_think = [np.asarray(mode_prompt(fmt, r, "no_think"), np.int32) for r in records]
    # the forced decode pads prompt + thinking + force up to a multiple of 32: keep that slack
    room = config.max_position_embeddings - 32 - max(map(len, think)) - len(force) - MAX_ANSWER_TOKENS
    max_thinking = max_thinking or room
    if not 1 <= max_thinking <= room:
        raise ValueError(f"max_thinking must be in [1, {room}] (the context's room after the prompt), got "
                         f"{max_thinking}")
    own = greedy_continue(params, config, think, max_new_tokens=max_thinking, stop_tokens=(fmt.end_think,),
                          pad_id=fmt.pad_id, batch_size=batch_size)
    own = [t[:-1] if len(t) and t[-1] == fmt.end_think else t for t in own]

    def judge(answer_ids, closed_force):
        if is_lab:
            return [int(fmt.verdict([*closed_force, *a], r).correct) for a, r in zip(answer_ids, records)]
        return [int(fmt.verdict(fmt.decode([*closed_force, *a]) + "}", r).correct) for a, r in zip(answer_ids, records)]

    specs = [("no_think", no_think, [np.zeros(0, np.int32)] * n)]
    specs += [(f"think@{b}", think, [t[:b] for t in own]) for b in sorted({int(b) for b in budgets if b > 0})]
    specs.append(("think", think, own))
    if summaries is not None:
        summ = [np.asarray(fmt.vocab.encode(s) if is_lab else fmt.tok.encode(s), np.int32) for s in summaries]
        specs += [("summary", think, summ), ("think@summary", think, [t[:len(s)] for t, s in zip(own, summ)])]
    rows: dict[str, dict] = {}
    # one forced decode and one NLL pass per forced head (HF no-thinking prompts closed the block already)
    for closed in (False, True):
        group = [sp for sp in specs if _prompt_has_end(fmt, sp[1][0]) == closed]
        if not group:
            continue
        f = template if closed else force
        ctx = [np.concatenate([p, t]).astype(np.int32) for _, ps, ts in group for p, t in zip(ps, ts)]
        got, nll = forced_answers(params, config, ctx, f, answers * len(group), close_id=close, parse=np.asarray,
                                  max_answer_tokens=MAX_ANSWER_TOKENS)
        for k, (name, _, thoughts) in enumerate(group):
            rows[name] = {"tokens": [int(len(t)) for t in thoughts], "correct": judge(got[k * n:(k + 1) * n], f),
                          "nll": [float(x) for x in nll[k * n:(k + 1) * n]]}
    rows = {name: rows[name] for name, _, _ in specs}
    end_ctx = [np.concatenate([p, t]).astype(np.int32) for p, t in zip(think, own)]
    no_delim = answer_nll(params, config, end_ctx, template, answers)
    return {"rows": rows, "budgets": sorted({int(b) for b in budgets if b > 0}), "n": n,
            "end_nll_no_delimiter": [float(x) for x in no_delim]}


def _single_id(fmt: Any, text: str) -> int:
    ids = fmt.tok.encode(text)
    return int(ids[0]) if len(ids) == 1 else -1  # -1: never generated, the answer runs to its token limit


def mode_table(raw: dict, *, baseline: str = "no_think") -> list[dict]:
    """One row per `mode_efficiency` row: {"row", "mean_tokens", "accuracy" (Wilson `Interval`
    dict), "answer_nll", "minus_baseline" (the paired accuracy difference row - `baseline`, t
    interval over the shared questions), "n"}."""
    from metareason.stats import paired_difference, rate_interval

    base = raw["rows"][baseline]
    out = []
    for name, r in raw["rows"].items():
        correct = np.asarray(r["correct"], np.float64)
        out.append({"row": name, "mean_tokens": float(np.mean(r["tokens"])),
                    "accuracy": rate_interval(int(correct.sum()), len(correct)).as_dict(),
                    "answer_nll": float(np.mean(r["nll"])),
                    "minus_baseline": (paired_difference(correct, base["correct"]).as_dict()
                                       if name != baseline and len(correct) > 1 else None),
                    "n": len(correct)})
    return out
