"""From text to probe inputs: cut selection and batching. Examples come from a `Format`
(`metareason.format`: `LabFormat` for the lab vocabulary, `HFFormat` for a Hugging Face
tokenizer), whose `probe_example` writes the prompt, trajectory, answer template and answer.

An `Example` is one question with one trajectory, tokenized: `prompt` (everything before the
trajectory, e.g. `<bos> question <think>`), `trajectory`, and the `probe` (answer template +
answer) with its `targets` (the answer tokens). A trajectory prefix of k tokens is the cut
`len(prompt) + k` in `ProbeBatch` coordinates; k runs from 0 (no trajectory) to len(trajectory).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from metareason.format import ANSWER_TEMPLATE, Example, Format, HFFormat, LabFormat
from metareason.probe.loss import ProbeBatch, ProbeError
from metareason.sample.batched import round_up

__all__ = ["Example", "CUT_RULES", "PAPER_TEMPLATE", "trajectory_cuts", "make_batch", "probe_examples",
           "examples_from_records", "example_length", "fits"]

#: The paper's probe template (Algorithm 3): `metareason.format.ANSWER_TEMPLATE`.
PAPER_TEMPLATE = ANSWER_TEMPLATE

#: Ways to choose cuts (trajectory prefix lengths).
CUT_RULES = ("every", "step", "sentence", "given")


class LabCodec(LabFormat):
    """Old name of `metareason.format.LabFormat`, whose `probe_example` is this `example`."""

    example = LabFormat.probe_example


class HFCodec(HFFormat):
    """Old name of `metareason.format.HFFormat`, whose `probe_example` is this `example`."""

    example = HFFormat.probe_example


def trajectory_cuts(example: Example, rule: str = "every", *, every: int = 1, fmt: Format | None = None,
                    positions: Sequence[int] | None = None) -> np.ndarray:
    """Trajectory prefix lengths k (sorted, unique, in [0, len(trajectory)]) to probe.

    rule "every": 0, every, 2 * every, ... and always the full trajectory; "step" / "sentence":
    0, after each step / sentence separator of `fmt` (its `step_ids` / `sentence_ids`), and the full
    trajectory; "given": `positions` as they are (checked)."""
    T = len(example.trajectory)
    if rule == "every":
        if every < 1:
            raise ProbeError(f"every must be >= 1, got {every}")
        ks = list(range(0, T + 1, every)) + [T]
    elif rule in ("step", "sentence"):
        if fmt is None:
            raise ProbeError(f"cut rule {rule!r} needs fmt= (the Format whose separator tokens end a {rule})")
        ids = fmt.step_ids if rule == "step" else fmt.sentence_ids
        ks = [0, T] + [i + 1 for i, t in enumerate(example.trajectory) if int(t) in ids]
    elif rule == "given":
        if positions is None:
            raise ProbeError("cut rule 'given' needs positions")
        ks = [int(k) for k in positions]
        bad = [k for k in ks if not 0 <= k <= T]
        if bad:
            raise ProbeError(f"cut positions {bad} are out of range [0, {T}] (trajectory length)")
    else:
        raise ProbeError(f"unknown cut rule {rule!r} (known: {', '.join(CUT_RULES)})")
    return np.asarray(sorted(set(ks)), np.int32)


def make_batch(examples: Sequence[Example], cuts: Sequence[np.ndarray], *, multiple: int = 32) -> ProbeBatch:
    """Pads examples (and their trajectory cuts k) into a `ProbeBatch`; lengths are rounded up to
    `multiple` so similar batches reuse one compilation."""
    if len(examples) != len(cuts) or not examples:
        raise ProbeError(f"need one cut array per example, got {len(examples)} examples and {len(cuts)}")
    lens = [len(e.prompt) + len(e.trajectory) for e in examples]
    N = round_up(max(lens), multiple)
    A = round_up(max(len(e.probe) for e in examples), 8)
    M = round_up(max(len(c) for c in cuts), 8)
    B = len(examples)
    context = np.zeros((B, N), np.int32)
    cut = np.full((B, M), -1, np.int32)
    probe = np.zeros((B, A), np.int32)
    targets = np.zeros((B, A), bool)
    for i, (e, k) in enumerate(zip(examples, cuts)):
        context[i, :lens[i]] = np.concatenate([e.prompt, e.trajectory])
        cut[i, :len(k)] = len(e.prompt) + np.asarray(k)
        probe[i, :len(e.probe)] = e.probe
        targets[i, :len(e.targets)] = e.targets
    return ProbeBatch(context, np.asarray(lens, np.int32), cut, probe, targets)


def probe_examples(params: Any, config, examples: Sequence[Example], cuts: Sequence[np.ndarray], *,
                   batch_size: int = 16, method: str = "cache", cut_chunk: int = 32,
                   progress: bool = False) -> list[dict]:
    """Runs the probe over many examples (sorted by length into batches) and returns one curve
    per example: {"k": trajectory prefix lengths, "x": k / len(trajectory), "loss": mean answer
    NLL (L-hat), "total": summed NLL, "types": trajectory token types, **meta}."""
    from metareason.probe.loss import answer_loss_along_trajectory

    order = sorted(range(len(examples)), key=lambda i: len(examples[i].trajectory))
    out: list[dict | None] = [None] * len(examples)
    starts = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc="probe", unit="batch")
    for s in starts:
        idx = order[s:s + batch_size]
        batch = make_batch([examples[i] for i in idx], [cuts[i] for i in idx])
        res = answer_loss_along_trajectory(params, batch, config=config, method=method, cut_chunk=cut_chunk)
        mean, total = np.asarray(res.mean), np.asarray(res.total)
        for row, i in enumerate(idx):
            e, k = examples[i], np.asarray(cuts[i])
            T = max(len(e.trajectory), 1)
            out[i] = dict(e.meta, k=k.tolist(), x=(k / T).tolist(), loss=mean[row, :len(k)].tolist(),
                          total=total[row, :len(k)].tolist(), types=list(e.types),
                          trajectory_length=len(e.trajectory))
    return out  # type: ignore[return-value]


def examples_from_records(fmt: Format, records: Iterable[dict], *, delimiter: bool = False) -> list[Example]:
    """One `Example` per (record, generation), `fmt.probe_example`: records in the data schema
    (question, answer, trajectory or generations, optional family / style / correct / mode: a lab
    record's mode marker goes into the prompt). Each
    example's meta carries `generation`, the index of its text in the record's generations (a
    record holding one generation taken out of a larger record, as `hf_groups` makes them, keeps
    that record's index in its "generation" field)."""
    out = []
    for r in records:
        gens = r.get("generations") or [r["trajectory"]]
        for j, text in enumerate(gens):
            meta = {key: r[key] for key in ("id", "family", "style", "difficulty", "correct") if key in r}
            meta["generation"] = int(r["generation"]) if "generation" in r and len(gens) == 1 else j
            mode = {"mode": r["mode"]} if r.get("mode") else {}  # a two-mode lab model's marker
            out.append(fmt.probe_example(r["question"], text, r["answer"], delimiter=delimiter, meta=meta, **mode))
    return out



def example_length(example: Example) -> int:
    """Tokens the probe needs in context at the full trajectory: prompt + trajectory + probe."""
    return len(example.prompt) + len(example.trajectory) + len(example.probe)


def fits(examples: Sequence[Example], max_tokens: int) -> np.ndarray:
    """bool[n]: which examples fit in `max_tokens` (`example_length` <= max_tokens)."""
    return np.asarray([example_length(e) <= max_tokens for e in examples], bool)
