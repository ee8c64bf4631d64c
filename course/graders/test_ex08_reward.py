"""Exercise 8 — Eq. 11: data.reward, on hand-written completions (the checker itself, is_correct, is given)."""

from expect import equal

from data import reward


def check(completion: str, label: str, expected: float):
    equal(f"reward({completion!r}, {label!r})", reward(completion, label), expected)


def test_correct_boxed_answer_gets_100():
    check("Three boxes of 4 is 12. The final answer is: \\boxed{12}.", "12", 100.0)
    check("The final answer is: \\boxed{1,234}", "1234", 100.0)   # Math-Verify's equivalence


def test_wrong_boxed_answer_gets_10():
    check("The final answer is: \\boxed{13}.", "12", 10.0)


def test_no_boxed_answer_gets_0():
    check("The answer is 12.", "12", 0.0)
    check("The final answer is: \\boxed{12", "12", 0.0)           # braces never close: truncated
    check("", "12", 0.0)


def test_the_last_boxed_answer_counts():
    check("Maybe \\boxed{7}? No: \\boxed{12}.", "12", 100.0)
    check("Maybe \\boxed{12}? No: \\boxed{7}.", "12", 10.0)


def test_returns_a_float():
    value = reward("\\boxed{12}", "12")
    equal("the type of reward's result", float if isinstance(value, float) else type(value), float)
