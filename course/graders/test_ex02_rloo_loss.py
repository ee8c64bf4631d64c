"""Exercise 2 — Eq. 13-14: rloo.rloo_loss, with hand-written advantages (not rloo_advantages) and autograd."""

import torch
from expect import close, equal

from rloo import rloo_loss


def test_value_hand_computed():
    log_probs = torch.tensor([-2.0, -4.0, -1.0, -3.0])
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])
    # -(1/4) (1·-2 + -1·-4 + 0.5·-1 + -0.5·-3) = -(1/4)(3) = -0.75
    close(f"rloo_loss({log_probs.tolist()}, {advantages.tolist()})", rloo_loss(log_probs, advantages), -0.75,
          atol=1e-6)


def test_gradient_is_minus_advantage_over_total_and_advantages_get_none():
    log_probs = torch.randn(2, 3, requires_grad=True)
    advantages = torch.randn(2, 3, requires_grad=True)  # e.g. computed from something with gradients
    loss = rloo_loss(log_probs, advantages)
    equal("the loss's number of dimensions (a scalar)", loss.dim(), 0)
    loss.backward()
    close("d loss / d log_probs on 2 x 3 log-probabilities: -A / 6", log_probs.grad, -advantages.detach() / 6)
    gradient = torch.zeros(2, 3) if advantages.grad is None else advantages.grad
    close("d loss / d advantages: Eq. 12's advantages are detached, no gradient", gradient, torch.zeros(2, 3))


def test_micro_batch_losses_add_up_to_the_step_loss():
    log_probs, advantages = torch.randn(8), torch.tensor([5.0, -5.0, 1.0, -1.0, 2.0, 0.0, -3.0, 1.0])
    whole = rloo_loss(log_probs, advantages)
    parts = sum(rloo_loss(log_probs[i:i + 3], advantages[i:i + 3], total=8) for i in range(0, 8, 3))
    close("the sum of rloo_loss(..., total=8) over micro-batches of 3, 3, 2 against the loss of all 8", parts,
          whole, atol=1e-6)
    close("rloo_loss(log_probs[:3], advantages[:3], total=8)", rloo_loss(log_probs[:3], advantages[:3], total=8),
          -(advantages[:3] * log_probs[:3]).sum() / 8)
