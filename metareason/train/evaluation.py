"""Greedy evaluation on lab questions: accuracy per family, answer format rate, lengths."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Sequence

from metareason.format import Format, LabFormat
from metareason.model import ModelConfig
from metareason.sample import SamplingConfig, generate_all

__all__ = ["lab_accuracy", "first_per_family", "flat_eval", "final_evaluation"]


def lab_accuracy(params: Any, config: ModelConfig, records: Iterable[dict], *, batch_size: int = 64,
                 max_new_tokens: int = 384, keep_samples: int = 3, fmt: Format | None = None) -> dict:
    """Greedy-decodes every record's question and judges the output with `fmt.verdict` (default
    `LabFormat()`: the boxed answer equals the record's).

    Returns {"accuracy", "format_rate", "mean_length", "n", "per_family": {family: {...}},
    "samples": [a few decoded outputs]}. Batches are padded to fixed shapes (prompt length
    rounded up to 32, a full batch) so one compilation serves the whole evaluation."""
    records = list(records)
    if not records:
        raise ValueError("lab_accuracy needs at least one record")
    fmt = fmt or LabFormat()
    prompts = [fmt.prompt(r) for r in records]
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens, stop_tokens=fmt.stop_tokens,
                              pad_id=fmt.pad_id)
    outputs = generate_all(params, config, prompts, sampling, batch_size=batch_size)
    stats: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    samples = []
    for record, gen in zip(records, outputs):
        v = fmt.verdict(gen, record)
        s = stats[record["family"]]
        s["n"] += 1
        s["correct"] += v.correct
        s["well_formed"] += v.well_formed
        s["length"] += len(gen)
        if len(samples) < keep_samples:
            samples.append({"question": record["question"], "answer": record["answer"],
                            "output": fmt.decode(gen), "predicted": v.answer})
    per_family = {f: {"accuracy": s["correct"] / s["n"], "format_rate": s["well_formed"] / s["n"],
                      "mean_length": s["length"] / s["n"], "n": int(s["n"])} for f, s in sorted(stats.items())}
    n = sum(s["n"] for s in stats.values())
    return {"accuracy": sum(s["correct"] for s in stats.values()) / n,
            "format_rate": sum(s["well_formed"] for s in stats.values()) / n,
            "mean_length": sum(s["length"] for s in stats.values()) / n, "n": int(n),
            "per_family": per_family, "samples": samples}


def first_per_family(records: Sequence[dict], per_family_limit: int) -> list[dict]:
    """The first `per_family_limit` records of each family (evaluation subsets)."""
    counts: dict[str, int] = {}
    out = []
    for r in records:
        if counts.get(r["family"], 0) < per_family_limit:
            counts[r["family"]] = counts.get(r["family"], 0) + 1
            out.append(r)
    return out


def flat_eval(res: dict) -> dict[str, float]:
    """A `lab_accuracy` result as one flat metrics row (accuracy, format rate, length, per family)."""
    row = {"accuracy": res["accuracy"], "format_rate": res["format_rate"], "mean_length": res["mean_length"]}
    for fam, r in res["per_family"].items():
        row[f"accuracy/{fam}"] = r["accuracy"]
    return row


def final_evaluation(params: Any, config: ModelConfig, records: Any, lab, per_family: int, metrics,
                     step: int) -> dict:
    """Greedy accuracy on validation, test (and heldout, if the lab holds families out), each
    limited to `per_family` questions per family; rows written to `metrics`; the test line printed.
    `records`: split -> records (a mapping, or a function of the split name)."""
    get = records if callable(records) else records.__getitem__
    out = {}
    for split in ("validation", "test") + (("heldout",) if lab.heldout_families else ()):
        res = lab_accuracy(params, config, first_per_family(get(split), per_family))
        out[split] = res
        metrics.write(step, split, flat_eval(res))
    per_fam = ", ".join(f"{f} {r['accuracy']:.2f}" for f, r in out["test"]["per_family"].items())
    print(f"test greedy accuracy {out['test']['accuracy']:.3f} ({per_fam})")
    return out
