"""Exercise 7 — §7: data.pass_at_k, against brute force over all k-subsets and exact fractions."""

import itertools
import math
from fractions import Fraction

import pytest

from data import pass_at_k


def test_equals_brute_force_over_subsets():
    for n in range(1, 8):
        for c in range(n + 1):
            samples = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(samples, k))
                brute = sum(any(s) for s in subsets) / len(subsets)
                assert abs(pass_at_k(n, c, k) - brute) < 1e-12, (n, c, k)


def test_hand_computed_and_edges():
    assert abs(pass_at_k(4, 1, 2) - 0.5) < 1e-12        # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 6, 5) == 1.0                    # every 5-subset holds a correct sample
    assert abs(pass_at_k(32, 8, 1) - 0.25) < 1e-12       # pass@1 is the share correct


def test_large_n_without_overflow():
    n, c, k = 2000, 37, 900
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert abs(pass_at_k(n, c, k) - float(exact)) < 1e-9


def test_bad_arguments_are_refused():
    for n, c, k in [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)
