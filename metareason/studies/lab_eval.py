"""Evaluation of a lab model on meta-learning tasks, and the table that compares two arms
(`metareason.studies.lab_meta`).

`evaluate_lab` gives per question the answer NLL (mean over the answer tokens) in three conditions:
(i) "in_context": trajectory in context (how SFT is used); (ii) "adapted": after k inner steps on
the reference trajectory, question only in context (how the meta-learned model is used); (iii)
"question_only": no trajectory, no adaptation. `lab_table` turns two arms' results (plus their
greedy accuracy, `metareason.train.evaluation.lab_accuracy`) into means with 95% intervals and
paired differences (`metareason.stats`).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import numpy as np
import optax

from metareason.inner import inner_loop
from metareason.model import ModelConfig
from metareason.stats import bootstrap_interval, paired_difference, rate_interval
from metareason.studies.lab_tasks import LabMetaError, LabTasks, _nll_and_exact, masked_nll, select

__all__ = ["CONDITIONS", "evaluate_lab", "lab_table"]

CONDITIONS = ("in_context", "adapted", "question_only")


@functools.lru_cache(maxsize=16)
def _eval_fn(config: ModelConfig, inner_lr: float, inner_steps: int) -> Callable:
    loss = functools.partial(masked_nll, config=config)

    def one(params, support, query, full):
        ic, ic_exact = _nll_and_exact(params, full, config)
        qo, qo_exact = _nll_and_exact(params, query, config)
        res = inner_loop(loss, params, support, optax.sgd(inner_lr), steps=inner_steps, mode="first_order")
        ad, ad_exact = _nll_and_exact(res.params, query, config)
        return {"in_context": ic, "adapted": ad, "question_only": qo, "exact_in_context": ic_exact,
                "exact_adapted": ad_exact, "exact_question_only": qo_exact,
                "support_before": res.losses[0], "support_after": res.final_loss}

    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0)))


def evaluate_lab(params: Any, tasks: LabTasks, *, config: ModelConfig, inner_lr: float, inner_steps: int,
                 chunk: int = 32, progress: bool = False) -> dict[str, np.ndarray]:
    """Per question (N = tasks.size): the answer NLL in the three `CONDITIONS` (float32[N] each:
    "in_context", "adapted" after `inner_steps` SGD steps of `inner_lr` on the question's own
    support loss, "question_only"), "exact_<condition>" (bool[N]: every answer token is its
    logits' argmax, i.e. greedy decoding from that context writes the answer), and
    "support_before" / "support_after" (the trajectory NLL before / after adapting).

    Tasks go through in chunks of `chunk` (the last one padded by repetition), one compilation."""
    if not isinstance(tasks, LabTasks):
        raise LabMetaError(f"tasks must be LabTasks (build_tasks), got {type(tasks).__name__}")
    if inner_steps < 1 or chunk < 1:
        raise LabMetaError(f"inner_steps and chunk must be >= 1, got {inner_steps} and {chunk}")
    if not (inner_lr >= 0 and math.isfinite(inner_lr)):
        raise LabMetaError(f"inner_lr must be a finite number >= 0, got {inner_lr}")
    from tqdm import tqdm

    fn = _eval_fn(config, float(inner_lr), int(inner_steps))
    N = tasks.size
    parts = []
    for s in tqdm(range(0, N, chunk), desc="evaluate", unit="chunk", disable=not progress):
        idx = np.minimum(np.arange(s, s + chunk), N - 1)
        t = select(tasks, idx)
        out = jax.device_get(fn(params, t.support, t.query, t.full))
        parts.append({k: np.asarray(v)[:min(chunk, N - s)] for k, v in out.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def lab_table(results: dict[str, dict[str, np.ndarray]], accuracy: dict[str, dict] | None = None, *,
              as_used: dict[str, str] | None = None) -> dict:
    """The comparison table: for each arm (keys of `results`, `evaluate_lab` outputs on the same
    questions) and condition, the mean answer NLL with its 95% percentile-bootstrap interval and the
    exact-answer rate (Wilson); for two arms, the paired per-question difference (first arm minus
    second); with `as_used` ({arm: condition}, two arms), the paired difference of each arm in its
    own condition (e.g. {"meta": "adapted", "sft": "in_context"}); the greedy accuracy of each arm
    (`lab_accuracy` results in `accuracy`) with its Wilson interval."""
    arms = list(results)
    if not arms:
        raise LabMetaError("lab_table needs at least one arm")
    n = {a: len(results[a]["in_context"]) for a in arms}
    if len(set(n.values())) != 1:
        raise LabMetaError(f"arms were evaluated on different numbers of questions: {n}")

    def loss(v):
        return bootstrap_interval(v).as_dict()

    def paired(x, y):
        return paired_difference(x, y, method="bootstrap").as_dict()

    def rate(successes, n):
        return rate_interval(int(successes), int(n)).as_dict()

    table: dict[str, Any] = {"interval": "95%: percentile bootstrap over questions (losses), Wilson (rates)",
                             "loss": {}, "exact": {}}
    for a in arms:
        table["loss"][a] = {c: loss(results[a][c]) for c in CONDITIONS}
        table["exact"][a] = {c: rate(np.sum(results[a][f"exact_{c}"]), n[a]) for c in CONDITIONS}
    if len(arms) == 2:
        a, b = arms
        table["paired_difference"] = {"arms": f"{a} - {b}", **{c: paired(results[a][c], results[b][c])
                                                                for c in CONDITIONS}}
    if as_used:
        if len(arms) != 2 or set(as_used) != set(arms) or not set(as_used.values()) <= set(CONDITIONS):
            raise LabMetaError(f"as_used must map both arms {arms} to conditions in {CONDITIONS}, got {as_used}")
        a, b = arms
        table["as_used"] = {"arms": f"{a} ({as_used[a]}) - {b} ({as_used[b]})",
                            **paired(results[a][as_used[a]], results[b][as_used[b]])}
    if accuracy:
        table["greedy_accuracy"] = {a: {**rate(round(r["accuracy"] * r["n"]), r["n"]),
                                        "format_rate": r["format_rate"], "mean_length": r["mean_length"]}
                                    for a, r in accuracy.items()}
    return table
