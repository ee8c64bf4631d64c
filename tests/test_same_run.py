"""tools/same_run.py, the check that a refactor changed no number: equal runs pass, any change is named."""

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from tools.same_run import main


def fake_run(folder, loss=1.5, weight=0.25, seconds=3.0):
    (folder / "last").mkdir(parents=True)
    rows = [{"step": 0, "val_accuracy": 0.1}, {"step": 1, "loss": loss, "rollout_s": seconds},
            {"step": 1, "summary": f"done, in {folder}"}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    save_file({"w": torch.full((2, 2), weight)}, str(folder / "last" / "model.safetensors"))
    return str(folder)


def test_equal_runs_pass_and_every_difference_is_named(tmp_path, capsys):
    a = fake_run(tmp_path / "a")
    assert main([a, fake_run(tmp_path / "b", seconds=9.0)]) == 0  # times and the run's own path aside
    assert main([a, fake_run(tmp_path / "c", loss=1.5000001)]) == 1
    assert "step 1: loss 1.5 against 1.5000001" in capsys.readouterr().out
    assert main([a, fake_run(tmp_path / "d", weight=0.25 + 2**-20)]) == 1
    assert "1 of 1 tensors differ" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "d" / "last")
    with pytest.raises(SystemExit, match="usage"):  # a run without last/ is no finished run
        main([a, str(tmp_path / "d")])
