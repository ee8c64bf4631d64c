"""Exercise 1 — Eq. 12: rloo.rloo_advantages, against hand-computed values and a loop over the definition."""

import pytest
import torch

from rloo import rloo_advantages


def test_hand_computed():
    rewards = torch.tensor([[100.0, 10.0, 0.0, 10.0],    # baselines: 20/3, 110/3, 120/3, 110/3
                            [10.0, 10.0, 10.0, 10.0]])    # all equal: no signal
    expected = torch.tensor([[100 - 20 / 3, 10 - 110 / 3, 0 - 40, 10 - 110 / 3],
                             [0.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(rloo_advantages(rewards), expected, atol=1e-5)


def test_equals_leave_one_out_loop():
    torch.manual_seed(0)
    rewards = torch.randint(0, 3, (5, 7)).double() * 45
    ours = rloo_advantages(rewards)
    assert ours.shape == (5, 7)
    for b in range(5):
        for g in range(7):
            others = torch.cat([rewards[b, :g], rewards[b, g + 1:]])
            assert abs(float(ours[b, g]) - float(rewards[b, g] - others.mean())) < 1e-9


def test_two_samples_and_constant_shift():
    rewards = torch.tensor([[3.0, 1.0]])
    assert torch.allclose(rloo_advantages(rewards), torch.tensor([[2.0, -2.0]]))
    shifted = torch.rand(3, 5, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(rloo_advantages(shifted + 17), rloo_advantages(shifted), atol=1e-5)


def test_one_sample_per_prompt_is_refused():
    with pytest.raises(ValueError):
        rloo_advantages(torch.tensor([[1.0], [2.0]]))
