"""tools/grad_snr.py: the pairwise estimator against brute force and against a known mean and noise, the CoT and
answer parts adding up to train.py's gradient for every mode, one-line refusals, and a whole run on a tiny model."""

import itertools
import json
import math

import pytest
import torch

from rloo import rloo_loss
from rollout import DEFAULT_TAU, log_prob
from tools import grad_snr

TINY_RUN = ["--prompts", "2", "--samples", "4", "--max-cot-tokens", "3"]


def test_pairwise_estimator_is_brute_force_and_unbiased():
    """g_i = μ + noise, noise ~ N(0, s² I) in d dimensions: E‖g‖² = ‖μ‖² + d s², and the pairwise estimate of ‖μ‖²
    has variance 2 d s⁴ / (K (K − 1)) + 4 s² ‖μ‖² / K. The square of the mean gradient would be off by d s² / K,
    many of those standard deviations here."""
    K, d, s = 8, 4000, 1.0
    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(d, generator=gen, dtype=torch.float64)
    mu *= math.sqrt(0.1 * d) / mu.norm()                                          # ‖μ‖² = 400, tr Σ = 4000
    g = mu + s * torch.randn(K, d, generator=gen, dtype=torch.float64)
    gram = g @ g.T
    mean_sq, signal = grad_snr.moments(gram)
    brute_pairs = [float(g[i] @ g[j]) for i, j in itertools.permutations(range(K), 2)]
    assert signal == pytest.approx(sum(brute_pairs) / len(brute_pairs), rel=1e-12)
    assert mean_sq == pytest.approx(float((g ** 2).sum(1).mean()), rel=1e-12)
    true_signal, true_mean_sq = float(mu @ mu), float(mu @ mu) + d * s**2
    sd_signal = math.sqrt(2 * d * s**4 / (K * (K - 1)) + 4 * s**2 * true_signal / K)
    sd_mean_sq = math.sqrt((2 * d * s**4 + 4 * s**2 * true_signal) / K)
    assert abs(signal - true_signal) < 4 * sd_signal
    assert abs(float(g.mean(0) @ g.mean(0)) - true_signal) > 4 * sd_signal         # the biased estimate is caught
    assert abs(mean_sq - true_mean_sq) < 4 * sd_mean_sq
    cos = grad_snr.cosine(gram)
    assert grad_snr.snr2(cos) == pytest.approx(signal / (mean_sq - signal))       # ‖E g‖² / tr Cov
    # the jackknife's error is of the size the cosine's known spread has (its delta-method sd)
    assert 0.3 < grad_snr.jackknife_se(gram) / (sd_signal / true_mean_sq) < 3
    # n_T = n · T / SNR²: doubling the target doubles it; no signal needs infinitely many
    assert grad_snr.rollouts_needed(cos, 32, 2.0) == pytest.approx(2 * grad_snr.rollouts_needed(cos, 32, 1.0))
    assert grad_snr.rollouts_needed(-0.01, 32, 1.0) == math.inf


@pytest.mark.parametrize("mode", list(DEFAULT_TAU))
def test_parts_add_up_to_the_step_gradient(mode, answering_model, torch_one_thread):
    from model import load_model
    from tokenizer import load_tokenizer
    from data import load_dataset
    model, tok = load_model(answering_model).eval(), load_tokenizer(answering_model)
    args = grad_snr.parse_args(["--mode", mode, *TINY_RUN])
    train_set = load_dataset("lab", "train")
    roll, rewards, advantages = grad_snr.step_batch(model, tok, train_set, [0, 1], 1, args)
    assert advantages.abs().sum() > 0, "no reward spread: the test would compare zeros"
    E = model.embed_tokens.weight
    params = [E] + [p for p in model.parameters() if p is not E]
    parts = grad_snr.part_gradients(model, roll, advantages, params, micro_batch=3)   # 8 rows: chunks of 3, 3, 2
    step = torch.autograd.grad(rloo_loss(log_prob(model, roll), advantages), params)  # train.py's, in one piece
    whole = torch.cat([g.flatten() for g in step])
    assert torch.allclose(parts["cot"] + parts["answer"], whole, rtol=1e-4, atol=1e-6 * whole.abs().max())
    # gumbel's CoT part is zero here: the tiny model's top-p keeps one id per step, whose log p' = 0 is constant
    assert parts["answer"].norm() > 0 and (parts["cot"].norm() > 0 or mode == "gumbel")
    assert torch.equal(whole[:E.numel()], step[0].flatten())                         # the embeddings come first


@pytest.mark.parametrize("flags", [["--mode", "warm"], ["--mode", "soft", "--sigma", "0"],
                                   ["--mode", "hard", "--batches", "2"], ["--mode", "hard", "--samples", "1"],
                                   ["--mode", "fuzzy", "--tau", "0"],
                                   ["--mode", "hard", "--target-snr2", "0"], ["--mode", "hard", "--output", "x.txt"],
                                   ["--mode", "soft", "--sigma", "nan"]])
def test_bad_flags_fail_in_one_line_before_loading(flags, monkeypatch, capsys):
    for name in ("load_dataset", "load_model", "resolve_model"):
        monkeypatch.setattr(grad_snr, name, lambda *a, **k: pytest.fail("loaded something"))
    with pytest.raises(SystemExit) as exit:
        grad_snr.main(flags)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit.value.code == 2 and ": error: " in err[-1] and flags[-2] in err[-1], err   # one line naming the flag


def test_a_run_writes_consistent_tables(answering_model, tmp_path, torch_one_thread, capsys):
    out = tmp_path / "snr.md"
    grad_snr.main(["--model", answering_model, "--mode", "soft", "--batches", "3", *TINY_RUN, "--output", str(out)])
    record = json.loads((tmp_path / "snr.json").read_text())
    rows = {(r["group"], r["part"]): r for r in record["rows"]}
    assert len(rows) == 9 and "| transformer | whole |" in out.read_text()
    assert "| all | cot |" in capsys.readouterr().out
    for part in ("cot", "answer", "whole"):   # norms and pair products add over the groups
        for key in ("mean_sq_norm", "signal"):
            by_group = rows["embeddings", part][key] + rows["transformer", part][key]
            assert rows["all", part][key] == pytest.approx(by_group)
    dots = torch.tensor(record["dots"])        # (groups, parts, parts, K, K): symmetric Gram matrices
    assert torch.allclose(dots, dots.permute(0, 2, 1, 4, 3), rtol=1e-12)
    assert rows["all", "whole"]["mean_sq_norm"] > 0
