"""Pass@k, G-Pass@k and mG-Pass@k against brute-force enumeration over all k-subsets."""

import itertools
import math

import numpy as np
import pytest

from metareason.evaluate.passk import PassKError, correct_counts, g_pass_at_k, mg_pass_at_k, pass_at_k


def _subsets(n, c, k):
    samples = [True] * c + [False] * (n - c)
    return [sum(s) for s in itertools.combinations(samples, k)]


def brute_pass(n, c, k):
    hits = _subsets(n, c, k)
    return np.mean([h >= 1 for h in hits])


def brute_g_pass(n, c, k, tau):
    need = max(1, math.ceil(tau * k - 1e-9))
    return np.mean([h >= need for h in _subsets(n, c, k)])


def brute_mg_pass(n, c, k):
    hits = _subsets(n, c, k)
    return 2 / k * sum(np.mean([h >= i for h in hits]) for i in range(math.ceil(k / 2) + 1, k + 1))


def test_equal_brute_force_on_random_small_cases():
    rng = np.random.default_rng(0)
    for _ in range(60):
        n = int(rng.integers(1, 11))
        c = int(rng.integers(0, n + 1))
        k = int(rng.integers(1, n + 1))
        np.testing.assert_allclose(pass_at_k(n, c, k), brute_pass(n, c, k), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(mg_pass_at_k(n, c, k), brute_mg_pass(n, c, k), rtol=1e-12, atol=1e-15)
        tau = float(rng.choice([0.0, 0.25, 0.5, 0.7, 1.0]))
        np.testing.assert_allclose(g_pass_at_k(n, c, k, tau), brute_g_pass(n, c, k, tau), rtol=1e-12, atol=1e-15)


def test_vectorised_over_questions_and_closed_forms():
    n = np.array([8, 8, 8, 16])
    c = np.array([0, 8, 3, 5])
    got = pass_at_k(n, c, 4)
    want = [1 - math.comb(int(a) - int(b), 4) / math.comb(int(a), 4) for a, b in zip(n, c)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[0] == 0.0 and got[1] == 1.0
    np.testing.assert_allclose(pass_at_k(n, c, 1), c / n)                 # Pass@1 = c / n
    np.testing.assert_allclose(g_pass_at_k(n, c, 4, 0.0), got)            # tau = 0 is Pass@k
    assert mg_pass_at_k(8, 8, 8) == pytest.approx(1.0) and mg_pass_at_k(8, 0, 8) == 0.0
    assert mg_pass_at_k(5, 3, 1) == 0.0                                   # empty sum for k = 1
    # large n stays exact (rational arithmetic): compare with scipy's hypergeometric tail
    from scipy.stats import hypergeom
    want = 2 / 16 * sum(hypergeom.sf(i - 1, 200, 70, 16) for i in range(9, 17))
    np.testing.assert_allclose(mg_pass_at_k(200, 70, 16), want, rtol=1e-9)


def test_counts_from_correctness_lists():
    n, c = correct_counts([[True, False, True], [False] * 4])
    assert n.tolist() == [3, 4] and c.tolist() == [2, 0]


@pytest.mark.parametrize("args, msg", [((4, 5, 2), "0 <= c <= n"), ((3, 1, 4), "n >= k"), ((4, 1, 0), "k must be"),
                                       ((4.0, 1, 2), "integers")])
def test_bad_counts_are_one_line_errors(args, msg):
    with pytest.raises(PassKError, match=msg) as err:
        pass_at_k(*args)
    assert "\n" not in str(err.value)
