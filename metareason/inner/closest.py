"""The member of an affine family closest in direction to a target: max cos(x, v) over x in x0 + S.

The implicit update of a trajectory prefix is one member x0 (the per-kernel pseudo-inverse one) of
an affine family x0 + S of updates that reproduce the in-context logits exactly
(`metareason.inner.implicit` says which S). The member whose cosine with v = -grad L is largest:

Write x_perp = x0 - P_S x0 (the family is x_perp + S, x_perp orthogonal to S) and p = P_S v (the
part of v in S). Split s in S as s = t p + s2 with s2 orthogonal to p inside S: v . s2 = 0, so s2
only adds to the norm and the optimum has s2 = 0. On the line
x(t) = x_perp + t p, with

    a = v . x_perp,   c = |x_perp|^2,   e = |p|^2 = v . p,   (x_perp . p = 0)

    cos(t) = (a + t e) / (|v| sqrt(c + t^2 e)),   d cos/dt  is proportional to  e (c - a t).

The general 1-D problem (a + t b) / sqrt(c + 2 t d + t^2 e) reduces to this one because b = e
(p is a projection of v) and d = 0 (x_perp is orthogonal to S). Hence:

- e > 0, a > 0:  the maximum is at t* = c / a, cos* = sqrt(a^2 / c + e) / |v|, i.e.
  cos*^2 = cos(x_perp, v)^2 + |P_S v|^2 / |v|^2 (never below the pseudo-inverse member's cosine);
- e > 0, a <= 0, c > 0: cos(t) increases for t > c / a towards its supremum |p| / |v| as t -> inf,
  which no member attains (t* = inf);
- e > 0, c = 0 (x0 in S, e.g. the empty prefix, whose update is 0): every t > 0 gives |p| / |v|;
  t* = 1;
- e = 0 (v orthogonal to S: the family's freedom cannot turn towards v): only the norm can change;
  a > 0: t* = 0, cos* = a / (|v| sqrt c); a <= 0: supremum 0 (a < 0: not attained, t* = inf;
  a = 0: every member has cosine 0, t* = 0);
- v = 0: the cosine is undefined (NaN).

`closest_cosine` is this closed form on the scalars (numpy or jax); `closest_in_family` applies it
to the least-squares family {x : X x = r} (matrices x: the cosine is over all entries), the small
case the tests solve by brute force.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["Closest", "closest_cosine", "closest_in_family"]


class Closest(NamedTuple):
    """cos: the supremum of cos(x, v) over the family; t: where it is attained on x_perp + t P_S v
    (inf: not attained); null_share: |P_S v| / |v|, the share of v the family's freedom can reach."""

    cos: Any
    t: Any
    null_share: Any


def closest_cosine(a, c, e, v_norm, *, xp=np) -> Closest:
    """The closed form of the module docstring on scalars (arrays broadcast): a = v . x_perp,
    c = |x_perp|^2, e = |P_S v|^2, v_norm = |v|. xp: numpy or jax.numpy. e below
    (1000 eps |v|)^2 counts as 0 (rounding of a projection that is 0 in exact arithmetic)."""
    a, c, e, v_norm = (xp.asarray(x, dtype=xp.float64 if xp is np else None) for x in (a, c, e, v_norm))
    inv = xp.where(v_norm > 0, 1.0 / xp.where(v_norm > 0, v_norm, 1.0), xp.nan)
    c_pos = c > 0
    safe_c = xp.where(c_pos, c, 1.0)
    safe_a = xp.where(a > 0, a, 1.0)
    root_e = xp.sqrt(xp.maximum(e, 0.0))
    tol = 1e3 * xp.finfo(e.dtype).eps  # |P_S v| below tol |v| is rounding: e = 0
    e_pos = e > xp.square(tol * v_norm)
    cos_attained = xp.sqrt(xp.square(a) / safe_c + xp.maximum(e, 0.0)) * inv  # a > 0 (so c > 0)
    cos = xp.where(a > 0, cos_attained, xp.where(e_pos, root_e * inv, 0.0 * inv))
    t = xp.where(a > 0, xp.where(e_pos, c / safe_a, 0.0),
                 xp.where(e_pos, xp.where(c_pos, xp.inf, 1.0), xp.where(a < 0, xp.inf, 0.0)))
    return Closest(cos, t, root_e * inv)


def closest_in_family(X: np.ndarray, r: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, Closest]:
    """The family {x : X x = r} (X: [n, D]; x, r, v: [D, ...] and [n, ...]; a consistent system),
    its pseudo-inverse member x0 = X^+ r moved to the member closest in direction to v:
    returns (x0 + t* P_null(v), Closest) with P_null(v) = v - X^+ X v (x0 itself when t* is inf)."""
    X, r, v = (np.asarray(z, np.float64) for z in (X, r, v))
    pinv = np.linalg.pinv(X)
    x0 = pinv @ r
    p = v - pinv @ (X @ v)
    x_perp = x0 - (x0 - pinv @ (X @ x0))
    res = closest_cosine(np.vdot(v, x_perp), np.vdot(x_perp, x_perp), np.vdot(p, p), np.linalg.norm(v))
    return (x_perp + res.t * p if np.isfinite(res.t) else x0), res
