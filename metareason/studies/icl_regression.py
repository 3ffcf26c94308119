"""In-context learning as gradient descent on linear regression (von Oswald et al. 2023,
"Transformers learn in-context by gradient descent").

A task is a linear map y = w^T x (+ noise), w ~ N(0, I_d). Its N context points and a query are
laid out as tokens e_i = (x_i, y_i) in R^{d+1}, i = 1..N, and e_q = (x_q, 0) (`tokens`). A linear
self-attention layer with residual (`lsa`, no softmax, keys and values from the N context tokens
only) maps every token j (context and query) to

    e_j <- e_j + sum_h P_h W_V,h sum_{i<=N} e_i (W_K,h e_i)^T (W_Q,h e_j)

(the 1/N of the mean lives in P, as in the paper's construction). With

    W_K = W_Q = [[I_d, 0], [0, 0]],  W_V = [[0, 0], [0, -1]],  P = (eta / N) I_{d+1}     (`gd_weights`)

the layer's update of token j is (0, -eta/N sum_i y_i x_i^T x_j) = (0, -dW x_j), dW = -eta grad L(0)
the first gradient-descent step on L(W) = 1/(2N) sum_i (W x_i - y_i)^2 from W = 0. So each context
token's y-slot becomes its residual y_j - dW x_j and the query's y-slot becomes 0 - dW x_q, minus the
prediction. Sign convention used throughout: the layer's prediction is MINUS the query token's
y-slot after the layer (`lsa_predict`), and `gd_prediction` is dW x_q = eta/N sum_i y_i x_i^T x_q.

Losses are 1/2 the mean squared error of the query prediction, 1/2 E (y_hat_q - y_q)^2, for the
trained layer and for GD alike. `compare_with_gd` sets a trained layer beside the best single GD
step (eta minimising GD's own loss; the loss is quadratic in eta, so the line search is exact):
mean squared prediction difference and the cosine of the input sensitivities d y_hat / d x_q (the
paper's Fig. 2).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from metareason.studies.toy_loop import toy_loop

__all__ = ["ICLError", "ICLConfig", "Tasks", "DISTS", "SCHEDULES", "sample_tasks", "tokens", "init_lsa", "lsa",
           "lsa_predict", "gd_weights", "gd_prediction", "gd_loss", "best_eta", "line_search_eta", "lsa_loss", "train",
           "compare_with_gd"]

DISTS = ("uniform", "normal")
SCHEDULES = ("constant", "cosine")


class ICLError(ValueError):
    """Malformed in-context regression inputs (one line, names what is wrong)."""


class Tasks(NamedTuple):
    """A batch of B regression tasks: x float[B, N, d] context inputs, y float[B, N] context targets,
    xq float[B, d] query input, yq float[B] query target, w float[B, d] the task's weights."""

    x: jax.Array
    y: jax.Array
    xq: jax.Array
    yq: jax.Array
    w: jax.Array


@dataclasses.dataclass(frozen=True)
class ICLConfig:
    """The paper's single-layer setting by default: d = 10, N = 10, x ~ U[-1, 1]^d, w ~ N(0, I)."""

    d: int = 10
    n: int = 10
    steps: int = 5000
    batch: int = 2048
    lr: float = 1e-3
    schedule: str = "cosine"
    heads: int = 1
    init_scale: float = 0.1
    dist: str = "uniform"
    noise: float = 0.0
    eval_tasks: int = 10000
    eta_tasks: int = 1_000_000
    eval_every: int = 250
    seed: int = 0


def _check_task(x: Any, y: Any, xq: Any) -> tuple[int, int]:
    """Shapes of one task: x [N, d], y [N], xq [d]; returns (N, d)."""
    xs, ys, qs = jnp.shape(x), jnp.shape(y), jnp.shape(xq)
    if len(xs) != 2:
        raise ICLError(f"x must be [N, d] (one task; vmap for batches), got shape {xs}")
    n, d = xs
    if n < 1 or d < 1:
        raise ICLError(f"x must have N >= 1 points of d >= 1 dims, got shape {xs}")
    if ys != (n,):
        raise ICLError(f"y must be [N] = [{n}] to match x {xs}, got shape {ys}")
    if qs != (d,):
        raise ICLError(f"xq must be [d] = [{d}] to match x {xs}, got shape {qs}")
    return n, d


def sample_tasks(key: jax.Array, batch: int, n: int, d: int, *, dist: str = "uniform", noise: float = 0.0,
                 dtype=jnp.float32) -> Tasks:
    """B = `batch` tasks of N = `n` context points in d dims: w ~ N(0, I_d); x, x_q ~ U[-1, 1]^d
    ("uniform", the paper's) or N(0, I_d) ("normal"); y = w^T x + noise * N(0, 1) (query target too)."""
    if dist not in DISTS:
        raise ICLError(f"unknown input distribution {dist!r} (known: {', '.join(DISTS)})")
    if batch < 1 or n < 1 or d < 1:
        raise ICLError(f"batch, n and d must be >= 1, got batch={batch}, n={n}, d={d}")
    return _sample(key, batch, n, d, dist, float(noise), jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5, 6))
def _sample(key, batch, n, d, dist, noise, dtype):
    kw, kx, kn = jax.random.split(key, 3)
    w = jax.random.normal(kw, (batch, d), dtype)
    if dist == "uniform":
        xa = jax.random.uniform(kx, (batch, n + 1, d), dtype, -1.0, 1.0)
    else:
        xa = jax.random.normal(kx, (batch, n + 1, d), dtype)
    ya = jnp.einsum("bnd,bd->bn", xa, w)
    if noise:
        ya = ya + noise * jax.random.normal(kn, ya.shape, dtype)
    return Tasks(xa[:, :n], ya[:, :n], xa[:, n], ya[:, n], w)


def tokens(x: jax.Array, y: jax.Array, xq: jax.Array) -> jax.Array:
    """float[N + 1, d + 1]: rows (x_i, y_i) for the N context points, then the query row (x_q, 0).

    x float[N, d], y float[N], xq float[d] (one task; vmap for a batch)."""
    _check_task(x, y, xq)
    ctx = jnp.concatenate([x, y[:, None]], axis=1)
    query = jnp.concatenate([xq, jnp.zeros((1,), xq.dtype)])[None]
    return jnp.concatenate([ctx, query], axis=0)


def _check_params(params: dict, dim: int) -> int:
    if not isinstance(params, dict) or set(params) != {"wq", "wk", "wv", "p"}:
        raise ICLError(f"params must be a dict with keys wq, wk, wv, p, got {type(params).__name__} "
                       f"{sorted(params) if isinstance(params, dict) else ''}")
    shapes = {k: jnp.shape(v) for k, v in params.items()}
    h = shapes["wq"][0] if len(shapes["wq"]) == 3 else None
    if h is None or any(s != (h, dim, dim) for s in shapes.values()):
        raise ICLError(f"params must all be [heads, d+1, d+1] = [H, {dim}, {dim}], got {shapes}")
    return h


def init_lsa(key: jax.Array, d: int, heads: int = 1, scale: float = 0.1, dtype=jnp.float32) -> dict:
    """LSA parameters {"wq", "wk", "wv", "p"}, each float[heads, d+1, d+1], i.i.d. N(0, scale^2)."""
    if d < 1 or heads < 1:
        raise ICLError(f"d and heads must be >= 1, got d={d}, heads={heads}")
    return _init(key, d, heads, scale, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(1, 2, 4))
def _init(key, d, heads, scale, dtype):
    w = scale * jax.random.normal(key, (4, heads, d + 1, d + 1), dtype)
    return {name: w[i] for i, name in enumerate(("wq", "wk", "wv", "p"))}


def lsa(params: dict, e: jax.Array) -> jax.Array:
    """One linear self-attention layer with residual; float[N + 1, d + 1] -> float[N + 1, d + 1].

    e: the tokens of one task, the N context rows then the query row (`tokens`). Every row j
    (query included) gets sum_h P_h W_V,h sum_{i<=N} e_i (W_K,h e_i)^T (W_Q,h e_j): keys and
    values come from the N context rows only, no softmax, no 1/N (it lives in P)."""
    if jnp.ndim(e) != 2 or jnp.shape(e)[0] < 2:
        raise ICLError(f"tokens must be [N + 1, d + 1] with N >= 1, got shape {jnp.shape(e)}")
    _check_params(params, jnp.shape(e)[1])
    ctx = e[:-1]
    q = jnp.einsum("hab,jb->hja", params["wq"], e)       # [H, N+1, D]
    k = jnp.einsum("hab,ib->hia", params["wk"], ctx)     # [H, N, D]
    v = jnp.einsum("hab,ib->hia", params["wv"], ctx)     # [H, N, D]
    scores = jnp.einsum("hja,hia->hji", q, k)            # [H, N+1, N]
    mixed = jnp.einsum("hji,hia->hja", scores, v)        # [H, N+1, D]
    return e + jnp.einsum("hab,hjb->ja", params["p"], mixed)


def lsa_predict(params: dict, x: jax.Array, y: jax.Array, xq: jax.Array) -> jax.Array:
    """The layer's prediction for one task, a scalar: minus the query token's y-slot after `lsa`.

    x float[N, d], y float[N], xq float[d]."""
    return -lsa(params, tokens(x, y, xq))[-1, -1]


def gd_weights(d: int, eta: float, n: int, dtype=jnp.float32) -> dict:
    """The LSA parameters (one head, each float[1, d+1, d+1]) whose query update is one GD step
    from W = 0 with learning rate eta on N = n context points: W_K = W_Q = [[I_d, 0], [0, 0]],
    W_V = [[0, 0], [0, -1]], P = (eta / n) I_{d+1}. Then lsa_predict == gd_prediction."""
    if d < 1 or n < 1:
        raise ICLError(f"d and n must be >= 1, got d={d}, n={n}")
    kq = np.zeros((1, d + 1, d + 1))
    kq[0, :d, :d] = np.eye(d)
    wv = np.zeros((1, d + 1, d + 1))
    wv[0, d, d] = -1.0
    p = (float(eta) / n) * np.eye(d + 1)[None]
    return {k: jnp.asarray(v, dtype) for k, v in (("wq", kq), ("wk", kq), ("wv", wv), ("p", p))}


def gd_prediction(x: jax.Array, y: jax.Array, xq: jax.Array, eta: float | jax.Array) -> jax.Array:
    """One GD step from W = 0 on L(W) = 1/(2N) sum_i (W x_i - y_i)^2, then the prediction at x_q:
    W_1 x_q = eta/N sum_i y_i x_i^T x_q, a scalar. x float[N, d], y float[N], xq float[d]."""
    n, _ = _check_task(x, y, xq)
    return (eta / n) * jnp.dot(y @ x, xq)


def _batched_check(tasks: Tasks) -> None:
    if jnp.ndim(tasks.x) != 3:
        raise ICLError(f"tasks.x must be [B, N, d], got shape {jnp.shape(tasks.x)}")
    b = jnp.shape(tasks.x)[0]
    if jnp.shape(tasks.yq) != (b,):
        raise ICLError(f"tasks.yq must be [B] = [{b}], got shape {jnp.shape(tasks.yq)}")
    _check_task(tasks.x[0], tasks.y[0], tasks.xq[0])


def gd_loss(tasks: Tasks, eta: float | jax.Array) -> jax.Array:
    """1/2 mean over tasks of (gd_prediction - y_q)^2 (Tasks with a leading [B] axis)."""
    _batched_check(tasks)
    pred = jax.vmap(gd_prediction, (0, 0, 0, None))(tasks.x, tasks.y, tasks.xq, eta)
    return 0.5 * jnp.mean((pred - tasks.yq) ** 2)


def best_eta(tasks: Tasks) -> jax.Array:
    """The learning rate minimising `gd_loss` on these tasks (exact line search: the prediction is
    eta * g with g the eta = 1 prediction, so the minimiser is sum g y_q / sum g^2)."""
    _batched_check(tasks)
    g = jax.vmap(gd_prediction, (0, 0, 0, None))(tasks.x, tasks.y, tasks.xq, 1.0)
    return jnp.sum(g * tasks.yq) / jnp.sum(g * g)


@jax.jit
def _eta_sums(t: Tasks) -> tuple[jax.Array, jax.Array]:
    g = jax.vmap(gd_prediction, (0, 0, 0, None))(t.x, t.y, t.xq, 1.0)
    return jnp.sum(g * t.yq), jnp.sum(g * g)


def line_search_eta(key: jax.Array, n: int, d: int, *, tasks: int = 1_000_000, chunk: int = 10_000,
                    dist: str = "uniform", noise: float = 0.0) -> float:
    """`best_eta` over `tasks` fresh tasks drawn in chunks (sum g y_q / sum g^2 accumulated, tasks
    rounded up to whole chunks). With d = N = 10 the estimate from 10,000 tasks has a standard
    deviation of about 1.2%, enough to dominate the trained-vs-GD prediction difference; 10^6
    tasks bring it to about 0.12%."""
    if tasks < 1 or chunk < 1:
        raise ICLError(f"tasks and chunk must be >= 1, got tasks={tasks}, chunk={chunk}")
    num = den = 0.0
    for i in range(-(-tasks // chunk)):
        a, b = _eta_sums(sample_tasks(jax.random.fold_in(key, i), chunk, n, d, dist=dist, noise=noise))
        num, den = num + float(a), den + float(b)
    return num / den


def lsa_loss(params: dict, tasks: Tasks) -> jax.Array:
    """1/2 mean over tasks of (lsa_predict - y_q)^2 (Tasks with a leading [B] axis)."""
    _batched_check(tasks)
    pred = jax.vmap(lsa_predict, (None, 0, 0, 0))(params, tasks.x, tasks.y, tasks.xq)
    return 0.5 * jnp.mean((pred - tasks.yq) ** 2)


def _compare(params: dict, tasks: Tasks, eta: jax.Array) -> dict:
    def one(x, y, xq):
        f_lsa = lambda q: lsa_predict(params, x, y, q)  # noqa: E731
        f_gd = lambda q: gd_prediction(x, y, q, eta)  # noqa: E731
        s_lsa, s_gd = jax.jacobian(f_lsa)(xq), jax.jacobian(f_gd)(xq)
        cos = jnp.dot(s_lsa, s_gd) / (jnp.linalg.norm(s_lsa) * jnp.linalg.norm(s_gd) + 1e-30)
        return f_lsa(xq), f_gd(xq), cos, jnp.sum((s_lsa - s_gd) ** 2)

    p_lsa, p_gd, cos, sens = jax.vmap(one)(tasks.x, tasks.y, tasks.xq)
    return {"lsa_loss": 0.5 * jnp.mean((p_lsa - tasks.yq) ** 2), "gd_loss": 0.5 * jnp.mean((p_gd - tasks.yq) ** 2),
            "pred_diff": jnp.mean((p_lsa - p_gd) ** 2), "cosine": jnp.mean(cos), "cosine_min": jnp.min(cos),
            "sens_diff": jnp.mean(sens)}


_compare_jit = jax.jit(_compare)


def compare_with_gd(params: dict, key: jax.Array, d: int, n: int, *, tasks: int = 10000, eta: float | None = None,
                    eta_tasks: int = 1_000_000, dist: str = "uniform", noise: float = 0.0) -> dict:
    """A (trained) LSA layer against the best single GD step on `tasks` new tasks from `key`.

    eta None: line-searched on a separate draw of `eta_tasks` tasks (`line_search_eta`, in chunks
    of `tasks`, so one sampler compiles). Returns floats:
    lsa_loss, gd_loss (1/2 mean squared query error of each), pred_diff (mean over tasks of
    (y_hat_lsa - y_hat_gd)^2), cosine (mean over tasks of the cosine between d y_hat / d x_q of the
    layer and of GD, each float[d] from jax.jacobian; cosine_min its minimum), sens_diff (mean
    squared norm of their difference), eta."""
    _check_params(params, d + 1)
    k_eta, k_eval = jax.random.split(key)
    if eta is None:
        eta = line_search_eta(k_eta, n, d, tasks=eta_tasks, chunk=tasks, dist=dist, noise=noise)
    batch = sample_tasks(k_eval, tasks, n, d, dist=dist, noise=noise)
    out = {k: float(v) for k, v in _compare_jit(params, batch, jnp.asarray(eta, batch.x.dtype)).items()}
    out["eta"] = float(eta)
    return out


def train(config: ICLConfig, *, progress: bool = False) -> dict:
    """Trains one LSA layer with Adam on fresh random tasks every step (1/2 MSE of the query); the
    learning rate is constant or cosine-decayed to 1% of `lr` over the steps (`schedule`).

    Returns {"params", "losses": float[steps] (training-batch loss before each step), "gd_losses":
    float[steps] (the GD step's loss on the same batches: a paired comparison), "eval":
    [{step, lsa_loss, gd_loss, pred_diff, cosine, ...}] at step 0, every `eval_every` steps and at
    the end, on a fixed held-out batch of `eval_tasks` tasks, "eta" (GD rate line-searched on
    `eta_tasks` other tasks), "gd_loss" (GD's loss on the held-out batch), "final" (compare_with_gd
    on fresh tasks), "seconds" (wall time of the training steps, compilation and evaluations
    excluded)}.

    The loop is `toy_loop` over chunks of `eval_every` steps (one `lax.scan` each): seconds to
    minutes in memory, no checkpoints and nothing to resume, so not the run loop of `metareason
    train`; a non-finite loss raises `metareason.train.TrainingDiverged`."""
    if config.dist not in DISTS:
        raise ICLError(f"unknown input distribution {config.dist!r} (known: {', '.join(DISTS)})")
    if config.schedule not in SCHEDULES:
        raise ICLError(f"unknown schedule {config.schedule!r} (known: {', '.join(SCHEDULES)})")
    if config.steps < 1 or config.eval_every < 1:
        raise ICLError(f"steps and eval_every must be >= 1, got {config.steps}, {config.eval_every}")
    key = jax.random.key(config.seed)
    k_init, k_train, k_eta, k_eval, k_final = jax.random.split(key, 5)
    sample = lambda k, b: sample_tasks(k, b, config.n, config.d, dist=config.dist, noise=config.noise)  # noqa: E731
    params = init_lsa(k_init, config.d, config.heads, config.init_scale)
    eta = np.float32(line_search_eta(k_eta, config.n, config.d, tasks=config.eta_tasks, chunk=config.eval_tasks,
                                     dist=config.dist, noise=config.noise))
    held_out = sample(k_eval, config.eval_tasks)
    lr = config.lr if config.schedule == "constant" else optax.cosine_decay_schedule(config.lr, config.steps, 0.01)
    opt = optax.adam(lr)
    opt_state = jax.jit(opt.init)(params)

    @jax.jit
    def chunk(params, opt_state, start, length_mask):
        def step(carry, i):
            p, s = carry
            batch = sample(jax.random.fold_in(k_train, start + i), config.batch)
            loss, g = jax.value_and_grad(lsa_loss)(p, batch)
            upd, s_new = opt.update(g, s, p)
            p_new = optax.apply_updates(p, upd)
            keep = length_mask[i]
            p = jax.tree.map(lambda a, b: jnp.where(keep, a, b), p_new, p)
            s = jax.tree.map(lambda a, b: jnp.where(keep, a, b), s_new, s)
            return (p, s), (loss, gd_loss(batch, eta))

        (params, opt_state), losses = lax.scan(step, (params, opt_state), jnp.arange(config.eval_every))
        return params, opt_state, losses

    n_chunks = -(-config.steps // config.eval_every)
    chunk = chunk.lower(params, opt_state, np.int32(0), np.ones(config.eval_every, bool)).compile()  # untimed

    def step(state, c):
        """Chunk c: steps c * eval_every .. (the last chunk masked to the steps left)."""
        start = c * config.eval_every
        length = min(config.eval_every, config.steps - start)
        params, opt_state, (lsa, gd) = chunk(*state, np.int32(start), np.arange(config.eval_every) < length)
        return (params, opt_state), {"lsa": lsa[:length], "gd": gd[:length]}

    def evaluate(state, chunks):
        return {k: float(v) for k, v in _compare_jit(state[0], held_out, eta).items()}

    run = toy_loop(step, (params, opt_state), n_chunks, evaluate=evaluate, eval_every=1, desc="lsa",
                   progress=progress)
    params = run.state[0]
    evals = [dict(e, step=min(e["step"] * config.eval_every, config.steps)) for e in run.evals]
    final = compare_with_gd(params, k_final, config.d, config.n, tasks=config.eval_tasks, eta=float(eta),
                            dist=config.dist, noise=config.noise)
    return {"params": params, "losses": np.concatenate([h["lsa"] for h in run.history]),
            "gd_losses": np.concatenate([h["gd"] for h in run.history]), "eval": evals, "eta": float(eta),
            "gd_loss": evals[0]["gd_loss"], "final": final, "seconds": run.seconds}
