"""Pass@k, G-Pass@k_tau and mG-Pass@k: unbiased estimators from n samples per question (PAPER.md,
Eqs 22-23; Chen et al. 2021 for Pass@k, Liu et al. 2024 "Are your LLMs capable of stable reasoning?"
for G-Pass@k).

With n samples of a question of which c are correct, draw k of the n without replacement; the
number X of correct ones among them is hypergeometric, P(X = j) = C(c, j) C(n - c, k - j) / C(n, k):

    Pass@k          = P(X >= 1)            = 1 - C(n - c, k) / C(n, k)
    G-Pass@k_tau    = P(X >= ceil(tau k))
    mG-Pass@k       = (2 / k) sum_{i = ceil(k/2) + 1}^{k} P(X >= i)

Every function takes per-question counts (ints or int arrays [Q]) and returns float64 [Q]
(average over questions for the dataset's value). The tail sums are exact rational arithmetic
(Python integers) rounded once to float, so they agree with brute-force enumeration.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["pass_at_k", "g_pass_at_k", "mg_pass_at_k", "PassKError"]


class PassKError(ValueError):
    """Counts that cannot be estimated from (n, c, k) (one line, names the values)."""


def _counts(n, c, k) -> tuple[np.ndarray, np.ndarray, int]:
    n_arr, c_arr = np.broadcast_arrays(np.asarray(n), np.asarray(c))
    if not (np.issubdtype(n_arr.dtype, np.integer) and np.issubdtype(c_arr.dtype, np.integer)):
        raise PassKError(f"n and c must be integers, got dtypes {n_arr.dtype} and {c_arr.dtype}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise PassKError(f"k must be an int >= 1, got {k!r}")
    bad = (c_arr < 0) | (c_arr > n_arr) | (n_arr < k)
    if bad.any():
        i = np.unravel_index(int(np.flatnonzero(bad.ravel())[0]), bad.shape) if bad.ndim else ()
        raise PassKError(f"need 0 <= c <= n and n >= k, got n={int(n_arr[i])}, c={int(c_arr[i])}, k={k}")
    return n_arr, c_arr, int(k)


def _tail(n: int, c: int, k: int, at_least: int) -> float:
    """P(X >= at_least) for X ~ Hypergeometric(n, c, k), exactly (then rounded once)."""
    lo = max(at_least, 0, k - (n - c))
    num = sum(math.comb(c, j) * math.comb(n - c, k - j) for j in range(lo, min(c, k) + 1))
    return num / math.comb(n, k)


def _map(fn, n, c, k) -> np.ndarray:
    n, c, k = _counts(n, c, k)
    out = np.fromiter((fn(int(a), int(b), k) for a, b in zip(n.ravel(), c.ravel())), np.float64, n.size)
    return out.reshape(n.shape)


def pass_at_k(n, c, k: int) -> np.ndarray:
    """P(at least one of k samples drawn from the n is correct) = 1 - C(n-c, k) / C(n, k); float64 [Q]."""
    return _map(lambda a, b, kk: _tail(a, b, kk, 1), n, c, k)


def _threshold(tau: float, k: int) -> int:
    if not 0 <= tau <= 1:
        raise PassKError(f"tau must be in [0, 1], got {tau!r}")
    # ceil(tau k), robust to tau k landing a rounding error above an integer (0.7 * 10)
    return max(1, math.ceil(round(tau * k, 9)))


def g_pass_at_k(n, c, k: int, tau: float) -> np.ndarray:
    """P(at least ceil(tau k) of k samples are correct) (at least 1: tau = 0 gives Pass@k); float64 [Q]."""
    m = _threshold(tau, k)
    return _map(lambda a, b, kk: _tail(a, b, kk, m), n, c, k)


def mg_pass_at_k(n, c, k: int) -> np.ndarray:
    """(2/k) sum_{i=ceil(k/2)+1}^{k} P(X >= i): G-Pass@k averaged over thresholds above one half;
    float64 [Q]. For k = 1 the sum is empty and the value is 0 (as the formula gives)."""
    def one(a, b, kk):
        return 2.0 / kk * sum(_tail(a, b, kk, i) for i in range(math.ceil(kk / 2) + 1, kk + 1))
    return _map(one, n, c, k)


def correct_counts(correct: Sequence[Sequence[bool]]) -> tuple[np.ndarray, np.ndarray]:
    """(n int[Q], c int[Q]) from per-question lists of per-sample correctness."""
    n = np.asarray([len(x) for x in correct], np.int64)
    c = np.asarray([int(sum(bool(v) for v in x)) for x in correct], np.int64)
    return n, c


__all__.append("correct_counts")
