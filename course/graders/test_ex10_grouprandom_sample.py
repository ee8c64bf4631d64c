"""Exercise 10 (advanced) — §2: rollout.GroupRandom.sample, by sampling statistics and per-group seeding."""

import torch

from rollout import GroupRandom


def test_frequencies_match_the_probabilities():
    probs = torch.tensor([0.5, 0.25, 0.15, 0.1, 0.0])
    n = 20000
    draws = GroupRandom(0, n, "cpu").sample(probs.expand(n, -1).clone())
    assert draws.shape == (n,) and draws.dtype == torch.long
    counts = torch.bincount(draws, minlength=5).double()
    assert counts[4] == 0                                   # a zero-probability token is never drawn
    expected = probs.double() * n
    std = (n * probs.double() * (1 - probs.double())).sqrt()
    assert ((counts[:4] - expected[:4]).abs() < 5 * std[:4]).all(), counts


def test_each_row_follows_its_own_distribution():
    probs = torch.eye(6)[torch.tensor([3, 0, 5, 5, 1, 2])]   # one-hot rows: the draw is forced
    assert GroupRandom([7, 8, 9], 6, "cpu").sample(probs).tolist() == [3, 0, 5, 5, 1, 2]


def test_a_groups_draws_depend_only_on_its_own_seed():
    rows, V = 50, 10
    probs = torch.softmax(torch.randn(2 * rows, V, generator=torch.Generator().manual_seed(0)), -1)
    a = GroupRandom([1, 2], 2 * rows, "cpu").sample(probs)
    b = GroupRandom([1, 3], 2 * rows, "cpu").sample(probs)
    alone = GroupRandom([1], rows, "cpu").sample(probs[:rows])
    assert torch.equal(a[:rows], b[:rows]) and torch.equal(a[:rows], alone)   # group 1: seed 1 in all three
    assert not torch.equal(a[rows:], b[rows:])                               # group 2: seeds 2 and 3 differ
    assert torch.equal(GroupRandom([1, 2], 2 * rows, "cpu").sample(probs), a)  # same seeds, same draws


def test_successive_calls_draw_afresh():
    rng, probs = GroupRandom(0, 200, "cpu"), torch.full((200, 8), 1 / 8)
    assert not torch.equal(rng.sample(probs), rng.sample(probs))
