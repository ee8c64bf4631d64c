"""Exercise 8 — Eq. 11: data.reward, on hand-written completions (the checker itself, is_correct, is given)."""

from data import reward


def test_correct_boxed_answer_gets_100():
    assert reward("Three boxes of 4 is 12. The final answer is: \\boxed{12}.", "12") == 100.0
    assert reward("The final answer is: \\boxed{1,234}", "1234") == 100.0   # Math-Verify's equivalence


def test_wrong_boxed_answer_gets_10():
    assert reward("The final answer is: \\boxed{13}.", "12") == 10.0


def test_no_boxed_answer_gets_0():
    assert reward("The answer is 12.", "12") == 0.0
    assert reward("The final answer is: \\boxed{12", "12") == 0.0           # braces never close: truncated
    assert reward("", "12") == 0.0


def test_the_last_boxed_answer_counts():
    assert reward("Maybe \\boxed{7}? No: \\boxed{12}.", "12") == 100.0
    assert reward("Maybe \\boxed{12}? No: \\boxed{7}.", "12") == 10.0


def test_returns_a_float():
    assert isinstance(reward("\\boxed{12}", "12"), float)
