"""Exercise 5 — Eq. 3, 5: rollout.soft_mean = softmax(logits/τ) E, against a float64 reference and autograd."""

import torch
from expect import close, equal

from rollout import soft_mean


def reference(logits, E, tau):
    return torch.softmax(logits.double() / tau, -1) @ E.double()


def test_equals_float64_reference_at_several_temperatures():
    torch.manual_seed(0)
    logits, E = torch.randn(2, 3, 11) * 3, torch.randn(11, 5)
    for tau in (1.0, 0.5, 0.1):
        mu = soft_mean(logits, E, tau)
        equal(f"soft_mean(logits, E, {tau}).dtype", mu.dtype, torch.float32)
        close(f"soft_mean(logits (2, 3, 11), E (11, 5), {tau}) against softmax(logits / tau) @ E in float64", mu,
              reference(logits, E, tau), atol=1e-5)


def test_hand_computed_two_tokens():
    E = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    logits = torch.tensor([[0.0, 0.0], [0.0, 2 * torch.log(torch.tensor(3.0))]])
    # τ = 1: p = (1/2, 1/2) -> (0.5, 1);  τ = 2 on logits (0, 2 ln 3): p = (1/4, 3/4) -> (0.25, 1.5)
    close("soft_mean([[0, 0]], E = [[1, 0], [0, 2]], 1.0)", soft_mean(logits[:1], E, 1.0),
          torch.tensor([[0.5, 1.0]]), atol=1e-6)
    close("soft_mean([[0, 2 ln 3]], E = [[1, 0], [0, 2]], 2.0)", soft_mean(logits[1:], E, 2.0),
          torch.tensor([[0.25, 1.5]]), atol=1e-6)


def test_fuzzy_temperature_gives_the_argmax_embedding_even_from_bf16_logits():
    torch.manual_seed(1)
    E = torch.randn(40, 6)
    logits = (torch.randn(8, 40) * 5).to(torch.bfloat16)   # 5/1e-4 overflows bf16 unless upcast first
    mu = soft_mean(logits, E, 1e-4)
    equal("soft_mean(bfloat16 logits, E, 1e-4) is finite everywhere", bool(torch.isfinite(mu).all()), True)
    close("soft_mean(bfloat16 logits, E, 1e-4) against the argmax token's row of E", mu,
          E[logits.float().argmax(-1)], atol=1e-6)


def test_float32_under_autocast():
    torch.manual_seed(2)
    logits, E = torch.randn(4, 64), torch.randn(64, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mu = soft_mean(logits, E, 0.5)
    equal("soft_mean(...).dtype under bfloat16 autocast", mu.dtype, torch.float32)
    close("soft_mean(logits, E, 0.5) under bfloat16 autocast against float64 (bfloat16 is off by ~1e-3)", mu,
          reference(logits, E, 0.5), atol=1e-5)


def test_gradient_equals_naive_form():
    torch.manual_seed(3)
    logits, E = torch.randn(3, 9, requires_grad=True), torch.randn(9, 4, requires_grad=True)
    weights = torch.randn(3, 4)
    (weights * soft_mean(logits, E, 0.5)).sum().backward()
    l64, E64 = logits.detach().double().requires_grad_(), E.detach().double().requires_grad_()
    (weights.double() * reference(l64, E64, 0.5)).sum().backward()
    close("the gradient of soft_mean(logits, E, 0.5) with respect to the logits", logits.grad, l64.grad,
          atol=1e-5)
    close("the gradient of soft_mean(logits, E, 0.5) with respect to E", E.grad, E64.grad, atol=1e-5)
