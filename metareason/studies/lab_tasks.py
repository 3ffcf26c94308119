"""Lab questions as fixed-shape meta-learning tasks, and their losses (the data side of
`metareason.studies.lab_meta`).

Each question is a task. With q the question, t its reference trajectory and a its answer:

    support  <bos> q <think> t                                         scored on t   (inner loop)
    query    <bos> q <think> </think> **Final Answer** \\boxed{ a } <eos>  scored on a   (outer loss)
    full     <bos> q <think> t </think> **Final Answer** \\boxed{ a } <eos>  scored on a   (answer loss in context)
    sft      the full sequence with `encode_example`'s loss mask (everything after <think>)

Every task is padded to fixed lengths (`build_tasks`), so a training step or an evaluation chunk
compiles once. Axes: N questions, T questions per step, Ls / Lq / Lf the padded support, query and
full lengths. Right padding is never read (attention is causal) and carries weight 0.
"""

from __future__ import annotations

from typing import Any, Iterable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metareason.model import ModelConfig, apply
from metareason.tasks.lab import answer_suffix_tokens, encode_example, prompt_tokens
from metareason.tokenize.lab import ANSWER_TEMPLATE, LAB_VOCAB, LabVocab

__all__ = ["LabMetaError", "LabTasks", "encode_task", "build_tasks", "select", "masked_nll", "support_loss",
           "query_loss"]


class LabMetaError(ValueError):
    """Bad input to the lab meta-learning code (one line, names what is wrong)."""


class LabTasks(NamedTuple):
    """N questions as fixed-shape tasks (a pytree; index every leaf with `select`).

    support: {"tokens": int32[N, Ls], "weights": float32[N, Ls]}: `<bos> q <think> t`, weight 1 on t.
    query:   {"tokens": int32[N, Lq], "weights": float32[N, Lq]}: `<bos> q <think> </think> template a } <eos>`,
             weight 1 on the answer tokens a.
    full:    {"tokens": int32[N, Lf], "weights": float32[N, Lf]}: `<bos> q <think> t </think> template a } <eos>`,
             weight 1 on a.
    sft:     {"tokens", "segment_ids", "positions", "loss_mask": int32[N, Lf]}: the SFT example
             (`encode_example`; segment 1 on real tokens, 0 on padding), the batch `sft_loss` takes.

    A weight at position j scores token j (predicted from the logits at j - 1)."""

    support: dict
    query: dict
    full: dict
    sft: dict

    @property
    def size(self) -> int:
        return int(self.support["tokens"].shape[0])

    @property
    def lengths(self) -> tuple[int, int, int]:
        """(Ls, Lq, Lf)."""
        return (int(self.support["tokens"].shape[-1]), int(self.query["tokens"].shape[-1]),
                int(self.full["tokens"].shape[-1]))


def encode_task(question: str, trajectory: str, answer: str, vocab: LabVocab = LAB_VOCAB) -> dict[str, np.ndarray]:
    """One question's unpadded sequences: {"support", "support_weights", "query", "query_weights",
    "full", "full_weights", "loss_mask"}, 1-D int32 / float32 arrays (see `LabTasks`)."""
    prompt = prompt_tokens(question, vocab)
    traj = vocab.encode(trajectory)
    ans = vocab.encode(answer)
    if not traj:
        raise LabMetaError(f"question {question!r} has an empty trajectory (the support set needs one token)")
    if not ans:
        raise LabMetaError(f"question {question!r} has an empty answer (the query set needs one token)")
    suffix = answer_suffix_tokens(answer, vocab)
    head = 1 + len(ANSWER_TEMPLATE)  # </think> **Final Answer** \boxed{
    assert suffix[head:head + len(ans)] == ans, "answer_suffix_tokens layout changed"

    def scored(n, start, count):
        w = np.zeros(n, np.float32)
        w[start:start + count] = 1.0
        return w

    support = np.asarray(prompt + traj, np.int32)
    query = np.asarray(prompt + suffix, np.int32)
    sft = encode_example(question, trajectory, answer, vocab)
    full = sft["tokens"]
    assert full.tolist() == prompt + traj + suffix, "encode_example layout changed"
    return {"support": support, "support_weights": scored(len(support), len(prompt), len(traj)),
            "query": query, "query_weights": scored(len(query), len(prompt) + head, len(ans)),
            "full": full, "full_weights": scored(len(full), len(prompt) + len(traj) + head, len(ans)),
            "loss_mask": sft["loss_mask"]}


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def build_tasks(records: Iterable[dict], *, lengths: tuple[int, int, int] | None = None, multiple: int = 8,
                vocab: LabVocab = LAB_VOCAB) -> LabTasks:
    """Lab records (question, trajectory, answer; `metareason.tasks.lab.lab_records`) -> `LabTasks`.

    lengths: (Ls, Lq, Lf) to pad to (e.g. a training set's, so that another split shares its
    compilation); default: each split's longest sequence rounded up to `multiple`."""
    records = list(records)
    if not records:
        raise LabMetaError("build_tasks needs at least one record")
    if multiple < 1:
        raise LabMetaError(f"multiple must be >= 1, got {multiple}")
    enc = []
    for i, r in enumerate(records):
        missing = [k for k in ("question", "trajectory", "answer") if k not in r]
        if missing:
            raise LabMetaError(f"record {i} lacks {', '.join(missing)}")
        enc.append(encode_task(r["question"], r["trajectory"], r["answer"], vocab))
    longest = tuple(max(len(e[k]) for e in enc) for k in ("support", "query", "full"))
    if lengths is None:
        lengths = tuple(_round_up(n, multiple) for n in longest)
    elif len(lengths) != 3 or any(int(L) < n for L, n in zip(lengths, longest)):
        raise LabMetaError(f"lengths (Ls, Lq, Lf) = {tuple(lengths)} are shorter than the longest "
                           f"sequences {longest}")
    Ls, Lq, Lf = (int(L) for L in lengths)
    N = len(enc)

    def pad(key, L, dtype):
        out = np.zeros((N, L), dtype)
        if dtype == np.int32:
            out[:] = vocab.pad_id
        for i, e in enumerate(enc):
            out[i, :len(e[key])] = e[key]
        return out

    real = np.zeros((N, Lf), np.int32)
    for i, e in enumerate(enc):
        real[i, :len(e["full"])] = 1
    full_tokens = pad("full", Lf, np.int32)
    return LabTasks(
        support={"tokens": pad("support", Ls, np.int32), "weights": pad("support_weights", Ls, np.float32)},
        query={"tokens": pad("query", Lq, np.int32), "weights": pad("query_weights", Lq, np.float32)},
        full={"tokens": full_tokens, "weights": pad("full_weights", Lf, np.float32)},
        sft={"tokens": full_tokens, "segment_ids": real,
             "positions": np.broadcast_to(np.arange(Lf, dtype=np.int32), (N, Lf)).copy(),
             "loss_mask": pad("loss_mask", Lf, np.int32)})


def select(tasks: LabTasks, idx) -> LabTasks:
    """The tasks at `idx` (int[T] or a slice), every leaf indexed on its leading axis."""
    return jax.tree.map(lambda x: x[idx], tasks)


def _nll_and_exact(params: Any, batch: dict, config: ModelConfig) -> tuple[jax.Array, jax.Array]:
    """batch: {"tokens": int32[L], "weights": float32[L]} (one task). (mean NLL over the weighted
    tokens, whether every weighted token is the argmax of its logits)."""
    tokens, w = batch["tokens"], batch["weights"][1:]
    logits = apply(params, tokens[None], config=config).logits[0, :-1]
    lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(lp, tokens[1:, None], axis=-1)[:, 0]
    loss = jnp.sum(nll * w) / jnp.maximum(jnp.sum(w), 1.0)
    exact = jnp.all((jnp.argmax(logits, axis=-1) == tokens[1:]) | (w == 0))
    return loss, exact


def masked_nll(params: Any, batch: dict, *, config: ModelConfig) -> jax.Array:
    """Mean NLL of the weighted tokens of one task's sequence (a float32 scalar).

    batch: {"tokens": int32[L], "weights": float32[L]}; weight j scores token j given tokens < j.
    vmap it over tasks (leading axis) for many."""
    return _nll_and_exact(params, batch, config)[0]


def support_loss(params: Any, support: dict, *, config: ModelConfig) -> jax.Array:
    """The inner loss: NLL of the trajectory tokens given the question (`LabTasks.support`, one task)."""
    return masked_nll(params, support, config=config)


def query_loss(params: Any, query: dict, *, config: ModelConfig) -> jax.Array:
    """The outer loss: NLL of the answer tokens given the question followed directly by the
    answer template, no trajectory in context (`LabTasks.query`, one task)."""
    return masked_nll(params, query, config=config)
