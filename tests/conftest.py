import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: loads the default 135M model, spawns processes or ranks; "
                                       "`python -m pytest -q tests -m 'not slow'` runs the rest in about a minute")
