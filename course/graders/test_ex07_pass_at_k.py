"""Exercise 7 — §7: data.pass_at_k, against brute force over all k-subsets and exact fractions."""

import itertools
import math
from fractions import Fraction
from functools import partial

from expect import close, refuses

from data import pass_at_k


def test_equals_brute_force_over_subsets():
    for n in range(1, 8):
        for c in range(n + 1):
            samples = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(samples, k))
                brute = sum(any(s) for s in subsets) / len(subsets)
                close(f"pass_at_k({n}, {c}, {k}) against the share of {k}-subsets holding a correct sample",
                      pass_at_k(n, c, k), brute, rtol=0, atol=1e-12)


def test_hand_computed_and_edges():
    close("pass_at_k(4, 1, 2) = 1 - C(3,2)/C(4,2)", pass_at_k(4, 1, 2), 0.5, rtol=0, atol=1e-12)
    close("pass_at_k(10, 0, 5): no correct sample", pass_at_k(10, 0, 5), 0.0, rtol=0, atol=0)
    close("pass_at_k(10, 6, 5): every 5-subset holds a correct sample", pass_at_k(10, 6, 5), 1.0, rtol=0, atol=0)
    close("pass_at_k(32, 8, 1): pass@1 is the share correct", pass_at_k(32, 8, 1), 0.25, rtol=0, atol=1e-12)


def test_large_n_without_overflow():
    n, c, k = 2000, 37, 900
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    close(f"pass_at_k({n}, {c}, {k}) against the exact fraction", pass_at_k(n, c, k), float(exact), rtol=0,
          atol=1e-9)


def test_bad_arguments_are_refused():
    for n, c, k in [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)]:
        refuses(f"pass_at_k({n}, {c}, {k}): needs 0 <= c <= n and 1 <= k <= n", partial(pass_at_k, n, c, k),
                ValueError)
