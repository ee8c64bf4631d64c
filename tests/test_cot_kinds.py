"""rollout.py's CoT kinds from other methods (docs/paper.md §9): gumbel (SofT-GRPO) and multiplex (Multiplex
Thinking). For each: its log-density against torch.distributions, generation's log π against the teacher-forced
one, the update's gradient against a float64 step-by-step reference, its draws against the distribution they
come from, bf16 against fp32; and what the kinds share with the paper's (per-prompt seeds, greedy variants)."""

import copy
import dataclasses
import math

import pytest
import torch

from rollout import (KINDS, STEP_ANSWER, STEP_COT, STEP_PAD, Rollout, generate, gumbel_log_prob, log_prob,
                     step_log_probs)
from test_rollout import stopping_model
from toy import PROMPTS, ToyTokenizer, tiny_model

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # see conftest.py
NEW_KINDS = ["gumbel", "multiplex"]
GUMBEL, MULTIPLEX = KINDS["gumbel"], KINDS["multiplex"]


def one_step_rollout(tau: float, **records) -> Rollout:
    """A Rollout of N rows with one CoT step each, holding only what a kind's log_density reads."""
    n = next(iter(records.values())).shape[0]
    empty = {f.name: None for f in dataclasses.fields(Rollout)}
    return Rollout(**{**empty, "tau": tau, "step_kinds": torch.full((n, 1), STEP_COT),
                      **{name: value[:, None] for name, value in records.items()}})


def kept_p(logits: torch.Tensor, ids: torch.Tensor, kept: torch.Tensor, tau: float) -> torch.Tensor:
    """p' from scratch, float64: softmax over the whole vocabulary at T, restricted to the kept ids, renormalised."""
    p = torch.softmax(logits.double() / tau, -1).gather(-1, ids) * kept
    return p / p.sum(-1, keepdim=True)


# --------------------------------------------------------------------------- the densities against torch.distributions

@pytest.mark.parametrize("tau", [1.0, 0.7])
def test_gumbel_density_is_the_gumbel_log_prob_of_the_perturbed_log_probs(tau):
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(256, 40, generator=g)
    ids, kept = GUMBEL.kept_top(logits, tau)
    # the kept set: the shortest prefix of the top 5 (renormalised) whose mass reaches top_p
    p5 = torch.softmax(logits.double() / tau, -1).gather(-1, ids)
    p5 = p5 / p5.sum(-1, keepdim=True)
    mass, last = (p5 * kept).sum(-1), p5.gather(-1, kept.sum(-1, keepdim=True) - 1)[:, 0]
    assert (mass >= GUMBEL.top_p - 1e-6).all() and (mass - last < GUMBEL.top_p).all()
    assert (~kept).any() and (kept.sum(-1) > 1).any()      # cut ids and several kept ids both occur
    p = kept_p(logits, ids, kept, tau)
    noise = torch.distributions.Gumbel(0.0, 1.0).sample(ids.shape)
    y = torch.where(kept, p.log() + noise, -math.inf).float()
    want = (torch.distributions.Gumbel(p.log().masked_fill(~kept, 0), 1.0).log_prob(y.double().masked_fill(~kept, 0))
            * kept).sum(-1)
    r = one_step_rollout(tau, cot_ids=ids, cot_log_p=GUMBEL.log_p_kept(logits, ids, kept, tau), cot_perturbed=y)
    cot = r.step_kinds == STEP_COT
    for anchored in (True, False):  # the same value both ways: the anchor is this very point
        got = GUMBEL.log_density(logits, None, r, cot, anchored)
        assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-4), (got.double() - want).abs().max()
    assert torch.allclose(gumbel_log_prob(y, r.cot_log_p[:, 0], kept).double(), want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("tau", [1.0, 0.7])
def test_multiplex_density_is_the_categorical_log_prob_of_the_k_draws(tau):
    g = torch.Generator().manual_seed(1)
    logits = 2 * torch.randn(256, 40, generator=g)
    draws = torch.multinomial(torch.softmax(logits / tau, -1), MULTIPLEX.width, replacement=True, generator=g)
    want = torch.distributions.Categorical(logits=logits.double() / tau).log_prob(draws.T).sum(0)
    r = one_step_rollout(tau, cot_ids=draws)
    got = MULTIPLEX.log_density(logits, None, r, r.step_kinds == STEP_COT, True)
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-4), (got.double() - want).abs().max()


# --------------------------------------------------------------------------- generation against the teacher-forced pass

@pytest.mark.parametrize("mode", NEW_KINDS)
def test_generation_logp_equals_teacher_forced_log_prob(mode):
    model, tok = stopping_model(), ToyTokenizer()
    r = generate(model, tok, PROMPTS, mode, samples_per_prompt=8, max_cot_tokens=12, max_answer_tokens=6, seed=1)
    assert (r.cot_lens < 12).any() and (r.cot_lens == 12).any()   # rows that stop early and rows at the budget
    assert (r.answer_lens < 6).any()
    with torch.no_grad():
        teacher = log_prob(model, r)
        as_written = log_prob(model, r, anchored=False)  # gumbel: the density at the teacher-forced log p'
        steps = step_log_probs(model, r)
    actions = (r.step_kinds == STEP_COT) | (r.step_kinds == STEP_ANSWER)
    assert (steps[~actions] == 0).all() and (steps[actions] != 0).all() and torch.equal(steps.sum(1), teacher)
    assert torch.allclose(r.logp, teacher, rtol=1e-4, atol=1e-3), (r.logp - teacher).abs().max()
    assert torch.allclose(r.logp, as_written, rtol=1e-4, atol=1e-3), (r.logp - as_written).abs().max()
    rows = [0, 5, 17, 23]  # select() carries the kind's records
    with torch.no_grad():
        assert torch.allclose(log_prob(model, r.select(rows)), teacher[rows], rtol=1e-5, atol=1e-4)


def reference_cot_log_prob(logits, r, b, s):
    """One CoT step's log-density with torch.distributions, from the step's float64 logits."""
    ids = r.cot_ids[b, s]
    if r.mode == "multiplex":  # K categorical draws
        return torch.distributions.Categorical(logits=logits / r.tau).log_prob(ids).sum()
    kept = r.cot_log_p[b, s] > -math.inf
    p = kept_p(logits, ids, kept, r.tau)[kept]
    return torch.distributions.Gumbel(p.log(), 1.0).log_prob(r.cot_perturbed[b, s][kept].double()).sum()


def reference_log_prob(model, r):
    """Row by row, step by step, no cache, no padding: the CoT densities and the answer log-probs, summed."""
    E, total = model.embed_tokens.weight, []
    for b in range(r.tokens.shape[0]):
        inputs, lp = [E[t] for t in r.prompt_ids[b, r.pad_lens[b]:]], 0.0
        for s in range(r.tokens.shape[1]):
            kind, token = int(r.step_kinds[b, s]), r.tokens[b, s]
            if kind == STEP_PAD:
                break
            logits = model(embeds=torch.stack(inputs)[None])[0, -1]
            if kind == STEP_COT:
                lp = lp + reference_cot_log_prob(logits, r, b, s)
            elif kind == STEP_ANSWER:
                lp = lp + torch.distributions.Categorical(logits=logits / r.answer_tau).log_prob(token)
            inputs.append(r.cot_embeds[b, s].to(E.dtype) if kind == STEP_COT else E[token])  # the recorded input
        total.append(lp)
    return torch.stack(total)


@pytest.mark.parametrize("mode,anchored", [("gumbel", True), ("gumbel", False), ("multiplex", True)])
def test_log_prob_gradient_equals_float64_step_by_step_reference(mode, anchored):
    model, tok = tiny_model(seed=3), ToyTokenizer()
    r = generate(model, tok, PROMPTS[:2], mode, samples_per_prompt=2, max_cot_tokens=6, max_answer_tokens=4, seed=2)
    model64 = copy.deepcopy(model).double()
    weights = torch.randn(4)  # any linear functional of the log-probs, like -A_i
    (weights * log_prob(model, r, anchored)).sum().backward()
    reference = reference_log_prob(model64, r)
    (weights.double() * reference).sum().backward()
    with torch.no_grad():
        assert torch.allclose(log_prob(model, r, anchored).double(), reference, rtol=1e-4, atol=1e-3)
    for ours, ref in zip(model.parameters(), model64.parameters()):
        assert torch.allclose(ours.grad.double(), ref.grad, rtol=1e-3, atol=1e-4), (ours.grad - ref.grad).abs().max()
    assert all(p.grad.abs().sum() > 0 for p in model.parameters())


# --------------------------------------------------------------------------- the draws against their distributions

N_DRAWS = 20_000


def first_step(mode, seed=0, **kw):
    """N_DRAWS one-step CoTs of one prompt, and the logits they were drawn from."""
    model, tok = tiny_model(seed=5), ToyTokenizer()
    r = generate(model, tok, [[9, 10]], mode, samples_per_prompt=N_DRAWS, max_cot_tokens=1, max_answer_tokens=1,
                 seed=seed, **kw)
    with torch.no_grad():
        logits = model(tokens=torch.tensor([[9, 10]]))[0, -1]
    return model, r, logits


def within_5_standard_errors(counts: torch.Tensor, p: torch.Tensor, n: int) -> bool:
    """Frequencies against probabilities: a false alarm has odds below 1e-5 per entry."""
    return bool(((counts / n - p).abs() <= 5 * (p * (1 - p) / n).sqrt() + 1e-4).all())


def test_gumbel_draws_gumbel_noise_and_its_token_is_a_gumbel_max_sample_of_p_prime():
    model, r, logits = first_step("gumbel")
    ids, kept = GUMBEL.kept_top(logits[None], r.tau)
    p = kept_p(logits[None], ids, kept, r.tau)[0]
    assert (r.cot_ids[:, 0] == ids).all() and kept.sum() >= 3 and p.max() < 0.9   # a non-trivial p'
    counts = torch.stack([(r.tokens[:, 0] == i).sum() for i in ids[0]]).double()
    assert within_5_standard_errors(counts, p, N_DRAWS), (counts / N_DRAWS, p)
    # the noise y − log p' on the kept ids is standard Gumbel: Kolmogorov-Smirnov at the 0.1% level
    noise = (r.cot_perturbed[:, 0] - r.cot_log_p[:, 0])[:, kept[0]].flatten().double().sort().values
    cdf = torch.distributions.Gumbel(0.0, 1.0).cdf(noise)
    m = len(noise)
    ks = torch.maximum(torch.arange(1, m + 1) / m - cdf, cdf - torch.arange(m) / m).max()
    assert ks < 1.95 / math.sqrt(m), ks
    # the input: the embeddings of the top ids weighted by softmax(y / τ_g)
    E = model.embed_tokens.weight
    w = torch.softmax(r.cot_perturbed[:, 0] / GUMBEL.tau_g, -1)
    assert torch.allclose(r.cot_embeds[:, 0], (w[..., None] * E[r.cot_ids[:, 0]]).sum(1), atol=1e-5)


def test_multiplex_draws_k_independent_tokens_from_p_and_weighs_them_by_p():
    model, r, logits = first_step("multiplex")
    p = torch.softmax(logits.double() / r.tau, -1)
    draws = r.cot_ids[:, 0]                                            # (N, K)
    assert draws.shape[1] == MULTIPLEX.width and p.max() < 0.9
    for k in range(MULTIPLEX.width):
        assert within_5_standard_errors(torch.bincount(draws[:, k], minlength=len(p)).double(), p, N_DRAWS), k
    # independent slots: two draws agree with probability Σ p², not 1 (one uniform reused) nor 0 (no replacement)
    same = (draws[:, 0] == draws[:, 1]).double().sum()[None]
    assert within_5_standard_errors(same, (p ** 2).sum()[None], N_DRAWS), (same / N_DRAWS, (p ** 2).sum())
    assert (r.tokens[:, 0] == draws[:, 0]).all()                       # the first draw drives the stop rule
    E = model.embed_tokens.weight
    w = p.float()[draws]
    w = w / w.sum(-1, keepdim=True)
    assert torch.allclose(r.cot_embeds[:, 0], (w[..., None] * E[draws]).sum(1), atol=1e-5)
    hard = generate(model, ToyTokenizer(), [[9, 10]], "hard", samples_per_prompt=N_DRAWS, max_cot_tokens=1,
                    max_answer_tokens=1, seed=0)
    assert torch.equal(hard.tokens[:, 0], draws[:, 0])  # the first draw uses the step's uniform: hard CoT's token


# --------------------------------------------------------------------------- what the new kinds share with the paper's

@pytest.mark.parametrize("mode", NEW_KINDS)
def test_group_seeds_make_a_groups_draws_independent_of_its_batch(mode):
    model, tok = tiny_model(), ToyTokenizer()
    kw = dict(samples_per_prompt=3, max_cot_tokens=6, max_answer_tokens=4)
    both = generate(model, tok, PROMPTS[:2], mode, seed=[11, 22], **kw)
    second = generate(model, tok, PROMPTS[1:2], mode, seed=[22], **kw)
    S = second.tokens.shape[1]
    assert torch.equal(both.cot_ids[3:, :S], second.cot_ids) and both.answer_text[3:] == second.answer_text
    assert torch.allclose(both.cot_embeds[3:, :S], second.cot_embeds, atol=1e-5)


def test_greedy_variants():
    """sigma = 0: gumbel without noise (weights ∝ p'^(1/τ_g), the same for any seed), multiplex = hard greedy."""
    model, tok = tiny_model(), ToyTokenizer()
    kw = dict(sigma=0.0, answer_tau=0.0, max_cot_tokens=8)
    a, b = (generate(model, tok, PROMPTS, "gumbel", seed=seed, **kw) for seed in (1, 2))
    assert torch.equal(a.cot_embeds, b.cot_embeds) and a.answer_text == b.answer_text
    cot = a.step_kinds == STEP_COT
    assert torch.equal(a.cot_perturbed[cot], a.cot_log_p[cot])                 # g = 0
    assert torch.equal(a.tokens[cot], a.cot_ids[cot][:, 0])                    # the argmax of y is the top id
    hard = generate(model, tok, PROMPTS, "hard", tau=0.0, **kw)
    multiplex = generate(model, tok, PROMPTS, "multiplex", **kw)
    assert torch.equal(multiplex.tokens, hard.tokens) and multiplex.answer_text == hard.answer_text
    for greedy in (a, multiplex):
        with pytest.raises(ValueError, match="no log-probability"):
            log_prob(model, greedy)


# --------------------------------------------------------------------------- bf16 autocast, as users train on GPUs

# The bf16 update against fp32 for the new kinds: tests/test_rollout.py, test_bf16_update_gradient_equals_fp32_gradient.
