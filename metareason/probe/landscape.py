"""E1: the answer-loss landscape around the parameters (Fig 2 of the paper).

Two random directions with one Gaussian draw per parameter tensor, each rescaled to the
Frobenius norm of its tensor (per layer for the layer-stacked tensors; embeddings and the output
head excluded, i.e. zero), and the grid theta + a d1 + b d2 of answer losses given the question
only (the probe at cut 0 of the trajectory).

E1 measured (`update_plane`, `measured_landscape`): the plane is spanned by a trajectory's
measured cumulative implicit updates (the caller computes them, `metareason.inner.implicit`,
and passes them as params-like pytrees: this layer does not import `inner`). Centred at the
start point theta (the empty prefix's update is 0), the plane's directions are the first two
principal (right singular) directions of the stacked updates, unit-norm; each prefix is plotted
at its projection (a_i, b_i) with the off-plane residual |u_i - proj| / |u_i| reported. The
value of a prefix's point is the question-only loss at theta + u_i (its own full update), which
equals the in-context L-hat by exactness of the implicit update; the surface's own value at
(a_i, b_i) is reported next to it and equals it exactly when the residual is 0 (always when at
most two non-zero updates are given, e.g. the prefixes 0, k, T).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metareason.model import ModelConfig
from metareason.probe.loss import ProbeBatch, answer_loss_along_trajectory

__all__ = ["random_directions", "loss_surface", "place_path", "EXCLUDED", "update_plane", "plane_losses",
           "measured_landscape"]

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


def _mean_loss(params, config, batch):
    res = answer_loss_along_trajectory(params, batch, config=config)
    return jnp.sum(res.mean) / jnp.sum(res.valid)


def plane_losses(params: Any, config: ModelConfig, batch: ProbeBatch, d1: Any, d2: Any, points: np.ndarray, *,
                 chunk: int = 16) -> np.ndarray:
    """float64[P]: the mean answer NLL of `batch` at theta + a d1 + b d2 for each (a, b) row of
    points float[P, 2], `chunk` at a time under `lax.map`."""

    def one(ab):
        p = jax.tree.map(lambda t, u, v: t + (ab[0] * u + ab[1] * v).astype(t.dtype), params, d1, d2)
        return _mean_loss(p, config, batch)

    pts = jnp.asarray(np.asarray(points, np.float32).reshape(-1, 2))
    values = jax.jit(lambda q: jax.lax.map(one, q, batch_size=chunk))(pts)
    return np.asarray(values, np.float64)


def loss_surface(params: Any, config: ModelConfig, batch: ProbeBatch, d1: Any, d2: Any,
                 alphas: Sequence[float], betas: Sequence[float], *, chunk: int = 16) -> np.ndarray:
    """float64[len(alphas), len(betas)]: the mean (over questions and valid cuts) answer NLL of
    `batch` at theta + a d1 + b d2. Give the batch the cuts you want (E1 uses the cut right
    after the prompt: the question only). Grid points run `chunk` at a time under `lax.map`."""
    grid = np.stack(np.meshgrid(np.asarray(alphas, np.float32), np.asarray(betas, np.float32), indexing="ij"), -1)
    values = plane_losses(params, config, batch, d1, d2, grid.reshape(-1, 2), chunk=chunk)
    return values.reshape(grid.shape[:2])


def _flatten(tree) -> np.ndarray:
    return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)])


def update_plane(updates: Sequence[Any]) -> dict[str, Any]:
    """The plane of a trajectory's cumulative updates (pytrees like params, one per prefix).

    Returns d1, d2 (pytrees, unit Frobenius norm over all leaves, orthogonal: the first two right
    singular directions of the stacked updates, d1 oriented so the last update has a >= 0; d2 = 0
    when the updates span one direction), coords float[P, 2] (each update's projection) and
    residual float[P] (|u - projection| / |u|, 0 for an update below 1e-6 of the largest)."""
    if not len(updates):
        raise ValueError("update_plane needs at least one update")
    U = np.stack([_flatten(u) for u in updates])  # [P, n]
    _, s, vt = np.linalg.svd(U, full_matrices=False)
    rank = int(np.sum(s > 1e-12 * max(s.max(), 1e-300)))
    dirs = np.zeros((2, U.shape[1]))
    dirs[:min(rank, 2)] = vt[:min(rank, 2)]
    if rank and U[-1] @ dirs[0] < 0:
        dirs[0] = -dirs[0]
    coords = U @ dirs.T
    norms = np.linalg.norm(U, axis=1)
    real = norms > 1e-6 * max(norms.max(), 1e-300)  # a zero update up to rounding (the empty prefix) has none
    residual = np.where(real, np.linalg.norm(U - coords @ dirs, axis=1) / np.where(real, norms, 1), 0.0)
    leaves, treedef = jax.tree_util.tree_flatten(updates[0])
    out, i = [], 0
    for x in leaves:
        n = int(np.size(x))
        out.append([d[i:i + n].reshape(np.shape(x)) for d in dirs])
        i += n
    d1 = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a[0], jnp.asarray(x).dtype) for a, x in zip(out, leaves)])
    d2 = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a[1], jnp.asarray(x).dtype) for a, x in zip(out, leaves)])
    return {"d1": d1, "d2": d2, "coords": coords, "residual": residual}


def measured_landscape(params: Any, config: ModelConfig, batch: ProbeBatch, updates: Sequence[Any], *,
                       grid: int = 13, margin: float = 0.3, chunk: int = 16) -> dict[str, Any]:
    """E1 measured (module docstring): the question-only answer-loss surface in the plane of the
    measured updates, over a grid covering their projections (plus `margin` of the range on each
    side), and each prefix's point. batch: the question only (one cut right after the prompt).

    Returns alphas, betas float[grid], surface float[grid, grid], coords float[P, 2], residual
    float[P], point_loss float[P] (the loss at theta + u_i: its own full update),
    surface_at_points float[P] (the surface at (a_i, b_i)); and d1, d2 (pytrees)."""
    plane = update_plane(updates)
    coords = plane["coords"]
    axes = []
    for j in range(2):
        lo, hi = min(coords[:, j].min(), 0.0), max(coords[:, j].max(), 0.0)
        pad = margin * max(hi - lo, 1e-3)
        axes.append(np.linspace(lo - pad, hi + pad, grid))
    surface = loss_surface(params, config, batch, plane["d1"], plane["d2"], axes[0], axes[1], chunk=chunk)
    at_points = plane_losses(params, config, batch, plane["d1"], plane["d2"], coords, chunk=chunk)
    own = np.asarray([float(_mean_loss(jax.tree.map(lambda t, u: t + u.astype(t.dtype), params, u), config, batch))
                      for u in updates])
    return {"alphas": axes[0], "betas": axes[1], "surface": surface, "coords": coords,
            "residual": plane["residual"], "point_loss": own, "surface_at_points": at_points,
            "d1": plane["d1"], "d2": plane["d2"]}


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
