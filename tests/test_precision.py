"""precision.py refuses bad flags before loading a model (its measurements are exercised by test_rollout's bf16 tests)."""

import pytest

from tools import precision


@pytest.mark.parametrize("flags", [["--modes", "warm"], ["--parts", "speed"], ["--samples", "1"], ["--sigma", "nan"],
                                   ["--rounds", "0"]])
def test_bad_flags_fail_before_loading(flags, monkeypatch, capsys):
    monkeypatch.setattr(precision, "load_model", lambda *a, **k: pytest.fail("loaded a model"))
    with pytest.raises(SystemExit) as exit:
        precision.main(flags)
    err = capsys.readouterr().err
    assert exit.value.code == 2 and ("--modes from" in err or "--samples >= 2" in err), err
