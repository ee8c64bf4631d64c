"""bench.py: the CPU smoke run prints every method and writes positive numbers, and the transformers comparison
runs on the same weights (greedy decoding agrees token for token)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from bench import SHAPES, SyntheticTokenizer, build_models, fixed_length_matcher, main
from rollout import PREFILL_BUDGET, STEP_COT, generate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def one_thread():
    """Tiny matmuls gain nothing from threads, and a busy machine (tests in parallel) makes every OpenMP
    barrier wait for a descheduled thread: one thread is faster and steadier."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {**os.environ, "OMP_NUM_THREADS": "1"}
    torch.set_num_threads(before)


def test_tiny_run_prints_every_method_and_writes_positive_numbers(tmp_path, one_thread):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "bench.py", "--tiny", "--device", "cpu", "--batch", "2,3", "--prompt-len", "5",
           "--cot", "4", "--answer", "2", "--train-cot", "4", "--train-samples", "4", "--micro-batch", "2",
           "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=one_thread)
    assert proc.returncode == 0, proc.stderr
    for batch in (2, 3):
        for method in ("hard", "soft", "fuzzy", "transformers"):
            assert f"| tiny | {batch} | {method} |" in proc.stdout
    for part in ("rollout", "log-prob forward", "backward", "optimizer", "total"):
        assert f"| {part} |" in proc.stdout

    report = json.loads(out.read_text())
    assert report["device"] and report["torch"] == torch.__version__ and "--tiny" in report["command"]
    assert len(report["rollouts"]) == 8
    for row in report["rollouts"]:
        assert row["tokens_per_s"] > 0 and row["ms_per_step"] > 0 and row["peak_gib"] > 0
        assert row["vs_transformers"] > 0
        # transformers generates CoT + answer tokens; ours also steps through the prefill between them
        prefill = len(SyntheticTokenizer(512).encode(PREFILL_BUDGET)) if row["method"] != "transformers" else 0
        assert row["steps"] == 4 + 2 + prefill
    train = report["train_step"]
    assert set(train["seconds"]) == {"rollout", "log-prob forward", "backward", "optimizer"}
    assert all(v > 0 for v in train["seconds"].values()) and train["peak_gib"] > 0


def test_greedy_rollout_matches_transformers_on_the_same_weights(one_thread):
    cfg = SHAPES["tiny"]
    model, hf = build_models(cfg, "cpu", torch.float32, with_transformers=True, seed=3)
    tok = SyntheticTokenizer(cfg.vocab_size)
    prompts = torch.randint(0, cfg.vocab_size, (3, 7), generator=torch.Generator().manual_seed(1))
    n = 12
    r = generate(model, tok, prompts.tolist(), "hard", tau=0.0, answer_tau=0.0, max_cot_tokens=n,
                 max_answer_tokens=2, matcher=fixed_length_matcher(cfg.vocab_size, "cpu"))
    assert (r.step_kinds[:, :n] == STEP_COT).all()
    with torch.no_grad():
        theirs = hf.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=False, max_new_tokens=n,
                             min_new_tokens=n, pad_token_id=tok.pad_id, eos_token_id=tok.eos_id)[:, prompts.shape[1]:]
    assert torch.equal(r.tokens[:, :n], theirs)
    # greedy tokens of a random tied model often repeat, so also compare full logits at every position
    ids = torch.randint(0, cfg.vocab_size, (2, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours, theirs = model(tokens=ids), hf(ids).logits
    assert (ours - theirs).abs().max() < 1e-4 * ours.abs().max()
    with torch.no_grad():  # and the comparison is not vacuous: another seed gives other weights
        assert (build_models(cfg, "cpu", torch.float32, False, seed=4)[0](tokens=ids) - theirs).abs().max() > 1


def test_synthetic_tokenizer_round_trips_and_keeps_prefills_short():
    tok = SyntheticTokenizer(1000)
    assert len(tok.token_bytes) == tok.vocab_size == 1001 and tok.eos_id == 1000  # EOS: outside the model's vocab
    ids = tok.encode(PREFILL_BUDGET)
    assert tok.decode(ids) == PREFILL_BUDGET and len(ids) <= 6
    assert tok.decode(tok.encode("héllo {x}")) == "héllo {x}"


def test_unknown_shape_or_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown shape"):
        main(["--shapes", "gpt-5", "--device", "cpu"])
    with pytest.raises(ValueError, match="--modes"):
        main(["--tiny", "--modes", "hard,warm", "--device", "cpu"])
