"""Exercise 11 (advanced) — §3: rollout.StopMatcher's table, against a brute-force "does the text end with a
prefix of the stop text" check on random token sequences."""

import random

import torch
from expect import equal

from rollout import STOP_TEXT, StopMatcher

PIECES = [b"", b"The final answer is:", b"The", b" final", b" answer", b" is", b":", b" is:", b" ", b"Th",
          b"e f", b"inal", b" ans", b"wer is", b"{", b"}", b"{}", b"\\boxed{", b"a", b"ab", b"aba", b"b",
          b"abab", b"x", b"\xe2\x82", b"\xac", b"}}{"]


def longest_prefix_suffix(text: bytes, pattern: bytes) -> int:
    return max(k for k in range(len(pattern) + 1) if text.endswith(pattern[:k]))


def check(pattern: str, seed: int):
    matcher = StopMatcher(PIECES, "cpu", stop_text=pattern) if pattern != STOP_TEXT else StopMatcher(PIECES, "cpu")
    m = len(pattern.encode())
    equal(f"StopMatcher(stop_text={pattern!r}).done_state", matcher.done_state, m)
    equal(f"StopMatcher(stop_text={pattern!r}).table's shape", tuple(matcher.table.shape), (m + 1, len(PIECES)))
    rnd = random.Random(seed)
    for _ in range(150):
        text, state = b"", 0
        for _ in range(rnd.randint(1, 12)):
            token = rnd.randrange(len(PIECES))
            text += PIECES[token]
            state = int(matcher.table[state, token])
            equal(f"the state after the text {text!r} (stop text {pattern!r}): the length of the longest prefix "
                  "of the stop text that the text ends with", state, longest_prefix_suffix(text, pattern.encode()))


def test_paper_stop_text():
    check(STOP_TEXT, 0)


def test_self_overlapping_stop_texts_need_the_kmp_fallback():
    check("abab", 1)
    check("aba", 2)


def test_every_state_and_token_against_brute_force():
    """From each state s (the text so far ends with pattern[:s]) and each token, the next state."""
    pattern = b"abab"
    matcher = StopMatcher(PIECES, "cpu", stop_text=pattern.decode())
    for s in range(len(pattern) + 1):
        for t, piece in enumerate(PIECES):
            equal(f"table[{s}, token {piece!r}] for the stop text 'abab'", int(matcher.table[s, t]),
                  longest_prefix_suffix(pattern[:s] + piece, pattern))


def test_brace_balance_of_each_token():
    matcher = StopMatcher(PIECES, "cpu")
    expected = [p.count(b"{") - p.count(b"}") for p in PIECES]
    equal("brace_delta: each token's count of '{' minus '}'", torch.as_tensor(matcher.brace_delta).tolist(),
          expected)
