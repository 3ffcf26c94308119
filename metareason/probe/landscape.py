"""E1: the answer-loss landscape around the parameters (Fig 2 of the paper).

Two random directions with one Gaussian draw per parameter tensor, each rescaled to the
Frobenius norm of its tensor (per layer for the layer-stacked tensors; embeddings and the output
head excluded, i.e. zero), and the grid theta + a d1 + b d2 of answer losses given the question
only (the probe at cut 0 of the trajectory).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metareason.model import ModelConfig
from metareason.probe.loss import ProbeBatch, answer_loss_along_trajectory

__all__ = ["random_directions", "loss_surface", "place_path", "EXCLUDED"]

#: Top-level parameter groups the directions leave at zero (the paper excludes embeddings and lm_head).
EXCLUDED = ("embed_tokens", "lm_head")


def random_directions(params: Any, key: jax.Array, *, exclude: Sequence[str] = EXCLUDED) -> Any:
    """One direction (a pytree like `params`): N(0, 1) per tensor, rescaled to the tensor's
    Frobenius norm; under "layers" (stacked on axis 0) each layer's slice is rescaled on its own."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    keys = jax.random.split(key, len(leaves))
    out = []
    for (path, x), k in zip(leaves, keys):
        top = str(getattr(path[0], "key", path[0]))
        if top in exclude:
            out.append(jnp.zeros_like(x))
            continue
        d = jax.random.normal(k, x.shape, jnp.float32)
        axes = tuple(range(1, x.ndim)) if top == "layers" and x.ndim > 1 else None
        norm_x = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=axes, keepdims=axes is not None))
        norm_d = jnp.sqrt(jnp.sum(jnp.square(d), axis=axes, keepdims=axes is not None))
        out.append((d * norm_x / jnp.maximum(norm_d, 1e-12)).astype(x.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


def loss_surface(params: Any, config: ModelConfig, batch: ProbeBatch, d1: Any, d2: Any,
                 alphas: Sequence[float], betas: Sequence[float], *, chunk: int = 16) -> np.ndarray:
    """float64[len(alphas), len(betas)]: the mean (over questions and valid cuts) answer NLL of
    `batch` at theta + a d1 + b d2. Give the batch the cuts you want (E1 uses the cut right
    after the prompt: the question only). Grid points run `chunk` at a time under `lax.map`."""
    grid = np.stack(np.meshgrid(np.asarray(alphas, np.float32), np.asarray(betas, np.float32), indexing="ij"), -1)
    flat = grid.reshape(-1, 2)

    def one(ab):
        p = jax.tree.map(lambda t, u, v: t + (ab[0] * u + ab[1] * v).astype(t.dtype), params, d1, d2)
        res = answer_loss_along_trajectory(p, batch, config=config)
        return jnp.sum(res.mean) / jnp.sum(res.valid)

    values = jax.jit(lambda pts: jax.lax.map(one, pts, batch_size=chunk))(jnp.asarray(flat))
    return np.asarray(values, np.float64).reshape(grid.shape[:2])


def place_path(surface: np.ndarray, alphas: Sequence[float], betas: Sequence[float],
               losses: Sequence[float]) -> np.ndarray:
    """Where to draw a trajectory's L-hat values on the surface (an illustration, as in the
    paper's figure, not a measurement: trajectory tokens are not moves in (a, b)).

    From the grid point nearest theta (a = b = 0) follow steepest descent over the 8-neighbour
    grid to a local minimum; prefix i is placed at the first point of that path whose surface
    value is <= losses[i] (interpolated along the path), or at its end when the path never gets
    that low. Returns float[len(losses), 2] (a, b) coordinates."""
    alphas, betas = np.asarray(alphas, np.float64), np.asarray(betas, np.float64)
    i, j = int(np.abs(alphas).argmin()), int(np.abs(betas).argmin())
    path = [(i, j)]
    while True:
        best = min(((i + di, j + dj) for di in (-1, 0, 1) for dj in (-1, 0, 1)
                    if 0 <= i + di < surface.shape[0] and 0 <= j + dj < surface.shape[1]),
                   key=lambda ij: surface[ij])
        if surface[best] >= surface[i, j]:
            break
        i, j = best
        path.append(best)
    vals = np.asarray([surface[p] for p in path])
    coords = np.asarray([(alphas[p[0]], betas[p[1]]) for p in path])
    out = np.empty((len(losses), 2))
    for n, target in enumerate(losses):
        if target >= vals[0]:
            out[n] = coords[0]
            continue
        below = np.flatnonzero(vals <= target)
        if not below.size:
            out[n] = coords[-1]
            continue
        s = int(below[0])
        t = (vals[s - 1] - target) / (vals[s - 1] - vals[s])
        out[n] = coords[s - 1] + t * (coords[s] - coords[s - 1])
    return out
