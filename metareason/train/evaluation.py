"""Greedy evaluation on lab questions: accuracy per family, answer format rate, lengths."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

from metareason.model import ModelConfig
from metareason.sample import SamplingConfig, generate_all
from metareason.tasks.lab import parse_answer, prompt_tokens
from metareason.tokenize.lab import LAB_VOCAB

__all__ = ["lab_accuracy"]


def lab_accuracy(params: Any, config: ModelConfig, records: Iterable[dict], *, batch_size: int = 64,
                 max_new_tokens: int = 384, keep_samples: int = 3) -> dict:
    """Greedy-decodes every record's question and compares the boxed answer with the record's.

    Returns {"accuracy", "format_rate", "mean_length", "n", "per_family": {family: {...}},
    "samples": [a few decoded outputs]}. Batches are padded to fixed shapes (prompt length
    rounded up to 32, a full batch) so one compilation serves the whole evaluation."""
    records = list(records)
    if not records:
        raise ValueError("lab_accuracy needs at least one record")
    prompts = [prompt_tokens(r["question"]) for r in records]
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens, stop_tokens=(LAB_VOCAB.eos_id,),
                              pad_id=LAB_VOCAB.pad_id)
    outputs = generate_all(params, config, prompts, sampling, batch_size=batch_size)
    stats: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    samples = []
    for record, gen in zip(records, outputs):
        answer, well_formed = parse_answer(gen)
        s = stats[record["family"]]
        s["n"] += 1
        s["correct"] += answer == record["answer"]
        s["well_formed"] += well_formed
        s["length"] += len(gen)
        if len(samples) < keep_samples:
            samples.append({"question": record["question"], "answer": record["answer"],
                            "output": LAB_VOCAB.decode(gen), "predicted": answer})
    per_family = {f: {"accuracy": s["correct"] / s["n"], "format_rate": s["well_formed"] / s["n"],
                      "mean_length": s["length"] / s["n"], "n": int(s["n"])} for f, s in sorted(stats.items())}
    n = sum(s["n"] for s in stats.values())
    return {"accuracy": sum(s["correct"] for s in stats.values()) / n,
            "format_rate": sum(s["well_formed"] for s in stats.values()) / n,
            "mean_length": sum(s["length"] for s in stats.values()) / n, "n": int(n),
            "per_family": per_family, "samples": samples}
