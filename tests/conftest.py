import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: loads the default 135M model, spawns processes or ranks; "
                                       "`python -m pytest -q tests -m 'not slow'` runs the rest in about a minute")


@pytest.fixture
def torch_one_thread():
    """Tiny matrices: one thread avoids OpenMP spin-waits, which cost up to 100x on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
