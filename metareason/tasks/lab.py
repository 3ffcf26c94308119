"""The synthetic reasoning lab: questions, trajectories and their token layout.

Sequence layout (lab vocabulary, `metareason.tokenize.lab`):

    <bos> question <think> trajectory </think> **Final Answer** \\boxed{ answer } <eos>
    |------ prompt ------|------------------ trained on (loss_mask = 1) ---------------|

`lab_records(config, split)` yields records in the schema of `metareason.data` (id, source,
family, question, answer, trajectory, style, generations, difficulty, mode); splits "train",
"validation" and "test" draw from the training families with disjoint questions, "heldout"
from the held-out families (the cross-domain test, E9).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Iterator, Sequence

import numpy as np

from metareason.errors import MAX_SEED, check_int, flag_name
from metareason.tasks.families import FAMILIES, get_family
from metareason.tasks.styles import (SLIP_RATE, CHECK_RATE, STYLES, check_rates, distinct_capacity, render,
                                      render_twins)
from metareason.tokenize.lab import ANSWER_CLOSE, ANSWER_TEMPLATE, END_THINK, LAB_VOCAB, MODES, LabVocab

__all__ = ["LabConfig", "SPLITS", "lab_records", "encode_example", "prompt_tokens", "answer_suffix_tokens",
           "parse_answer"]

SPLITS = ("train", "validation", "test", "heldout")


@dataclasses.dataclass(frozen=True)
class LabConfig:
    """What the lab generates. Sizes are questions per family."""

    families: tuple[str, ...] = ("arith", "addition", "linear", "pointer")
    heldout_families: tuple[str, ...] = ()
    style: str = "long"
    difficulty: tuple[int, ...] = (1, 2)
    """Difficulties drawn uniformly per question."""
    train_size: int = 2000
    eval_size: int = 100
    """Questions per family in validation, test and heldout."""
    trajectories_per_question: int = 1
    """Distinct trajectories of `style` per question (in `generations`; E10 uses up to 32): drawn
    until k pairwise distinct texts are found; a ValueError names the question when k exceeds
    `styles.distinct_capacity` or draws stop finding new texts. With a `mix`, k applies to the
    train split (the other splits carry one trajectory of `style`)."""
    confirm_rate: float = 0.0
    """Share of slippable steps of long trajectories with an unconfirmed reflection (`styles`)."""
    silent_rate: float = 0.0
    """Share of planted slips corrected without a reflection word (`styles`)."""
    seed: int = 0
    mode: str = ""
    """The mode marker of every prompt: "" none (the single-mode lab), "think" ("/think"), "no_think"."""
    mix: tuple[tuple[str, str, float], ...] = ()
    """(style, mode, fraction) entries: that fraction of each family's TRAIN questions (exactly
    round(fraction * train_size), drawn without replacement) use that style and mode; the rest use
    (style, mode). E.g. (("none", "no_think", 0.2),) trains a two-mode model as Qwen3's."""

    def __post_init__(self):
        for f in (*self.families, *self.heldout_families):
            get_family(f)
        if set(self.families) & set(self.heldout_families):
            raise ValueError("a family cannot be both trained on and held out")
        if self.style not in STYLES:
            raise ValueError(f"unknown trajectory style {self.style!r} (known: {', '.join(STYLES)})")
        if not self.difficulty or min(self.difficulty) < 1:
            raise ValueError(f"difficulties must be >= 1, got {self.difficulty}")
        if self.trajectories_per_question < 1:
            raise ValueError("trajectories_per_question must be >= 1")
        check_rates(SLIP_RATE, CHECK_RATE, self.confirm_rate, self.silent_rate)
        _check_modes(self)

    def validate(self, prefix: str = "--lab.") -> None:
        """`ConfigError` naming the flag of the first size or seed out of range."""
        check_int(flag_name(prefix, "train_size"), self.train_size, 1)
        check_int(flag_name(prefix, "eval_size"), self.eval_size, 1)
        check_int(flag_name(prefix, "seed"), self.seed, 0, MAX_SEED)

    def fingerprint(self) -> str:
        """A short stable hash of the config (names on-disk datasets)."""
        # the fields added by issue 18 enter only when set, so the configs of before keep their fingerprints
        values = tuple(getattr(self, f.name) for f in dataclasses.fields(self)
                       if not (f.name in _NEW_FIELDS and getattr(self, f.name) == f.default))
        return hashlib.sha256(repr(values).encode()).hexdigest()[:10]


_NEW_FIELDS = ("confirm_rate", "silent_rate", "mode", "mix")


def _check_modes(config: LabConfig) -> None:
    """ValueError (one line) on an unknown mode, a malformed mix entry or mix fractions over 1."""
    if isinstance(config.mix, (list, tuple)) and all(isinstance(e, (list, tuple)) for e in config.mix):
        object.__setattr__(config, "mix", tuple(tuple(e) for e in config.mix))  # from JSON: lists
    if not isinstance(config.mix, tuple):
        raise ValueError(f"lab mix must be a tuple of (style, mode, fraction) entries, got {config.mix!r}")
    if config.mode not in MODES:
        raise ValueError(f"unknown lab mode {config.mode!r} (known: {', '.join(repr(m) for m in MODES)})")
    total = 0.0
    for entry in config.mix:
        if not (isinstance(entry, tuple) and len(entry) == 3):
            raise ValueError(f"lab mix entries are (style, mode, fraction), got {entry!r}")
        style, mode, frac = entry
        if style not in STYLES:
            raise ValueError(f"unknown trajectory style {style!r} in lab mix (known: {', '.join(STYLES)})")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} in lab mix (known: {', '.join(repr(m) for m in MODES)})")
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0.0 < frac <= 1.0:
            raise ValueError(f"lab mix fraction must be in (0, 1], got {frac!r} for ({style!r}, {mode!r})")
        total += frac
    if total > 1.0 + 1e-9:
        raise ValueError(f"lab mix fractions sum to {total:g} > 1")


def _mix_assignment(config: LabConfig, family_index: int) -> np.ndarray:
    """int[train_size]: for each train question (in draw order) the index of its mix entry, -1 for
    the config's own (style, mode). Exactly round(fraction * train_size) questions per entry."""
    n = config.train_size
    out = np.full(n, -1, np.int64)
    order = np.random.default_rng([config.seed, family_index, 7919]).permutation(n)
    start = 0
    for k, (_, _, frac) in enumerate(config.mix):
        count = min(int(round(frac * n)), n - start)
        out[order[start:start + count]] = k
        start += count
    return out


def _split_sizes(config: LabConfig, split: str) -> tuple[tuple[str, ...], int]:
    """(families, questions per family) of `split`."""
    if split == "train":
        return config.families, config.train_size
    if split in ("validation", "test"):
        return config.families, config.eval_size
    if split == "heldout":
        return config.heldout_families, config.eval_size
    raise ValueError(f"unknown lab split {split!r} (known: {', '.join(SPLITS)})")


def lab_records(config: LabConfig, split: str, *, also_styles: Sequence[str] = (), twins: bool = False
                ) -> Iterator[dict]:
    """Records of `split`, deterministic in (config, split). Questions never repeat within or
    across train / validation / test (earlier splits claim a question first).

    also_styles: more trajectory styles of the same questions, in record["also"][style] (drawn
    from a separate per-question stream, so the records themselves do not change).
    twins: each record also gets record["twin"] = {"correct", "incorrect": the texts of a long
    trajectory and its incorrect-long twin, identical up to the slip (`styles.render_twins`),
    "wrong_answer": the answer the incorrect twin reaches, "slip": the token index of the slipped
    value in both}, drawn from another per-question stream (the records do not change)."""
    for st in also_styles:
        if st not in STYLES:
            raise ValueError(f"unknown trajectory style {st!r} (known: {', '.join(STYLES)})")
    families, _ = _split_sizes(config, split)
    order = ["train", "validation", "test"]
    # replay the earlier splits of each family so that their questions are excluded
    replay = order[:order.index(split) + 1] if split in order else ["heldout"]
    for fi, name in enumerate(families):
        family = FAMILIES[name]
        mixed = _mix_assignment(config, fi) if split == "train" and config.mix else None
        seen: set[str] = set()
        for s in replay:
            n = config.train_size if s == "train" else config.eval_size
            rng = np.random.default_rng([config.seed, fi, SPLITS.index(s)])
            made = 0
            attempts = 0
            while made < n:
                attempts += 1
                if attempts > 50 * n + 1000:
                    raise RuntimeError(f"lab: cannot draw {n} distinct {name} questions at difficulty "
                                       f"{config.difficulty}; lower the size or raise the difficulty")
                problem = family.sample(rng, int(rng.choice(config.difficulty)))
                if problem.question in seen:
                    continue
                seen.add(problem.question)
                made += 1
                if s != split:
                    continue
                entry = mixed[made - 1] if mixed is not None else -1
                if entry < 0 or config.style not in _NO_DRAWS:  # (the question stream as without the mix)
                    # a mixed config's k trajectories are the training split's; its other splits
                    # (questions to evaluate on) carry one of config.style
                    k = 1 if config.mix and split != "train" else None
                    trajectories = _distinct(config, family, problem, rng, k=k)
                extra_rng = np.random.default_rng([config.seed, fi, SPLITS.index(s), made, 1])
                also = {st: render(family, problem, st, extra_rng, **_rates(config)).text for st in also_styles}
                style, mode = config.style, config.mode
                if entry >= 0:  # this question's mix entry: its own stream
                    style, mode, _ = config.mix[entry]
                    mix_rng = np.random.default_rng([config.seed, fi, SPLITS.index(s), made, 2])
                    trajectories = _distinct(config, family, problem, mix_rng, style)
                yield {
                    "id": f"lab-{name}-{split}-{made - 1}",
                    "source": "lab",
                    "family": name,
                    "question": problem.question,
                    "answer": problem.answer,
                    "trajectory": trajectories[0].text,
                    "style": style,
                    "generations": [t.text for t in trajectories],
                    "difficulty": problem.difficulty,
                    "mode": mode,
                    **({"also": also} if also_styles else {}),
                    **({"twin": _twin(config, family, problem, [config.seed, fi, SPLITS.index(s), made, 3])}
                       if twins else {}),
                }


def _twin(config: LabConfig, family, problem, seed: list[int]) -> dict:
    correct, incorrect, slip = render_twins(family, problem, np.random.default_rng(seed), **_rates(config))
    return {"correct": correct.text, "incorrect": incorrect.text, "wrong_answer": incorrect.answer, "slip": int(slip)}


def _rates(config: LabConfig) -> dict[str, float]:
    return {"confirm_rate": config.confirm_rate, "silent_rate": config.silent_rate}


_NO_DRAWS = ("none", "short", "summary")
"""Styles whose rendering draws nothing from the random stream (one text per question)."""


def _distinct(config: LabConfig, family, problem, rng: np.random.Generator, style: str | None = None,
              k: int | None = None) -> list:
    """`config.trajectories_per_question` pairwise distinct trajectories of `problem` in `style`
    (default config.style; drawn in
    order from `rng`; a repeated text is dropped and drawn again, at most 50 k + 1000 draws).
    A one-line ValueError when k exceeds `distinct_capacity` (exact for every style but
    "incorrect-long", whose lower bound is only reported) or the draws run out."""
    k = k or config.trajectories_per_question
    style = style or config.style
    capacity = distinct_capacity(family, problem, style, **_rates(config)) if k > 1 else 1
    if k > capacity and style != "incorrect-long":  # its capacity is only a lower bound
        raise ValueError(f"lab: question {problem.question!r} has at most {capacity} distinct {style} "
                         f"trajectories, trajectories_per_question={k}")
    out, seen, draws = [], set(), 0
    while len(out) < k:
        if draws >= 50 * k + 1000:
            raise ValueError(f"lab: question {problem.question!r}: {draws} draws found {len(out)} distinct "
                             f"{style} trajectories of trajectories_per_question={k} "
                             f"(capacity {capacity}{', a lower bound' if style == 'incorrect-long' else ''})")
        t = render(family, problem, style, rng, **_rates(config))
        draws += 1
        if t.text not in seen:
            seen.add(t.text)
            out.append(t)
    return out


def prompt_tokens(question: str, vocab: LabVocab = LAB_VOCAB, mode: str = "") -> list[int]:
    """`<bos> question <think>` as ids; with a `mode` ("think", "no_think") `<bos> question <MARK>
    <think>`, MARK its marker token ("/think", "/no_think")."""
    mark = vocab.mode_id(mode)
    return [vocab.bos_id, *vocab.encode(question), *([] if mark is None else [mark]), vocab.think_id]


def answer_suffix_tokens(answer: str, vocab: LabVocab = LAB_VOCAB) -> list[int]:
    """`</think> **Final Answer** \\boxed{ answer } <eos>` as ids."""
    return [vocab.end_think_id, *vocab.encode_tokens(ANSWER_TEMPLATE), *vocab.encode(answer),
            vocab.ids[ANSWER_CLOSE], vocab.eos_id]


def encode_example(question: str, trajectory: str, answer: str,
                   vocab: LabVocab = LAB_VOCAB, mode: str = "") -> dict[str, np.ndarray]:
    """tokens int32[n] and loss_mask int32[n] (1 on every token after `<think>`); `mode` puts its
    marker before `<think>` (`prompt_tokens`)."""
    prompt = prompt_tokens(question, vocab, mode)
    rest = [*vocab.encode(trajectory), *answer_suffix_tokens(answer, vocab)]
    tokens = np.asarray(prompt + rest, np.int32)
    mask = np.asarray([0] * len(prompt) + [1] * len(rest), np.int32)
    return {"tokens": tokens, "loss_mask": mask}


def parse_answer(ids: Sequence[int], vocab: LabVocab = LAB_VOCAB) -> tuple[str | None, bool]:
    """From generated ids (after the prompt): (the answer inside \\boxed{ }, well_formed).

    well_formed is True when the output has `</think>`, the template and a closing `}`.
    The answer is None when no boxed answer can be found."""
    toks = [vocab.tokens[int(i)] for i in ids if 0 <= int(i) < vocab.size]
    if vocab.tokens[vocab.eos_id] in toks:
        toks = toks[:toks.index(vocab.tokens[vocab.eos_id])]
    tmpl = list(ANSWER_TEMPLATE)
    for k in range(len(toks) - len(tmpl), -1, -1):
        if toks[k:k + len(tmpl)] == tmpl:
            rest = toks[k + len(tmpl):]
            closed = ANSWER_CLOSE in rest
            body = rest[:rest.index(ANSWER_CLOSE)] if closed else rest
            answer = vocab.decode(vocab.encode_tokens(body)) if body else None
            well_formed = closed and k > 0 and toks[k - 1] == END_THINK
            return answer, well_formed
    return None, False

