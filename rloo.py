"""REINFORCE with a leave-one-out baseline (RLOO), docs/paper.md §5 (Eq. 12-14).

For prompt b with G samples and rewards r_{b,1..G}:
    A_{b,g} = r_{b,g} - mean_{j≠g} r_{b,j}                              (Eq. 12, no gradient)
    L = -(1 / BG) Σ_{b,g} A_{b,g} · ℓ_{b,g},   ℓ = Σ over CoT and answer steps of log π   (Eq. 13-14)
A sum over each sequence (no per-token normalisation), no KL term, no importance ratio, no clipping.
"""

import torch


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """rewards (B, G) -> advantages (B, G). The baseline of a sample is the mean of the *other* G-1.

    >>> rloo_advantages(torch.tensor([[100., 0., 10., 10.]]))  # 100 - (0 + 10 + 10) / 3 = 93.33, ...
    tensor([[ 93.3333, -40.0000, -26.6667, -26.6667]])
    """
    G = rewards.shape[-1]
    if G < 2:
        raise ValueError("RLOO needs at least 2 samples per prompt")
    others_mean = (rewards.sum(-1, keepdim=True) - rewards) / (G - 1)
    return rewards - others_mean


def rloo_loss(log_probs: torch.Tensor, advantages: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """-(1/total) Σ A_i · log π(traj_i). `total` is B·G of the whole step when this is one micro-batch of it,
    so that the micro-batch losses add up to the loss of the step.

    >>> rloo_loss(torch.tensor([-2.0, -1.0]), torch.tensor([1.0, -1.0]))  # -(1·(-2) + (-1)·(-1)) / 2
    tensor(0.5000)
    """
    total = log_probs.numel() if total is None else total
    return -(advantages.detach() * log_probs).sum() / total
