"""Exercise 9 — §5: train.lr_at, against hand-computed values and torch's own LinearLR + CosineAnnealingLR."""

import warnings
from types import SimpleNamespace

import torch
from expect import close

from train import lr_at


def check(i: int, lr: float, warmup_steps: int, steps: int, expected: float, why: str, rtol: float = 1e-9,
          atol: float = 0.0):
    args = SimpleNamespace(lr=lr, warmup_steps=warmup_steps, steps=steps)
    close(f"lr_at({i}, lr={lr}, warmup_steps={warmup_steps}, steps={steps}), {why}", lr_at(i, args), expected,
          rtol=rtol, atol=atol)


def test_hand_computed():
    check(0, 1e-3, 4, 12, 2.5e-4, "in the warm-up: lr (i + 1) / warmup_steps")
    check(3, 1e-3, 4, 12, 1e-3, "the peak ends the warm-up")
    check(4, 1e-3, 4, 12, 1e-3, "the cosine starts at the peak")
    check(8, 1e-3, 4, 12, 5e-4, "half way through the cosine")
    check(12, 1e-3, 4, 12, 0.0, "0 at `steps`", atol=1e-15)


def test_no_warmup_and_warmup_as_long_as_the_run():
    check(0, 2.0, 0, 10, 2.0, "no warm-up: the cosine starts at the peak")
    check(5, 2.0, 0, 10, 1.0, "no warm-up: half way through the cosine")
    for i in range(5):  # no cosine part: no division by zero
        check(i, 1.0, 5, 5, (i + 1) / 5, "a warm-up as long as the run", atol=1e-12)


def test_equals_torch_schedulers():
    lr, warmup, steps = 3e-4, 5, 30
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    schedule = torch.optim.lr_scheduler.SequentialLR(opt, [
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup - 1),
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps - warmup)], milestones=[warmup])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that no optimizer.step() ran before scheduler.step()
        for i in range(steps):
            check(i, lr, warmup, steps, opt.param_groups[0]["lr"], "against torch's LinearLR + CosineAnnealingLR",
                  rtol=1e-6, atol=1e-12)
            schedule.step()
