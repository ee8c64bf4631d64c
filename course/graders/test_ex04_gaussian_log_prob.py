"""Exercise 4 — Eq. 10: rollout.gaussian_log_prob against torch.distributions and hand-computed values."""

import math

import torch
from expect import close

from rollout import gaussian_log_prob


def test_equals_torch_distributions():
    torch.manual_seed(0)
    x, mean = torch.randn(3, 5, 7, dtype=torch.float64), torch.randn(3, 5, 7, dtype=torch.float64)
    for sigma in (0.05, 0.33, 2.0):
        reference = torch.distributions.Normal(mean, sigma).log_prob(x).sum(-1)
        ours = gaussian_log_prob(x, mean, sigma)
        close(f"gaussian_log_prob(x, mean, {sigma}) on (3, 5, 7) inputs against torch.distributions.Normal",
              ours, reference, rtol=1e-10, atol=1e-9)
        mvn = torch.distributions.MultivariateNormal(mean[0, 0], sigma**2 * torch.eye(7, dtype=torch.float64))
        close(f"gaussian_log_prob(x, mean, {sigma})[0, 0] against torch.distributions.MultivariateNormal",
              ours[0, 0], mvn.log_prob(x[0, 0]), rtol=0, atol=1e-9)


def test_at_the_mean_only_the_constant_is_left():
    d, sigma = 4, 0.5
    x = torch.ones(d)
    expected = -0.5 * d * math.log(2 * math.pi * sigma**2)   # the constant of Eq. 10 is kept
    close("gaussian_log_prob(x, x, 0.5) with d = 4: only the constant -d/2 log(2 pi sigma^2)",
          gaussian_log_prob(x, x.clone(), sigma), expected, rtol=0, atol=1e-6)


def test_gradient_wrt_mean_is_residual_over_variance():
    x = torch.randn(6, 3)
    mean = torch.randn(6, 3, requires_grad=True)
    gaussian_log_prob(x, mean, 0.7).sum().backward()
    close("d gaussian_log_prob(x, mean, 0.7) / d mean: (x - mean) / 0.49", mean.grad, (x - mean.detach()) / 0.49,
          atol=1e-5)
