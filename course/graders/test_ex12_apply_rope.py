"""Exercise 12 (advanced) — RoPE: model.apply_rope, against a rotation of complex numbers and its
relative-position property."""

import torch
from expect import close

from model import apply_rope


def cos_sin(positions: torch.Tensor, head_dim: int, theta: float = 10000.0):
    """(B, T) positions -> cos, sin (B, 1, T, hd) in the Hugging Face layout (the two halves share angles)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = positions[..., None].double() * inv_freq                     # (B, T, hd/2)
    angles = torch.cat((angles, angles), -1)[:, None]                     # (B, 1, T, hd)
    return angles.cos(), angles.sin()


def complex_reference(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Pair coordinate i with i + hd/2 as one complex number and multiply it by e^{i·pos·θ_i}."""
    half = x.shape[-1] // 2
    inv_freq = 1.0 / 10000.0 ** (torch.arange(0, x.shape[-1], 2, dtype=torch.float64) / x.shape[-1])
    z = torch.complex(x[..., :half], x[..., half:])                       # (B, H, T, hd/2)
    rotated = z * torch.polar(torch.ones_like(inv_freq), positions[:, None, :, None].double() * inv_freq)
    return torch.cat((rotated.real, rotated.imag), -1)


def test_equals_complex_rotation():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 8, dtype=torch.float64)
    positions = torch.tensor([[0, 1, 2, 3, 4], [0, 0, 7, 8, 100]])       # e.g. a left-padded row
    cos, sin = cos_sin(positions, 8)
    close(f"apply_rope(x (2, 3, 5, 8), positions {positions.tolist()}) against rotating x_i + i x_(i+hd/2)",
          apply_rope(x, cos, sin), complex_reference(x, positions), atol=1e-10)


def test_position_zero_is_the_identity_and_norms_are_kept():
    x = torch.randn(1, 2, 4, 16, dtype=torch.float64)
    cos, sin = cos_sin(torch.zeros(1, 4), 16)
    close("apply_rope at position 0: the identity", apply_rope(x, cos, sin), x)
    cos, sin = cos_sin(torch.tensor([[3, 9, 27, 81]]), 16)
    close("the norm of each head vector after apply_rope: a rotation keeps it",
          apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1))


def test_scores_depend_only_on_the_distance():
    torch.manual_seed(1)
    q, k = torch.randn(1, 1, 1, 8, dtype=torch.float64), torch.randn(1, 1, 1, 8, dtype=torch.float64)

    def score(m, n):
        cq, sq = cos_sin(torch.tensor([[m]]), 8)
        ck, sk = cos_sin(torch.tensor([[n]]), 8)
        return float((apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum())

    close("the score of q at position 13 and k at 10 against q at 5 and k at 2: the same distance",
          score(13, 10), score(5, 2), rtol=0, atol=1e-9)
    close("the score of q and k both at position 0 against q . k", score(0, 0), float((q * k).sum()), rtol=0,
          atol=1e-9)
    gap = abs(score(5, 2) - score(2, 5))
    assert gap > 1e-6, "the scores of (q at 5, k at 2) and (q at 2, k at 5): got the same, expected them to differ"
