"""Exercise 3 — §2: rollout.noise_scale = sigma × RMS(E), on hand-made embedding matrices."""

import math
from types import SimpleNamespace

import torch
import torch.nn as nn
from expect import close, equal

from rollout import noise_scale


def model_with(E: torch.Tensor):
    emb = nn.Embedding(*E.shape)
    with torch.no_grad():
        emb.weight.copy_(E)
    return SimpleNamespace(embed_tokens=emb)


def test_hand_computed():
    model = model_with(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))  # mean of squares 25/4: RMS 2.5
    value = noise_scale(model, 0.33)
    equal("the type of noise_scale's result", float if isinstance(value, float) else type(value), float)
    close("noise_scale(E = [[3, 4], [0, 0]], sigma = 0.33)", value, 0.825, rtol=0, atol=1e-6)
    close("noise_scale(E = [[3, 4], [0, 0]], sigma = 0)", noise_scale(model, 0.0), 0.0, rtol=0, atol=0)


def test_rms_of_all_entries_not_of_rows():
    E = torch.randn(50, 8, dtype=torch.float64) * torch.linspace(0.1, 3, 50, dtype=torch.float64)[:, None]
    expected = 2.0 * math.sqrt(sum(float(x) ** 2 for x in E.flatten()) / E.numel())
    close("noise_scale(E of rows with different scales, sigma = 2): the RMS of all entries",
          noise_scale(model_with(E.float()), 2.0), expected, rtol=1e-4, atol=0)


def test_bf16_embeddings_and_no_graph():
    E = torch.randn(300, 16)
    model = model_with(E)
    model.embed_tokens.to(torch.bfloat16)
    expected = 1.0 * E.to(torch.bfloat16).double().pow(2).mean().sqrt().item()
    close("noise_scale(bfloat16 E, sigma = 1): accumulated in float32, not bfloat16", noise_scale(model, 1.0),
          expected, rtol=1e-5, atol=0)
