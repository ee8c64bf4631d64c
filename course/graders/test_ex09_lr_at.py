"""Exercise 9 — §5: train.lr_at, against hand-computed values and torch's own LinearLR + CosineAnnealingLR."""

import math
import warnings
from types import SimpleNamespace

import torch

from train import lr_at


def test_hand_computed():
    args = SimpleNamespace(lr=1e-3, warmup_steps=4, steps=12)
    assert math.isclose(lr_at(0, args), 2.5e-4)                     # warm-up: (i + 1) / warmup
    assert math.isclose(lr_at(3, args), 1e-3)                       # the peak ends the warm-up
    assert math.isclose(lr_at(4, args), 1e-3)                       # cosine starts at the peak
    assert math.isclose(lr_at(8, args), 5e-4)                       # half way through the cosine
    assert math.isclose(lr_at(12, args), 0.0, abs_tol=1e-15)        # and reaches 0 at `steps`


def test_no_warmup_and_warmup_as_long_as_the_run():
    assert math.isclose(lr_at(0, SimpleNamespace(lr=2.0, warmup_steps=0, steps=10)), 2.0)
    assert math.isclose(lr_at(5, SimpleNamespace(lr=2.0, warmup_steps=0, steps=10)), 1.0)
    args = SimpleNamespace(lr=1.0, warmup_steps=5, steps=5)           # no cosine part: no division by zero
    assert [round(lr_at(i, args), 12) for i in range(5)] == [0.2, 0.4, 0.6, 0.8, 1.0]


def test_equals_torch_schedulers():
    lr, warmup, steps = 3e-4, 5, 30
    args = SimpleNamespace(lr=lr, warmup_steps=warmup, steps=steps)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    schedule = torch.optim.lr_scheduler.SequentialLR(opt, [
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup - 1),
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps - warmup)], milestones=[warmup])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that no optimizer.step() ran before scheduler.step()
        for i in range(steps):
            assert math.isclose(lr_at(i, args), opt.param_groups[0]["lr"], rel_tol=1e-6, abs_tol=1e-12), i
            schedule.step()
