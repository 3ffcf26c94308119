"""Explicit meta-learning (MAML, PAPER.md Eq 8) of a lab language model, beside SFT on the same data.

Each question is a task. With q the question, t its reference trajectory and a its answer:

    support  <bos> q <think> t                                         scored on t   (inner loop)
    query    <bos> q <think> </think> **Final Answer** \\boxed{ a } <eos>  scored on a   (outer loss)
    full     <bos> q <think> t </think> **Final Answer** \\boxed{ a } <eos>  scored on a   (answer loss in context)
    sft      the full sequence with `encode_example`'s loss mask (everything after <think>)

The meta arm minimises L_q(theta - eta * grad L_s(theta)) (k SGD steps on the support loss, then the
query loss: the trajectory is absorbed into the weights, never in context), averaged over the
questions of a step; the SFT arm minimises the SFT loss of the full sequences of the very same
questions. One training loop (`_train`) serves both arms: same init, same question order, same
outer optimizer, same number of steps; only the loss differs (`meta_train_lab` / `sft_train_lab`).

Every task is padded to fixed lengths (`build_tasks`), so a training step or an evaluation chunk
compiles once. Axes: N questions, T questions per step, Ls / Lq / Lf the padded support, query and
full lengths. Right padding is never read (attention is causal) and carries weight 0.

Evaluation (`evaluate_lab`) gives per question the answer NLL (mean over the answer tokens) in
three conditions: (i) "in_context": trajectory in context (how SFT is used); (ii) "adapted": after
k inner steps on the reference trajectory, question only in context (how the meta-learned model is
used); (iii) "question_only": no trajectory, no adaptation. `lab_table` turns two arms' results
(plus their greedy accuracy, `metareason.train.evaluation.lab_accuracy`) into means with 95%
intervals and paired differences.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metareason.inner import inner_loop, make_meta_step
from metareason.model import ModelConfig, apply, init
from metareason.tasks.lab import answer_suffix_tokens, encode_example, prompt_tokens
from metareason.tokenize.lab import ANSWER_TEMPLATE, LAB_VOCAB, LabVocab
from metareason.train.loss import sft_loss
from metareason.train.presets import model_preset
from metareason.train.state import OptimizerConfig, make_optimizer
from metareason.train.trajectories import question_schedule

__all__ = ["LabMetaError", "LabTasks", "LabMetaConfig", "LabTrainResult", "ARMS", "CONDITIONS",
           "encode_task", "build_tasks", "select", "masked_nll", "support_loss", "query_loss", "question_schedule",
           "make_lab_step", "meta_train_lab", "sft_train_lab", "evaluate_lab", "mean_ci", "wilson_ci", "lab_table"]

ARMS = ("meta", "sft")
CONDITIONS = ("in_context", "adapted", "question_only")
INNER_MODES = ("second_order", "first_order")


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


@dataclasses.dataclass(frozen=True)
class LabMetaConfig:
    """Training of either arm (both arms share every field; `inner_*` and `mode` are the meta arm's
    inner loop and the evaluation's adaptation)."""

    model: str = "lab-small"
    """Model preset (`metareason.train.presets`)."""
    steps: int = 200
    """Outer steps (the outer learning-rate schedule spans them)."""
    questions_per_step: int = 16
    """Questions (tasks) per outer step."""
    inner_steps: int = 1
    """SGD steps on the support loss per task."""
    inner_lr: float = 0.3
    """Inner SGD learning rate (0: no adaptation)."""
    mode: str = "second_order"
    """"second_order" (differentiate through the inner step) or "first_order" (FOMAML)."""
    optimizer: OptimizerConfig = OptimizerConfig(lr=3e-3, warmup_steps=20)
    """The outer optimizer (AdamW, warm-up + cosine, clipping), identical for both arms."""
    seed: int = 0
    """Model init and question order (identical for both arms)."""
    log_every: int = 10
    eval_every: int = 0
    """Evaluate `eval_tasks` every this many steps (0: never during training)."""
    eval_chunk: int = 32
    """Tasks per compiled evaluation call."""

    def __post_init__(self):
        model_preset(self.model)
        for name in ("steps", "questions_per_step", "inner_steps", "log_every", "eval_chunk"):
            if getattr(self, name) < 1:
                raise LabMetaError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_every < 0:
            raise LabMetaError(f"eval_every must be >= 0, got {self.eval_every}")
        if not (self.inner_lr >= 0 and math.isfinite(self.inner_lr)):
            raise LabMetaError(f"inner_lr must be a finite number >= 0, got {self.inner_lr}")
        if self.mode not in INNER_MODES:
            raise LabMetaError(f"unknown inner mode {self.mode!r} (known: {', '.join(INNER_MODES)})")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


class LabTrainResult(NamedTuple):
    """params: the trained params; history: one dict per logged step ({"step", "loss", "grad_norm",
    "seconds"} plus, for the meta arm, "support_before" / "support_after" means); evals: one dict
    per evaluation ({"step", condition: mean}); seconds: training wall time (evaluations excluded)."""

    params: Any
    history: list
    evals: list
    seconds: float


def make_lab_step(arm: str, cfg: LabMetaConfig, config: ModelConfig,
                  outer: optax.GradientTransformation) -> Callable:
    """`step(params, opt_state, tasks) -> (params, opt_state, metrics)` for `arm`, jitted; tasks:
    `LabTasks` with a leading [T] axis. metrics: "loss", "grad_norm" (and for "meta" the per-task
    "inner_before", "inner_after", "query")."""
    if arm == "meta":
        meta_step = make_meta_step(functools.partial(masked_nll, config=config), optax.sgd(cfg.inner_lr), outer,
                                   steps=cfg.inner_steps, mode=cfg.mode)
        return lambda params, opt_state, tasks: meta_step(params, opt_state, tasks.support, tasks.query)
    if arm == "sft":
        @jax.jit
        def sft_step(params, opt_state, batch):
            (loss, _), grads = jax.value_and_grad(sft_loss, has_aux=True)(params, batch, config=config)
            updates, opt_state = outer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

        return lambda params, opt_state, tasks: sft_step(params, opt_state, tasks.sft)
    raise LabMetaError(f"unknown arm {arm!r} (known: {', '.join(ARMS)})")


def _train(arm: str, cfg: LabMetaConfig, tasks: LabTasks, *, params: Any = None, eval_tasks: LabTasks | None = None,
           progress: bool = True) -> LabTrainResult:
    """The one training loop of both arms (see the module docstring)."""
    from tqdm import tqdm

    if arm not in ARMS:
        raise LabMetaError(f"unknown arm {arm!r} (known: {', '.join(ARMS)})")
    if not isinstance(tasks, LabTasks):
        raise LabMetaError(f"tasks must be LabTasks (build_tasks), got {type(tasks).__name__}")
    if cfg.eval_every and eval_tasks is None:
        raise LabMetaError("eval_every > 0 needs eval_tasks")
    config = model_preset(cfg.model)
    if tasks.lengths[2] > config.max_position_embeddings:
        raise LabMetaError(f"sequences of {tasks.lengths[2]} tokens exceed the model's context "
                           f"({config.max_position_embeddings})")
    try:
        schedule = question_schedule(tasks.size, cfg.questions_per_step, cfg.steps, cfg.seed)
    except ValueError as err:
        raise LabMetaError(str(err)) from None
    outer = make_optimizer(cfg.optimizer, cfg.steps)
    params = init(config, jax.random.key(cfg.seed)) if params is None else params
    opt_state = outer.init(params)
    step_fn = make_lab_step(arm, cfg, config, outer)
    history, evals = [], []

    def evaluate(step):
        res = evaluate_lab(params, eval_tasks, config=config, inner_lr=cfg.inner_lr, inner_steps=cfg.inner_steps,
                           chunk=cfg.eval_chunk)
        evals.append({"step": step, **{c: float(np.mean(res[c])) for c in CONDITIONS}})

    if cfg.eval_every:
        evaluate(0)
    seconds, t0 = 0.0, time.perf_counter()
    bar = tqdm(range(cfg.steps), desc=arm, unit="step", disable=not progress)
    for i in bar:
        params, opt_state, m = step_fn(params, opt_state, select(tasks, schedule[i]))
        done = i + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            m = jax.device_get(m)
            row = {"step": done, "loss": float(m["loss"]), "grad_norm": float(m["grad_norm"])}
            if not (math.isfinite(row["loss"]) and math.isfinite(row["grad_norm"])):
                raise FloatingPointError(f"{arm} training diverged at step {done} (loss {row['loss']}, "
                                         f"grad norm {row['grad_norm']}); lower the learning rates")
            if arm == "meta":
                row["support_before"] = float(np.mean(m["inner_before"]))
                row["support_after"] = float(np.mean(m["inner_after"]))
            seconds += time.perf_counter() - t0
            row["seconds"] = seconds
            history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}")
            t0 = time.perf_counter()
        if cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
            seconds += time.perf_counter() - t0
            evaluate(done)
            t0 = time.perf_counter()
    bar.close()
    seconds += time.perf_counter() - t0
    return LabTrainResult(params, history, evals, seconds)


def meta_train_lab(cfg: LabMetaConfig, tasks: LabTasks, *, params: Any = None, eval_tasks: LabTasks | None = None,
                   progress: bool = True) -> LabTrainResult:
    """MAML on the lab: each outer step takes `cfg.inner_steps` SGD steps (lr `cfg.inner_lr`) on each
    of `cfg.questions_per_step` questions' support loss (vmapped), then descends the mean query loss
    at the adapted weights (`make_meta_step`). params: start here instead of a fresh init."""
    return _train("meta", cfg, tasks, params=params, eval_tasks=eval_tasks, progress=progress)


def sft_train_lab(cfg: LabMetaConfig, tasks: LabTasks, *, params: Any = None, eval_tasks: LabTasks | None = None,
                  progress: bool = True) -> LabTrainResult:
    """SFT on the same questions, trajectories and answers, step for step (same schedule, init and
    outer optimizer): the token-mean `sft_loss` of `tasks.sft`."""
    return _train("sft", cfg, tasks, params=params, eval_tasks=eval_tasks, progress=progress)


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


def mean_ci(x: Sequence[float], level: float = 0.95, *, method: str = "t", resamples: int = 10000,
            seed: int = 0) -> dict[str, float]:
    """{"mean", "lo", "hi", "n"}: an interval for the mean over the values (questions).

    method "t": Student-t (symmetric; can leave the support of a skewed, bounded quantity such as
    a near-zero loss); "bootstrap": percentile bootstrap with `resamples` resamples (seeded), which
    stays inside [min, max]."""
    from scipy import stats

    x = np.asarray(x, np.float64)
    if x.ndim != 1 or x.size == 0:
        raise LabMetaError(f"mean_ci needs a non-empty 1-D array, got shape {x.shape}")
    if method not in ("t", "bootstrap"):
        raise LabMetaError(f"unknown interval method {method!r} (known: t, bootstrap)")
    m = float(x.mean())
    if x.size < 2:
        return {"mean": m, "lo": float("nan"), "hi": float("nan"), "n": 1}
    if method == "bootstrap":
        rng = np.random.default_rng(seed)
        means = np.empty(resamples)
        for s in range(0, resamples, 1000):  # chunks bound the memory to 1000 x n indices
            b = min(1000, resamples - s)
            means[s:s + b] = x[rng.integers(0, x.size, (b, x.size))].mean(axis=1)
        lo, hi = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
        return {"mean": m, "lo": float(min(lo, m)), "hi": float(max(hi, m)), "n": int(x.size)}
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return {"mean": m, "lo": m - half, "hi": m + half, "n": int(x.size)}


def wilson_ci(successes: int, n: int, level: float = 0.95) -> dict[str, float]:
    """{"mean", "lo", "hi", "n"}: a proportion with its Wilson score interval."""
    from scipy import stats

    if n < 1 or not 0 <= successes <= n:
        raise LabMetaError(f"wilson_ci needs 0 <= successes <= n and n >= 1, got {successes} of {n}")
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {"mean": p, "lo": max(0.0, min(centre - half, p)), "hi": min(1.0, max(centre + half, p)), "n": int(n)}


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
    ci = functools.partial(mean_ci, method="bootstrap")
    table: dict[str, Any] = {"interval": "95%: percentile bootstrap over questions (losses), Wilson (rates)",
                             "loss": {}, "exact": {}}
    for a in arms:
        table["loss"][a] = {c: ci(results[a][c]) for c in CONDITIONS}
        table["exact"][a] = {c: wilson_ci(int(np.sum(results[a][f"exact_{c}"])), n[a]) for c in CONDITIONS}
    if len(arms) == 2:
        a, b = arms
        table["paired_difference"] = {"arms": f"{a} - {b}", **{
            c: ci(np.asarray(results[a][c], np.float64) - np.asarray(results[b][c], np.float64))
            for c in CONDITIONS}}
    if as_used:
        if len(arms) != 2 or set(as_used) != set(arms) or not set(as_used.values()) <= set(CONDITIONS):
            raise LabMetaError(f"as_used must map both arms {arms} to conditions in {CONDITIONS}, got {as_used}")
        a, b = arms
        diff = np.asarray(results[a][as_used[a]], np.float64) - np.asarray(results[b][as_used[b]], np.float64)
        table["as_used"] = {"arms": f"{a} ({as_used[a]}) - {b} ({as_used[b]})", **ci(diff)}
    if accuracy:
        table["greedy_accuracy"] = {a: {**wilson_ci(round(r["accuracy"] * r["n"]), r["n"]),
                                        "format_rate": r["format_rate"], "mean_length": r["mean_length"]}
                                    for a, r in accuracy.items()}
    return table
