"""rloo.py: advantages against hand-computed values, and the loss gradient against per-sample autograd."""

import pytest
import torch

from rloo import rloo_advantages, rloo_loss
from rollout import generate, log_prob
from toy import PROMPTS, ToyTokenizer, error_at_scale, tiny_model


def test_advantages_hand_computed():
    rewards = torch.tensor([[100.0, 10.0, 0.0, 10.0], [0.0, 0.0, 0.0, 100.0]])
    # sample 0 of group 0: 100 - (10 + 0 + 10) / 3
    want = torch.tensor([[100 - 20 / 3, 10 - 110 / 3, 0 - 120 / 3, 10 - 110 / 3],
                         [0 - 100 / 3, 0 - 100 / 3, 0 - 100 / 3, 100 - 0]])
    assert torch.allclose(rloo_advantages(rewards), want)


def test_advantages_invariant_to_a_constant_and_zero_without_spread():
    rewards = torch.rand(3, 8) * 100
    assert torch.allclose(rloo_advantages(rewards + 37.0), rloo_advantages(rewards), atol=1e-4)
    assert torch.equal(rloo_advantages(torch.full((2, 5), 10.0)), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="at least 2 samples"):
        rloo_advantages(torch.ones(2, 1))


def test_loss_gradient_equals_mean_of_advantage_weighted_score_functions():
    model, tok = tiny_model(seed=1), ToyTokenizer()
    r = generate(model, tok, PROMPTS[:2], "fuzzy", samples_per_prompt=3, max_cot_tokens=6, max_answer_tokens=4, seed=3)
    rewards = torch.tensor([[100.0, 10.0, 0.0], [10.0, 10.0, 100.0]])
    adv = rloo_advantages(rewards).flatten()
    params = list(model.parameters())

    # independently: -(1/N) Σ_i A_i ∇ log π_i, one trajectory at a time
    want = [torch.zeros_like(p) for p in params]
    for i in range(6):
        grads = torch.autograd.grad(log_prob(model, r.select([i]))[0], params, allow_unused=True)
        for w, g in zip(want, grads):
            if g is not None:
                w -= adv[i] * g / 6

    # the training path: micro-batches of 4 and 2 whose losses add up to the step's loss
    model.zero_grad()
    for rows in ([0, 1, 2, 3], [4, 5]):
        rloo_loss(log_prob(model, r.select(rows)), adv[rows], total=6).backward()
    # float32 in both, summed in other orders (see error_at_scale): ~1e-6 of the largest entry apart; a row counted
    # twice or a micro-batch divided by its own size instead of `total` is off by a whole row's share, ~1e-1.
    assert error_at_scale([p.grad for p in params], want) < 1e-5
    assert sum(w.abs().sum() for w in want) > 0
