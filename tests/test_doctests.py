"""The worked examples in the docstrings of the paper's functions (rloo.py, data.py, rollout.py) are run here."""

import doctest

import pytest

import data
import rloo
import rollout


@pytest.mark.parametrize("module", [rloo, data, rollout])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
