"""course/labs.py, course/grpo.py and course/answer_only.py: the pieces that are math, against independent
references."""

import os
import random
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "course"))
import answer_only  # noqa: E402
import grpo  # noqa: E402
import labs  # noqa: E402
from rloo import rloo_advantages  # noqa: E402
from rollout import log_prob  # noqa: E402
from test_rollout import naive_log_prob, rollout_and_float64_copy  # noqa: E402


def test_no_signal_share_counts_the_groups_rloo_gives_zero_advantages():
    rng = random.Random(0)
    per_problem = [[rng.choice([0.0, 10.0, 10.0, 100.0]) for _ in range(16)] for _ in range(50)]
    for G in (2, 4, 8, 16):
        groups = torch.tensor([row[j:j + G] for row in per_problem for j in range(0, 16, G)])
        zero = (rloo_advantages(groups) == 0).all(1).float().mean().item()
        assert abs(labs.no_signal_share(per_problem, G) - zero) < 1e-6
    assert labs.no_signal_share([[10.0] * 4, [10.0, 100.0, 10.0, 10.0]], 2) == 0.75


def test_grpo_advantages_are_z_scores_per_group():
    rewards = torch.tensor([[100.0, 10.0, 10.0, 0.0], [10.0, 10.0, 10.0, 10.0], [100.0, 10.0, 10.0, 10.0]])
    a = grpo.grpo_advantages(rewards)
    for row, adv in zip(rewards.tolist(), a):
        mean = sum(row) / len(row)
        std = (sum((x - mean) ** 2 for x in row) / (len(row) - 1)) ** 0.5
        assert torch.allclose(adv, torch.tensor([(x - mean) / (std + grpo.EPS) for x in row]))
    assert (a[1] == 0).all()  # no spread, no signal: as RLOO
    # one lucky sample among equals gets the same scale as an even split: what the lab asks about
    assert torch.allclose(a[2].abs().max(), torch.tensor(1.5), atol=1e-4)
    assert not torch.allclose(rloo_advantages(rewards)[2], a[2])


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_answer_only_keeps_log_prob_values_and_drops_the_cot_steps_gradient(mode):
    """Against the step-by-step reference with its CoT terms detached, in float64; and the full gradient differs."""
    model, r, model64, r64 = rollout_and_float64_copy(mode)
    weights = torch.randn(4)  # any linear functional of the log-probs, like -A_i
    ours = answer_only.answer_only_log_prob(model, r)
    (weights * ours).sum().backward()
    (weights.double() * naive_log_prob(model64, r64, cot_gradient=False)).sum().backward()
    with torch.no_grad():
        assert torch.equal(ours, log_prob(model, r))  # the logged loss does not change
    answer_grads = [p.grad.clone() for p in model.parameters()]
    for ours_grad, reference in zip(answer_grads, model64.parameters()):
        assert torch.allclose(ours_grad.double(), reference.grad, rtol=1e-3, atol=1e-4)
    model.zero_grad()
    (weights * log_prob(model, r)).sum().backward()
    assert not all(torch.allclose(a, p.grad, atol=1e-4) for a, p in zip(answer_grads, model.parameters()))
