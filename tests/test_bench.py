"""bench.py: `--tiny` finishes in seconds and prints every figure as a median with its min–max, the JSON holds the
numbers behind them, and the transformers comparison runs on the same weights (greedy decoding agrees token for
token)."""

import json
import os
import statistics
import subprocess
import sys
import time

import pytest
import torch

from tools.bench import SHAPES, TINY, SyntheticTokenizer, build_models, fixed_length_matcher, main, parse_args
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


@pytest.mark.slow
def test_tiny_run_finishes_quickly_and_prints_medians_with_spreads(tmp_path, one_thread):
    out = tmp_path / "bench.json"
    start = time.perf_counter()
    cmd = [sys.executable, "tools/bench.py", "--tiny", "--device", "cpu", "--repeats", "3", "--compile", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240, env=one_thread)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert seconds < 180, f"bench.py --tiny took {seconds:.0f} s"  # ~30 s on 2 idle cores, 20 of them compiling
    assert "median [min–max] of 3 runs after a warm-up" in proc.stdout
    for method in ("hard", "soft", "fuzzy", "hard compiled", "soft compiled", "fuzzy compiled", "transformers"):
        cells = next(line for line in proc.stdout.splitlines() if line.startswith(f"| tiny | 4 | {method} |"))
        cells = [c.strip() for c in cells.strip("|").split("|")]
        ms, (ms_lo, ms_hi) = float(cells[5]), map(float, cells[6].split("–"))
        assert ms_lo <= ms <= ms_hi
        ratio, (ratio_lo, ratio_hi) = float(cells[7].rstrip("x")), (float(v.rstrip("x")) for v in cells[8].split("–"))
        assert ratio_lo <= ratio <= ratio_hi
    for part in ("rollout", "log-prob forward", "log-prob backward", "optimizer", "total"):
        cells = next(line for line in proc.stdout.splitlines() if line.startswith(f"| {part} |")).split("|")
        lo, hi = map(float, cells[3].split("–"))
        assert 0 < lo <= float(cells[2]) <= hi
    assert "the same update with every row re-encoding its prompt" in proc.stdout  # before / after, side by side

    report = json.loads(out.read_text())
    assert report["device"] and report["torch"] == torch.__version__ and "--tiny" in report["command"]
    assert len(report["rollouts"]) == 7
    assert max(r["first_call_s"] for r in report["rollouts"] if r["method"].endswith("compiled")) > 1  # compiling
    theirs = next(r for r in report["rollouts"] if r["method"] == "transformers")
    for row in report["rollouts"]:
        assert row["repeats"] == 3 and len(row["ms_per_step_all"]) == 3 and min(row["ms_per_step_all"]) > 0
        assert row["ms_per_step"] == statistics.median(row["ms_per_step_all"])
        assert row["tokens_per_s"] == pytest.approx(1000 * 4 / row["ms_per_step"]) and row["peak_gib"] > 0
        # the ratio is taken within each round (the methods take turns), then the median over rounds
        ratios = [t / o for t, o in zip(theirs["ms_per_step_all"], row["ms_per_step_all"])]
        assert row["vs_transformers_all"] == pytest.approx(ratios)
        assert row["vs_transformers"] == pytest.approx(statistics.median(ratios))
        # transformers generates CoT + answer tokens; ours also steps through the prefill between them
        prefill = len(SyntheticTokenizer(512).encode(PREFILL_BUDGET)) if row["method"] != "transformers" else 0
        assert row["steps"] == 16 + 4 + prefill
    train = report["train_step"]
    assert set(train["seconds"]) == {"rollout", "log-prob forward", "log-prob backward", "optimizer"}
    assert set(train["before_seconds"]) == {"update without prompt sharing: forward", "update without prompt sharing: backward"}
    for part, runs in train["seconds_all"].items():
        assert len(runs) == 3 and min(runs) > 0 and train["seconds"][part] == statistics.median(runs)
    assert train["total_s"] == statistics.median(train["total_s_all"]) and train["peak_gib"] > 0


def test_tiny_sets_small_defaults_but_explicit_flags_win():
    args = parse_args(["--tiny", "--batch", "2,3", "--cot", "5"])
    assert (args.shapes, args.train_shape, args.batch, args.cot, args.answer, args.threads) == \
        ("tiny", "tiny", "2,3", 5, TINY["answer"], 1)
    full = parse_args([])
    assert (full.shapes, full.batch, full.cot, full.threads) == ("smollm2-135m,llama-3.2-3b", "32,256", 256, None)
    with pytest.raises(ValueError, match="--repeats"):
        parse_args(["--tiny", "--repeats", "0"])


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
    assert torch.equal(r.tokens[:, :n], theirs)  # exact: no top-2 logit margin on these paths is below 3.7
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


@pytest.mark.slow  # a subprocess each: the command line as a user meets it
@pytest.mark.parametrize("flags, message", [
    (["--shapes", "nonsense"], "unknown shape 'nonsense'"),
    (["--tiny", "--batch", "32,lots"], "--batch must be comma-separated integers"),
    (["--tiny", "--repeats", "0"], "--repeats must be at least 1"),
])
def test_a_bad_flag_is_a_one_line_usage_error_not_a_traceback(flags, message):
    proc = subprocess.run([sys.executable, "tools/bench.py", "--device", "cpu", *flags], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.splitlines()[-1]  # after argparse's usage line
    assert last.startswith("bench.py: error: ") and message in last and not proc.stdout
