"""train.py --fsdp (FSDP2) on 2 gloo ranks on CPU: one step equals one process, a run killed after a checkpoint
resumes bit for bit, the gathered checkpoint loads in transformers; and the launch and resume errors."""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import checkpoint
import config
import distributed
import train
from model import load_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 2 prompts x 4 samples: each rank rolls out one prompt's group. Seed 3: one group has no reward spread, so its
# rank only runs zero-weight passes while the other learns. --val-size 1: rank 1 has no validation problem.
FAST = ["--dataset", "arithmetic", "--samples-per-prompt", "4", "--max-cot-tokens", "6", "--max-answer-tokens", "4",
        "--val-size", "1", "--warmup-steps", "1", "--lr", "1e-3", "--micro-batch", "3", "--seed", "3"]
TIMING = {"rollout_s", "update_s", "tokens_per_s", "saved"}  # metrics that may differ between identical runs
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(args, ranks=0):
    launch = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)] if ranks else []
    return subprocess.run([sys.executable, *launch, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=ENV)


def why(result) -> str:
    """A failed run's own traceback: torchrun prints its summary after the ranks' lines."""
    ranks = [line for line in result.stderr.splitlines() if line.startswith("[rank")]
    return "\n".join(ranks)[-3000:] or result.stderr[-3000:]


def weights(out_dir):
    return load_file(os.path.join(out_dir, "last", "model.safetensors"))


def metrics(out_dir):
    return [json.loads(line) for line in open(os.path.join(out_dir, "metrics.jsonl"))]


def saved_step(out_dir):
    try:
        return torch.load(os.path.join(out_dir, "last", "train_state.pt"), weights_only=True)["step"]
    except Exception:  # not there yet, or being replaced right now
        return -1


@pytest.mark.slow
def test_one_fsdp_step_on_two_ranks_equals_one_process_and_loads_in_transformers(answering_model, tmp_path):
    """One step of one process against FSDP on 2 ranks with activation checkpointing: the same parameters (atol
    1e-6) and metrics; the rank without signal ran zero-weight passes in step with the other one, and the rank
    without a validation problem took part in the gathers. last/ is a Hugging Face folder that transformers
    loads, with our logits, beside the sharded AdamW state."""
    common = ["train.py", "--model", answering_model, *FAST, "--steps", "1"]
    one = run([*common, "--out-dir", str(tmp_path / "one")])
    assert one.returncode == 0, why(one)
    two = run([*common, "--fsdp", "--activation-checkpointing", "--out-dir", str(tmp_path / "two")], ranks=2)
    assert two.returncode == 0, why(two)
    assert "world=2 (FSDP)" in two.stdout
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    before = load_file(os.path.join(answering_model, "model.safetensors"))
    assert sorted(a) == sorted(b) and all(not torch.equal(a[k], before[k]) for k in a)  # every tensor learned
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), (k, (a[k] - b[k]).abs().max())
    row_one, row_two = metrics(tmp_path / "one")[1], metrics(tmp_path / "two")[1]
    assert row_one["no_signal_groups"] == 0.5 and "val_accuracy" in row_one
    for key in ("reward", "loss", "loss_no_const", "grad_norm", "grad_norm_clipped", "val_accuracy"):
        assert row_one[key] == pytest.approx(row_two[key], rel=1e-5, abs=1e-6), key

    last = tmp_path / "two" / "last"
    assert torch.load(last / "train_state.pt", weights_only=True)["optimizer"] == {"fsdp_world": 2}
    assert (last / "optimizer" / ".metadata").exists() and not (tmp_path / "two" / "last.tmp").exists()
    import transformers
    hf = transformers.LlamaForCausalLM.from_pretrained(str(last), dtype=torch.float32).eval()
    ids = torch.randint(0, hf.config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (hf(ids).logits - load_model(str(last))(tokens=ids)).abs().max().item() < 1e-4


def kill_run(proc):
    """SIGKILL torchrun's workers (each in its own session) and then torchrun itself: a crash, nothing saved."""
    with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
        for pid in map(int, f.read().split()):
            os.kill(pid, signal.SIGKILL)
    proc.kill()
    proc.communicate()


@pytest.mark.slow
def test_fsdp_run_killed_after_a_checkpoint_resumes_bit_for_bit(answering_model, tmp_path):
    """4 steps with validations at 2 and 4: killed (SIGKILL) after the checkpoint of step 2 or 3, resumed with
    `--out-dir DIR --resume` alone, it ends with the weights and metrics of a straight run."""
    common = ["train.py", "--model", answering_model, *FAST, "--steps", "4", "--eval-every", "2", "--fsdp"]
    straight = run([*common, "--out-dir", str(tmp_path / "straight")], ranks=2)
    assert straight.returncode == 0, why(straight)

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             *common, "--save-every", "1", "--out-dir", str(killed)], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and saved_step(killed) < 2:
        time.sleep(0.05)
    kill_run(proc)
    at = saved_step(killed)
    assert 2 <= at < 4, "the run finished before it could be killed"
    assert (killed / "last" / "optimizer" / ".metadata").exists()

    resumed = run(["train.py", "--out-dir", str(killed), "--resume"], ranks=2)
    assert resumed.returncode == 0, why(resumed)
    assert f"at step {at}" in resumed.stdout and "(FSDP)" in resumed.stdout
    a, b = weights(tmp_path / "straight"), weights(killed)
    before = load_file(os.path.join(answering_model, "model.safetensors"))
    assert any(not torch.equal(a[k], before[k]) for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING} for r in rows]
    assert strip(metrics(tmp_path / "straight")) == strip(metrics(killed))


# --------------------------------------------------------------------------- errors, in-process and fast

def fake_last(out_dir, optimizer, **flags):
    """out_dir/last as train.py writes it, as far as main() reads before loading anything."""
    os.makedirs(out_dir / "last")
    (out_dir / "last" / "config.json").write_text("{}")
    stored = vars(config.get_args(["--out-dir", str(out_dir), *(f"--{k}" for k, v in flags.items() if v)]))
    torch.save({"optimizer": optimizer, "step": 1, "args": stored, "progress": {}}, out_dir / "last" / "train_state.pt")


def main_error(argv, world, monkeypatch) -> str:
    monkeypatch.setenv("WORLD_SIZE", str(world))
    with pytest.raises(SystemExit) as e:
        train.main(argv)
    return str(e.value)


def test_fsdp_without_ranks_fails_before_loading_anything(tmp_path, monkeypatch):
    assert "launch with torchrun --nproc_per_node N" in main_error(["--fsdp", "--out-dir", str(tmp_path)], 1,
                                                                   monkeypatch)
    assert not os.listdir(tmp_path)
    fake_last(tmp_path / "run", {"fsdp_world": 2}, fsdp=True)  # `python train.py --resume` of an FSDP run
    assert "launch with torchrun" in main_error(["--out-dir", str(tmp_path / "run"), "--resume"], 1, monkeypatch)


def test_an_fsdp_run_resumes_only_on_as_many_ranks(tmp_path, monkeypatch):
    fake_last(tmp_path, {"fsdp_world": 2}, fsdp=True)
    said = main_error(["--out-dir", str(tmp_path), "--resume"], 4, monkeypatch)
    assert "sharded over 2 ranks" in said and "torchrun --nproc_per_node 2 (this launch has 4)" in said


def test_fsdp_and_ddp_checkpoints_do_not_mix(tmp_path, monkeypatch, capsys):
    fake_last(tmp_path, {"state": {}, "param_groups": []})  # a DDP run: --fsdp on resume is a changed flag
    main_error(["--out-dir", str(tmp_path), "--resume", "--fsdp"], 2, monkeypatch)
    assert "--fsdp True (the run has False)" in capsys.readouterr().err
    # a checkpoint whose arguments predate --fsdp: its AdamW state says how it was saved
    args = argparse.Namespace(fsdp=True, out_dir="run")
    with pytest.raises(SystemExit, match="saved by a run without --fsdp .* resume it without --fsdp"):
        distributed.check_fsdp(args, {"optimizer": {"state": {}, "param_groups": []}}, 2)
    with pytest.raises(SystemExit, match="saved by a run with --fsdp .* resume it with --fsdp"):
        distributed.check_fsdp(argparse.Namespace(fsdp=False, out_dir="run"), {"optimizer": {"fsdp_world": 2}}, 2)


def test_a_checkpoint_replaces_one_whose_cleanup_was_killed(tmp_path):
    """A kill while last.old was being deleted (the window is wider under FSDP: last/optimizer/ is deleted too)
    left a half-deleted last.old beside a whole last/: the next save must not fail on it."""
    from model import ModelConfig, Transformer
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=50, dim=8, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=4,
                                    hidden_dim=16))
    (tmp_path / "tok").mkdir()
    checkpoint.save_checkpoint(str(tmp_path / "last"), model, str(tmp_path / "tok"))
    (tmp_path / "last.old" / "optimizer").mkdir(parents=True)
    (tmp_path / "last.old" / "optimizer" / "__1_0.distcp").write_bytes(b"half")
    checkpoint.save_checkpoint(str(tmp_path / "last"), model, str(tmp_path / "tok"))
    assert sorted(os.listdir(tmp_path)) == ["last", "tok"] and (tmp_path / "last" / "model.safetensors").exists()
