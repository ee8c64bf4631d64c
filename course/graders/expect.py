"""What a grader's failed check tells the student: the check, what their function gave, and what was expected.

The graders compare through these functions rather than a bare `assert`, so that a failure's first line reads
e.g. "rloo_advantages([[3.0, 1.0]]): got tensor([[ 1., -1.]]), expected tensor([[ 2., -2.]])": the line that
`python course/exercises.py grade` prints under its table for each failing exercise."""

import torch


def show(value) -> str:
    """`value` on one line (a tensor's repr spans several; its autograd suffix is noise here)."""
    if isinstance(value, torch.Tensor):
        value = value.detach()
    return " ".join(repr(value).split())


def close(what: str, got, expected, rtol: float = 1e-5, atol: float = 1e-8):
    """`got` has `expected`'s shape and equals it within torch.allclose's tolerance, both read as float64."""
    __tracebackhide__ = True  # pytest's report then ends at the grader's line, not in here
    try:
        got_64 = torch.as_tensor(got.detach() if isinstance(got, torch.Tensor) else got, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise AssertionError(f"{what}: got {show(got)}, expected {show(expected)}") from None
    expected_64 = torch.as_tensor(expected.detach() if isinstance(expected, torch.Tensor) else expected,
                                  dtype=torch.float64)
    if got_64.shape != expected_64.shape:
        raise AssertionError(f"{what}: got shape {tuple(got_64.shape)}, expected shape {tuple(expected_64.shape)}")
    if not torch.allclose(got_64, expected_64, rtol=rtol, atol=atol):
        raise AssertionError(f"{what}: got {show(got)}, expected {show(expected)}")


def equal(what: str, got, expected):
    """`got == expected` for plain Python values (numbers, lists, tuples, types)."""
    __tracebackhide__ = True
    if not got == expected:
        raise AssertionError(f"{what}: got {show(got)}, expected {show(expected)}")


def refuses(what: str, call, error: type):
    """`call()` raises `error`."""
    __tracebackhide__ = True
    try:
        got = call()
    except error:
        return
    raise AssertionError(f"{what}: got {show(got)}, expected {error.__name__}")
