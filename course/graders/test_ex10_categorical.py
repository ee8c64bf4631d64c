"""Exercise 10 (advanced) — §2: rollout.categorical, against brute force over the CDF and by sampling statistics."""

import torch
from expect import equal

from rollout import categorical


def brute_force(probs: list[float], u: float) -> int:
    """The first token whose cumulative probability exceeds u times the row's total."""
    total, running = sum(probs), 0.0
    for token, p in enumerate(probs):
        running += p
        if running > u * total:
            return token
    raise AssertionError("u must be below 1")


def test_brute_force_on_the_edges_of_each_interval():
    rows = [[0.5, 0.25, 0.15, 0.1], [0.0, 0.3, 0.0, 0.7], [2.0, 1.0, 1.0, 0.0]]  # the last: unnormalised
    us = [0.0, 0.1, 0.4999, 0.5001, 0.74, 0.76, 0.8999, 0.9001, 0.99]
    probs = torch.tensor([row for row in rows for _ in us], dtype=torch.float32)
    u = torch.tensor(us * len(rows), dtype=torch.float64)
    got = categorical(probs, u)
    equal("categorical(probs (27, 4), u (27,)): shape and dtype", (tuple(got.shape), got.dtype),
          ((len(probs),), torch.long))
    for i, row in enumerate(rows):
        equal(f"categorical({row} at u = {us})", got[i * len(us):(i + 1) * len(us)].tolist(),
              [brute_force(row, x) for x in us])


def test_zero_probability_tokens_are_never_drawn():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.0, 0.5, 0.0]]).expand(1000, -1)
    u = torch.rand(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    equal("the tokens categorical draws from [0, 0.5, 0, 0, 0.5, 0] at 1000 uniform u",
          sorted(set(categorical(probs, u).tolist())), [1, 4])


def test_frequencies_match_the_probabilities():
    probs = torch.tensor([0.5, 0.25, 0.15, 0.1, 0.0])
    n = 20000
    u = torch.rand(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    counts = torch.bincount(categorical(probs.expand(n, -1), u), minlength=5).double()
    expected = probs.double() * n
    std = (n * probs.double() * (1 - probs.double())).sqrt()
    within = bool(((counts[:4] - expected[:4]).abs() < 5 * std[:4]).all()) and bool(counts[4] == 0)
    assert within, (f"token counts of {n} draws from {probs.tolist()}: got {counts.tolist()}, expected "
                    f"{expected.tolist()} within 5 standard deviations, and none of token 4")
