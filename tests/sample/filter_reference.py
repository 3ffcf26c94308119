"""Plain numpy references for the logit filters (float64, sort + cumulative sum), shared by the
tests of `metareason.sample`."""

import numpy as np


def np_top_k(logits, k):
    """Keep logits >= the k-th largest of each row (sorted descending)."""
    x = np.array(logits, np.float64)
    V = x.shape[-1]
    if k == 0 or k >= V:
        return x
    kth = -np.sort(-x, axis=-1)[..., k - 1:k]
    return np.where(x >= kth, x, -np.inf)


def np_top_p(logits, p):
    """Sort probabilities descending; the nucleus is the shortest prefix whose cumulative sum
    reaches p; keep every token at least as probable as the nucleus's last token."""
    x = np.array(logits, np.float64)
    if p >= 1.0:
        return x
    flat = x.reshape(-1, x.shape[-1])
    out = np.empty_like(flat)
    for r, row in enumerate(flat):
        probs = np.exp(row - row.max())
        probs /= probs.sum()
        desc = np.sort(probs)[::-1]
        cum = np.cumsum(desc)
        n = min(int(np.searchsorted(cum, p)) + 1, len(desc))  # first prefix length with cum >= p
        out[r] = np.where(probs >= desc[n - 1], row, -np.inf)
    return out.reshape(x.shape)


def np_process(logits, temperature, top_k, top_p):
    return np_top_p(np_top_k(np.asarray(logits, np.float64) / temperature, top_k), top_p)
