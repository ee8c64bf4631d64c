"""Lab 7, a diagnostic: train.py with the gradient of the CoT steps dropped, so only the answer tokens teach.

    python course/answer_only.py --dataset lab --mode soft --seed 0 --out-dir out-answer-only-s0  # train.py's flags

The loss (Eq. 13-14) weighs the log-probability of a whole trajectory: the CoT steps' (Eq. 10 for soft and
fuzzy: the Gaussian log-density of each noisy input) plus the answer tokens'. Here the CoT steps' terms keep their
values (the logged loss is unchanged) but are detached, so the update comes from the answer tokens alone. This is
*not* the paper's method: it stops crediting the CoT for the reward. It is a measurement: if soft training learns
once Eq. 10's gradient is gone, that gradient — a score function over d noisy coordinates per step, through the
τ = 0.5 softmax's Jacobian, 21-66 times the answer's norm on the lab (results/gradient_split.md) — is what drowns
the signal in a 25-step run. Measured (course/README.md, lab 7): without it soft rises on 2 seeds of 3 (best 0.30,
0.32 from 0.12); with it, one seed spikes and falls back. Everything else is train.py, unchanged.
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
import train  # noqa: E402
from rollout import STEP_COT, step_log_probs  # noqa: E402


def answer_only_log_prob(model, rollout, anchored: bool = True) -> torch.Tensor:
    """(N,) the values of rollout.log_prob, whose gradient comes from the answer steps alone."""
    terms = step_log_probs(model, rollout, anchored)                  # (N, S)
    cot = rollout.step_kinds == STEP_COT                              # (N, S)
    return torch.where(cot, terms.detach(), terms).sum(1)


if __name__ == "__main__":
    train.log_prob = answer_only_log_prob  # the name train.py calls for the update (Eq. 13-14)
    train.main()
