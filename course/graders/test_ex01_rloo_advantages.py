"""Exercise 1 — Eq. 12: rloo.rloo_advantages, against hand-computed values and a loop over the definition."""

import torch
from expect import close, refuses

from rloo import rloo_advantages


def test_hand_computed():
    rewards = torch.tensor([[100.0, 10.0, 0.0, 10.0],    # baselines: 20/3, 110/3, 120/3, 110/3
                            [10.0, 10.0, 10.0, 10.0]])    # all equal: no signal
    expected = torch.tensor([[100 - 20 / 3, 10 - 110 / 3, 0 - 40, 10 - 110 / 3],
                             [0.0, 0.0, 0.0, 0.0]])
    close(f"rloo_advantages({rewards.tolist()})", rloo_advantages(rewards), expected, atol=1e-5)


def test_equals_leave_one_out_loop():
    torch.manual_seed(0)
    rewards = torch.randint(0, 3, (5, 7)).double() * 45
    expected = torch.tensor([[float(rewards[b, g] - torch.cat([rewards[b, :g], rewards[b, g + 1:]]).mean())
                              for g in range(7)] for b in range(5)], dtype=torch.float64)
    close(f"rloo_advantages({rewards.tolist()}) against a loop over Eq. 12", rloo_advantages(rewards), expected,
          rtol=0, atol=1e-9)


def test_two_samples_and_constant_shift():
    rewards = torch.tensor([[3.0, 1.0]])
    close(f"rloo_advantages({rewards.tolist()})", rloo_advantages(rewards), torch.tensor([[2.0, -2.0]]))
    shifted = torch.rand(3, 5, generator=torch.Generator().manual_seed(1))
    close("rloo_advantages(rewards + 17) against rloo_advantages(rewards): a baseline cancels a constant",
          rloo_advantages(shifted + 17), rloo_advantages(shifted), atol=1e-5)


def test_one_sample_per_prompt_is_refused():
    refuses("rloo_advantages([[1.0], [2.0]]): G = 1 leaves no other sample for the baseline",
            lambda: rloo_advantages(torch.tensor([[1.0], [2.0]])), ValueError)
