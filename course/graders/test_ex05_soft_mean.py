"""Exercise 5 — Eq. 3, 5: rollout.soft_mean = softmax(logits/τ) E, against a float64 reference and autograd."""

import torch

from rollout import soft_mean


def reference(logits, E, tau):
    return torch.softmax(logits.double() / tau, -1) @ E.double()


def test_equals_float64_reference_at_several_temperatures():
    torch.manual_seed(0)
    logits, E = torch.randn(2, 3, 11) * 3, torch.randn(11, 5)
    for tau in (1.0, 0.5, 0.1):
        mu = soft_mean(logits, E, tau)
        assert mu.shape == (2, 3, 5) and mu.dtype == torch.float32
        assert torch.allclose(mu.double(), reference(logits, E, tau), atol=1e-5)


def test_hand_computed_two_tokens():
    E = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    logits = torch.tensor([[0.0, 0.0], [0.0, 2 * torch.log(torch.tensor(3.0))]])
    # τ = 1: p = (1/2, 1/2) -> (0.5, 1);  τ = 2 on logits (0, 2 ln 3): p = (1/4, 3/4) -> (0.25, 1.5)
    assert torch.allclose(soft_mean(logits[:1], E, 1.0), torch.tensor([[0.5, 1.0]]), atol=1e-6)
    assert torch.allclose(soft_mean(logits[1:], E, 2.0), torch.tensor([[0.25, 1.5]]), atol=1e-6)


def test_fuzzy_temperature_gives_the_argmax_embedding_even_from_bf16_logits():
    torch.manual_seed(1)
    E = torch.randn(40, 6)
    logits = (torch.randn(8, 40) * 5).to(torch.bfloat16)   # 5/1e-4 overflows bf16 unless upcast first
    mu = soft_mean(logits, E, 1e-4)
    assert torch.isfinite(mu).all()
    assert torch.allclose(mu, E[logits.float().argmax(-1)], atol=1e-6)


def test_float32_under_autocast():
    torch.manual_seed(2)
    logits, E = torch.randn(4, 64), torch.randn(64, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mu = soft_mean(logits, E, 0.5)
    assert mu.dtype == torch.float32
    assert torch.allclose(mu.double(), reference(logits, E, 0.5), atol=1e-5)  # bf16 would be off by ~1e-3


def test_gradient_equals_naive_form():
    torch.manual_seed(3)
    logits, E = torch.randn(3, 9, requires_grad=True), torch.randn(9, 4, requires_grad=True)
    weights = torch.randn(3, 4)
    (weights * soft_mean(logits, E, 0.5)).sum().backward()
    l64, E64 = logits.detach().double().requires_grad_(), E.detach().double().requires_grad_()
    (weights.double() * reference(l64, E64, 0.5)).sum().backward()
    assert torch.allclose(logits.grad.double(), l64.grad, atol=1e-5)
    assert torch.allclose(E.grad.double(), E64.grad, atol=1e-5)
