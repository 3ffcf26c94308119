"""Greedy evaluation on lab questions: accuracy per family, answer format rate, lengths."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

import jax
import numpy as np

from metareason.model import ModelConfig
from metareason.sample import SamplingConfig, generate
from metareason.tasks.lab import parse_answer, prompt_tokens
from metareason.tokenize.lab import LAB_VOCAB

__all__ = ["lab_accuracy"]


def _bucket(n: int, multiple: int = 32) -> int:
    return -(-n // multiple) * multiple


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
    P = _bucket(max(len(p) for p in prompts))
    if P + max_new_tokens > config.max_position_embeddings:
        max_new_tokens = config.max_position_embeddings - P
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens, stop_tokens=(LAB_VOCAB.eos_id,),
                              pad_id=LAB_VOCAB.pad_id)
    stats: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    samples = []
    for start in range(0, len(records), batch_size):
        chunk = prompts[start:start + batch_size]
        arr = np.full((batch_size, P), LAB_VOCAB.pad_id, np.int32)
        lengths = np.ones(batch_size, np.int32)
        for i, p in enumerate(chunk):
            arr[i, :len(p)] = p
            lengths[i] = len(p)
        arr[len(chunk):, 0] = LAB_VOCAB.bos_id  # filler rows
        out = jax.device_get(generate(params, arr, lengths, config=config, sampling=sampling, key=jax.random.key(0)))
        for i, record in enumerate(records[start:start + batch_size]):
            gen = out.tokens[i, :out.lengths[i]]
            answer, well_formed = parse_answer(gen)
            s = stats[record["family"]]
            s["n"] += 1
            s["correct"] += answer == record["answer"]
            s["well_formed"] += well_formed
            s["length"] += int(out.lengths[i])
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
