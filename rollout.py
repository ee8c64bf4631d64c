"""Hard, soft and fuzzy chain-of-thought rollouts, and the log-probability that trains them (docs/paper.md §2-§4).

A rollout is   [prompt] [CoT inputs ...] [prefill] [answer tokens ...]
  - hard CoT:  x_t ~ softmax(logits/τ), input E[x_t]                         (§2, τ = 1)
  - soft CoT:  input h̃_t = p_{t-1} E + σ ε,  p = softmax(logits/τ), ε ~ N(0, I)  (Eq. 5-6, τ = 0.5)
  - fuzzy CoT: the same with τ = 0.0001, so p E is (nearly) the argmax token's embedding
  - the answer is always ordinary tokens (§3).
σ is absolute: `sigma_abs` = `sigma` × RMS(E), `sigma` being the multiplier of §2 (`noise_scale`).
The log-probability of a trajectory is Σ_CoT log N(h̃_t; p_{t-1}E, σ²I) + Σ_answer log p(a_t)  (Eq. 9-10);
`log_prob` recomputes it with gradients in one teacher-forced forward, no backpropagation through time.
Two other methods' CoT inputs come with them (§9): `gumbel` (SofT-GRPO: a Gumbel-perturbed mixture of the top
tokens) and `multiplex` (Multiplex Thinking: K sampled tokens merged into one input).

The math comes first: noise_scale, soft_mean, gaussian_log_prob, the CoT kinds (`KINDS`: how each draws its
input from the logits, and that input's log-density), generate, log_prob (with step_log_probs and
teacher_forced_logits). Below "numerics and speed", the machinery they run on. All rows advance in lockstep,
one position per forward, each in its own phase (CoT, prefill, answer, done: `Phases`), so a row's inputs
always sit in consecutive cache slots and the teacher-forced pass sees exactly the same sequence. The stop
rule runs on the device (`StopMatcher`), sampling draws one uniform per row (`categorical`), and each forward
is `model.decode_step`, whose shapes never change: `--compile` compiles it.

    python rollout.py --mode fuzzy --prompt "What is 12 * 7?"     # look at what a soft CoT "says"
"""

from __future__ import annotations  # the records (Rollout, Phases, StopMatcher) are defined below the math

import argparse
import math
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

# A row's phase while generating, and so what each recorded step was (a finished row records padding).
STEP_PAD, STEP_COT, STEP_PREFILL, STEP_ANSWER = 0, 1, 2, 3
# §3: the CoT ends when its (shadow) text ends with "The final answer is: ". In byte-level BPE the space
# after the colon always starts the *next* token (" 42", " \boxed"), so a text can only end with the colon:
# we match up to it and give the space back in the prefill, which then reads exactly as in the paper.
STOP_TEXT = "The final answer is:"
PREFILL_EARLY = " \\boxed{"                 # §3: given after an early stop
PREFILL_BUDGET = "The final answer is: \\boxed{"  # §3: given when the CoT hits its budget
JACOBIAN_TOP_K = 64  # generation-time logits recorded per soft/fuzzy CoT step (see log_prob)


# --------------------------------------------------------------------------- the math (§2-§4)

def noise_scale(model, sigma: float) -> float:
    """sigma_abs, the absolute σ per coordinate: sigma × RMS of the embedding matrix's entries (§2)."""
    E = model.embed_tokens.weight
    return sigma * E.detach().float().pow(2).mean().sqrt().item()


def soft_mean(logits: torch.Tensor, E: torch.Tensor, tau: float) -> torch.Tensor:
    """μ = p E with p = softmax(logits / τ): the soft/fuzzy CoT input before its noise (Eq. 3, 5), float32.

    Outside autocast: bf16 would round μ to 8 significant bits, an error that Eq. 10 divides by σ², and at
    τ = 1e-4 a rounded logit can flip the argmax (see `log_prob`). With bf16 *weights* (evaluation) the product
    stays in bf16, since upcasting E at every step would cost a float32 copy of the embedding matrix.
    """
    with torch.autocast(logits.device.type, enabled=False):
        p = F.softmax(logits.float() / tau, dim=-1)                   # (..., V)  Eq. 3
        return (p.to(E.dtype) @ E).float()                            # (..., d)  Eq. 5


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, sigma_abs: float) -> torch.Tensor:
    """log N(x; mean, σ²I) summed over the last dim, with its constant (Eq. 10); σ = sigma_abs, absolute.

    >>> gaussian_log_prob(torch.zeros(2), torch.zeros(2), 1.0)  # at the mean, d = 2, σ = 1: -log(2π)
    tensor(-1.8379)
    """
    d = x.shape[-1]
    return -(x - mean).pow(2).sum(-1) / (2 * sigma_abs**2) - 0.5 * d * math.log(2 * math.pi * sigma_abs**2)


# --------------------------------------------------------------------------- the CoT kinds (§2, §9)
# A kind is how a CoT step's input is drawn from the logits (`draw`, in generate) and that input's log-density
# under the current parameters (`log_density`, in step_log_probs, on the teacher-forced logits). What teacher
# forcing needs is recorded per step in Rollout fields; the input itself is recorded (`cot_embeds`) and fed
# back as data for every kind but hard, whose input is its token.

@dataclass
class CotStep:
    """What a kind's draw sees at one step, for all N rows (most of it computed once for every kind)."""
    logits: torch.Tensor   # (N, V) float32, untempered
    log_p1: torch.Tensor   # (N, V) log_softmax(logits): τ = 1 reuses it (at_temperature)
    p1: torch.Tensor       # (N, V) its exp
    shadow: torch.Tensor   # (N,) the argmax token: the greedy choice (§3)
    u: torch.Tensor        # (N,) float64 this step's uniform: a row draws a CoT token or an answer token, not both
    rng: GroupRandom       # for any further draws (per prompt group)
    E: torch.Tensor        # (V, d) the input embedding matrix
    tau: float             # the CoT temperature
    sigma_abs: float       # the absolute Gaussian noise scale (soft/fuzzy)
    sampled: bool          # False: the greedy variant of the kind (no randomness, no log-density)


@dataclass
class CotDraw:
    """One drawn CoT step, per row: the input to feed, the token the stop rule reads (§3), what teacher forcing
    needs ({Rollout field: (N, ...)}), and the step's log π (None for a greedy draw)."""
    embed: torch.Tensor
    token: torch.Tensor
    record: dict
    log_prob: torch.Tensor | None


class HardCoT:
    """§2: sample x_t ~ softmax(logits/τ) and feed E[x_t]; log π = log p_τ(x_t). Greedy: τ = 0 (the argmax)."""
    default_tau = 1.0
    reads = "the sampled token (the argmax at --tau 0)"

    def sampled(self, tau: float, sigma: float) -> bool:
        return tau > 0

    def draw(self, s: CotStep) -> CotDraw:
        log_p, p = at_temperature(s.logits, s.tau, s.log_p1, s.p1)      # p = softmax(logits / τ)   (Eq. 3)
        token = categorical(p, s.u) if s.sampled else s.shadow
        return CotDraw(s.E[token], token, {}, log_p.gather(1, token[:, None])[:, 0] if s.sampled else None)

    def log_density(self, logits, E, r: Rollout, cot, anchored: bool) -> torch.Tensor:
        return F.log_softmax(logits / r.tau, -1).gather(-1, r.tokens[cot][:, None])[:, 0]   # (§4)


class SoftCoT:
    """Eq. 5-6: feed h̃_t = p E + σ ε (soft τ = 0.5, fuzzy τ = 1e-4); log π = Eq. 10. Greedy: σ = 0. The stop
    rule reads the greedy shadow token (§3)."""
    reads = "the greedy shadow token"

    def __init__(self, default_tau: float):
        self.default_tau = default_tau

    def sampled(self, tau: float, sigma: float) -> bool:
        return sigma > 0

    def draw(self, s: CotStep) -> CotDraw:
        mean = soft_mean(s.logits, s.E, s.tau)                            # h^0_t = p_{t-1} E   (Eq. 5)
        embed = mean + s.sigma_abs * s.rng.normal(mean.shape[1])          # + σ ε, ε ~ N(0, I)   (Eq. 6)
        top = s.logits.topk(min(JACOBIAN_TOP_K, s.logits.shape[1]), dim=-1)
        # the action h̃_t, and the point where log_prob's gradient is taken (anchored_surrogate)
        record = {"cot_embeds": embed, "cot_means": mean, "cot_top_ids": top.indices, "cot_top_logits": top.values}
        return CotDraw(embed, s.shadow, record, gaussian_log_prob(embed, mean, s.sigma_abs) if s.sampled else None)

    def log_density(self, logits, E, r: Rollout, cot, anchored: bool) -> torch.Tensor:
        if not anchored:   # Eq. 10: log N(h̃_t; μ_t, σ²I), μ_t = p_{t-1} E, as written
            return gaussian_log_prob(r.cot_embeds[cot], soft_mean(logits, E, r.tau), r.sigma_abs)
        # Eq. 10's value at the generation point, and its gradient (anchored_surrogate)
        residual = (r.cot_embeds[cot] - r.cot_means[cot]) / r.sigma_abs**2
        return gaussian_log_prob(r.cot_embeds[cot], r.cot_means[cot], r.sigma_abs) + anchored_surrogate(
            logits, E, residual, r.cot_top_ids[cot], r.cot_top_logits[cot], r.tau)


def mixture(E: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(N, d) float32 Σ_i w_i E[id_i]: one input merging the embeddings of a few tokens (§9)."""
    return (weights[..., None] * E[ids].float()).sum(-2)


def gumbel_log_prob(y: torch.Tensor, loc: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Σ over the kept entries of log Gumbel(y_i; loc_i, 1) = −z − e^(−z), z = y_i − loc_i (§9.1). Entries not
    kept (−inf in y and loc) count zero.

    >>> gumbel_log_prob(torch.tensor([0.0, 5.0]), torch.tensor([0.0, 1.0]), torch.tensor([True, False]))  # -e^0
    tensor(-1.)
    """
    z = y.masked_fill(~kept, 0.0) - loc.masked_fill(~kept, 0.0)  # filled first: −inf − (−inf) would poison the grad
    return (-z - torch.exp(-z)).masked_fill(~kept, 0.0).sum(-1)


class GumbelCoT:
    """SofT-GRPO (§9.1). p' = softmax(logits/T) cut to its top 5 ids and then to top-p 0.95, renormalised; the
    action is y = log p' + g, g ~ Gumbel(0, 1) on the kept ids; the input is Σ_i softmax(y/τ_g)_i E[id_i],
    τ_g = 0.1; the stop rule reads argmax_i y_i (a Gumbel-max draw from p'). log π = Σ_kept log Gumbel(y_i;
    log p'_i, 1), a sum, with g unclamped: the authors' code clamps g to [−1.5, 3] and averages over the ids
    with p' > e^−3, which is the log-density of nothing that was drawn (REINFORCE needs the exact one) and
    would weigh a CoT step 1/|kept| against an answer token. Greedy (sigma = 0): g = 0, so the weights are
    ∝ p'^(1/τ_g) (the authors evaluate sampled)."""
    default_tau = 1.0       # T: their training and evaluation temperature
    top_k, top_p, tau_g = 5, 0.95, 0.1
    reads = "the Gumbel-max token argmax(y)"

    def sampled(self, tau: float, sigma: float) -> bool:
        return sigma > 0

    def kept_top(self, logits: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, kept), (N, k): the top-k ids of logits/T, and which survive top-p on their renormalised p."""
        top, ids = (logits.float() / tau).topk(min(self.top_k, logits.shape[-1]), dim=-1)
        p = F.softmax(top, dim=-1)
        return ids, p.cumsum(-1) - p < self.top_p     # the mass before an id: the first id is always kept

    def log_p_kept(self, logits: torch.Tensor, ids: torch.Tensor, kept: torch.Tensor, tau: float) -> torch.Tensor:
        """(N, k) float32 log p': log softmax(logits/T) renormalised over the kept ids, −inf elsewhere."""
        lp = (logits.float() / tau).gather(-1, ids).masked_fill(~kept, -math.inf)
        return lp - lp.logsumexp(-1, keepdim=True)

    def draw(self, s: CotStep) -> CotDraw:
        ids, kept = self.kept_top(s.logits, s.tau)
        log_p = self.log_p_kept(s.logits, ids, kept, s.tau)
        g = gumbel_noise(s.rng.uniforms(ids.shape[1])) if s.sampled else torch.zeros_like(log_p)
        y = log_p + g.masked_fill(~kept, 0.0)                              # −inf where top-p cut the id
        embed = mixture(s.E, ids, F.softmax(y / self.tau_g, dim=-1))
        token = ids.gather(1, y.argmax(-1, keepdim=True))[:, 0]
        record = {"cot_embeds": embed, "cot_ids": ids, "cot_log_p": log_p, "cot_perturbed": y}
        return CotDraw(embed, token, record, gumbel_log_prob(y, log_p, kept) if s.sampled else None)

    def log_density(self, logits, E, r: Rollout, cot, anchored: bool) -> torch.Tensor:
        ids, log_p_drawn, y = r.cot_ids[cot], r.cot_log_p[cot], r.cot_perturbed[cot]
        kept = log_p_drawn > -math.inf
        if not anchored:   # as written: the Gumbel density around the teacher-forced log p'
            return gumbel_log_prob(y, self.log_p_kept(logits, ids, kept, r.tau), kept)
        # The value at the generation point, and the gradient taken there (as anchored_surrogate does for Eq. 10).
        # The score ∂/∂ log p'_i = 1 − e^(−g_i) has mean 0 (E e^(−g) = 1), and a shift δ of the teacher-forced
        # log p' moves it by ~δ e^(−g): under bf16, not small against it. Measured on the default model (24
        # steps, 2 rows): as written, the bf16 gradient had cosine 0.94 to fp32's and a 14% smaller norm;
        # anchored, 0.9997 and 0.3%. Through the renormalisation, ∂ log p'_i / ∂(l_j/T) = δ_ij − p'_j, at the
        # drawn p' too; only ∂l/∂θ comes from this pass.
        g = y.masked_fill(~kept, 0.0) - log_p_drawn.masked_fill(~kept, 0.0)
        coef = (1 - torch.exp(-g)).masked_fill(~kept, 0.0)                    # ∂ log π / ∂ log p'_i
        coef = coef - log_p_drawn.exp() * coef.sum(-1, keepdim=True)          # ∂ log π / ∂(l_j / T)
        surrogate = (coef * logits.gather(-1, ids) / r.tau).sum(-1)
        return gumbel_log_prob(y, log_p_drawn, kept) + surrogate - surrogate.detach()


class MultiplexCoT:
    """Multiplex Thinking (§9.2). K = 3 i.i.d. draws x_1..x_K ~ softmax(logits/T) (with replacement, T = 1,
    whole vocabulary); the input is Σ_k w_k E[x_k], w_k = p(x_k) / Σ_j p(x_j) over the K slots (a token drawn
    twice counts twice); log π = Σ_k log p(x_k), the K draws being the action. The first draw uses the step's
    own uniform, so it is hard CoT's token, and it drives the stop rule. Greedy (sigma = 0): K copies of the
    argmax, that is the hard greedy token's embedding (the authors have no greedy mode)."""
    default_tau = 1.0
    width = 3
    reads = "the first of the K draws"

    def sampled(self, tau: float, sigma: float) -> bool:
        return sigma > 0

    def draw(self, s: CotStep) -> CotDraw:
        if not s.sampled:
            embed, ids = s.E[s.shadow].float(), s.shadow[:, None].expand(-1, self.width)
            return CotDraw(embed, s.shadow, {"cot_embeds": embed, "cot_ids": ids}, None)
        log_p, p = at_temperature(s.logits, s.tau, s.log_p1, s.p1)
        uniforms = torch.cat([s.u[:, None], s.rng.uniforms(self.width - 1)], 1)       # (N, K)
        ids = torch.stack([categorical(p, uniforms[:, k]) for k in range(self.width)], 1)
        weights = p.gather(1, ids)
        embed = mixture(s.E, ids, weights / weights.sum(-1, keepdim=True))
        return CotDraw(embed, ids[:, 0], {"cot_embeds": embed, "cot_ids": ids}, log_p.gather(1, ids).sum(-1))

    def log_density(self, logits, E, r: Rollout, cot, anchored: bool) -> torch.Tensor:
        return F.log_softmax(logits / r.tau, -1).gather(-1, r.cot_ids[cot]).sum(-1)


KINDS = {"hard": HardCoT(), "soft": SoftCoT(0.5), "fuzzy": SoftCoT(0.0001),   # the paper's (§2)
         "gumbel": GumbelCoT(), "multiplex": MultiplexCoT()}                   # §9
DEFAULT_TAU = {name: kind.default_tau for name, kind in KINDS.items()}


@torch.no_grad()
def generate(model, tokenizer, prompts: list[list[int]], mode: str, samples_per_prompt: int = 1,
             tau: float | None = None, sigma: float = 0.33, max_cot_tokens: int = 128,
             max_answer_tokens: int = 32, answer_tau: float = 1.0, seed: int | list[int] = 0,
             matcher: StopMatcher | None = None) -> Rollout:
    """Roll out `samples_per_prompt` trajectories for each prompt (rows grouped by prompt).

    mode: a CoT kind, hard | soft | fuzzy (§2) | gumbel | multiplex (§9). tau: CoT temperature (default per
    mode; 0 = greedy for hard). sigma: the noise multiplier of §2 for soft/fuzzy; for every kind but hard,
    0 = greedy (gumbel and multiplex have their authors' noise, on whatever sigma > 0). answer_tau: 0 = greedy
    answer. seed: one seed for all rows, or one per prompt (see GroupRandom).
    """
    if mode not in KINDS:
        raise ValueError(f"mode must be one of {', '.join(KINDS)}, got {mode!r}")
    kind = KINDS[mode]
    tau = kind.default_tau if tau is None else tau
    if tau < 0 or sigma < 0 or (mode != "hard" and tau == 0):
        raise ValueError(f"need tau > 0 (0, greedy, only for hard) and sigma >= 0, got tau={tau}, sigma={sigma}")
    E = model.embed_tokens.weight                                   # (V, d) the input embedding matrix
    device, V = E.device, E.shape[0]  # p runs over the model's full vocabulary (§2), padding ids included
    matcher = matcher or StopMatcher(tokenizer.token_bytes + [b""] * (V - len(tokenizer.token_bytes)), device)
    pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id
    sigma_abs = noise_scale(model, sigma) if isinstance(kind, SoftCoT) else 0.0
    sampled = kind.sampled(tau, sigma)
    G = samples_per_prompt

    # Prompt: prefill each distinct prompt once, then copy its cache to its G samples (nanochat does this).
    prompt_ids, pad_lens = left_pad(prompts, pad_id, device)
    P = prompt_ids.shape[1]
    prefills = [tokenizer.encode(PREFILL_EARLY), tokenizer.encode(PREFILL_BUDGET)]
    max_steps = max_cot_tokens + max(map(len, prefills)) + max_answer_tokens
    model.setup_cache(len(prompts), P + max_steps)
    logits = model(tokens=prompt_ids, pad_lens=pad_lens, use_cache=True, last=1)[:, -1]  # (B, V)
    for cache in model.caches:
        cache.k, cache.v = cache.k.repeat_interleave(G, 0), cache.v.repeat_interleave(G, 0)
    prompt_ids, pad_lens, logits = (t.repeat_interleave(G, 0) for t in (prompt_ids, pad_lens, logits))
    N = prompt_ids.shape[0]
    rng = GroupRandom(seed, N, device)

    prefill_table = torch.zeros(2, max(map(len, prefills)), dtype=torch.long, device=device)
    for i, p in enumerate(prefills):
        prefill_table[i, :len(p)] = torch.tensor(p)
    prefill_lens = torch.tensor([len(p) for p in prefills], device=device)
    stop_ids = torch.tensor(sorted(tokenizer.stop_ids), device=device)

    phases = Phases.start(N, device)
    logp = torch.zeros(N, device=device)
    slot = torch.tensor(P, device=device)                           # the cache slot of the next input
    rec_tokens, rec_kinds, rec_entropy, recorded = [], [], [], {}   # recorded: {Rollout field: per-step tensors}

    for step in range(max_steps):
        kind_now = phases.phase                                      # (N,) what this step is, per row
        in_cot, in_prefill, in_answer = kind_now == STEP_COT, kind_now == STEP_PREFILL, kind_now == STEP_ANSWER
        u = rng.uniform()  # one uniform per row: a row samples either a CoT token or an answer token, never both

        # --- next-token distributions in float32 (τ = 1e-4 overflows half precision); τ = 1 reuses the untempered one
        log_p1 = F.log_softmax(logits, dim=-1)
        p1 = log_p1.exp()
        rec_entropy.append(-(p1 * log_p1).sum(-1))                   # entropy of the untempered distribution
        shadow = logits.argmax(-1)                                   # the greedy shadow token (§3)

        # --- CoT step: the kind draws its input from the logits (its log-density: step_log_probs)
        cot = kind.draw(CotStep(logits, log_p1, p1, shadow, u, rng, E, tau, sigma_abs, sampled))
        if cot.log_prob is not None:
            logp += torch.where(in_cot, cot.log_prob, 0.0)

        # --- answer step: ordinary tokens (§3), sampled at answer_tau or greedy
        if answer_tau > 0:
            log_pa, pa = at_temperature(logits, answer_tau, log_p1, p1)
            answer_token = categorical(pa, u)
            logp += torch.where(in_answer, log_pa.gather(1, answer_token[:, None])[:, 0], 0.0)
        else:
            answer_token = shadow
        prefill_token = prefill_table[phases.which_prefill, phases.prefill_pos.clamp(max=prefill_table.shape[1] - 1)]

        token = torch.where(in_cot, cot.token, torch.where(in_prefill, prefill_token, answer_token))
        embeds = torch.where(in_cot[:, None], cot.embed.to(E.dtype), E[token])
        rec_tokens.append(token)
        rec_kinds.append(kind_now)
        for name, value in cot.record.items():
            recorded.setdefault(name, []).append(value)

        phases.advance(token, matcher, stop_ids, prefill_lens, max_cot_tokens, max_answer_tokens)  # §3
        if step % 8 == 7 and bool((phases.phase == STEP_PAD).all()):  # a host sync, so only every few steps
            break
        logits = model.decode_step(embeds[:, None], slot, pad_lens)
        slot += 1
    model.setup_cache(0, 0)

    tokens, kinds = torch.stack(rec_tokens, 1), torch.stack(rec_kinds, 1)   # (N, S)
    used = int((kinds != STEP_PAD).sum(0).nonzero().max()) + 1
    tokens, kinds = tokens[:, :used], kinds[:, :used]
    tok_list, kind_list = tokens.tolist(), kinds.tolist()
    return Rollout(
        prompt_ids=prompt_ids, pad_lens=pad_lens, tokens=tokens, step_kinds=kinds,
        logp=logp, entropy=torch.stack(rec_entropy, 1)[:, :used],
        cot_text=[tokenizer.decode([t for t, k in zip(ts, ks) if k == STEP_COT]) for ts, ks in zip(tok_list, kind_list)],
        answer_text=[tokenizer.decode([t for t, k in zip(ts, ks) if k in (STEP_PREFILL, STEP_ANSWER)])
                     for ts, ks in zip(tok_list, kind_list)],
        mode=mode, tau=tau, sigma_abs=sigma_abs, answer_tau=answer_tau, cot_sampled=sampled,
        **{name: torch.stack(steps, 1)[:, :used] for name, steps in recorded.items()})


def log_prob(model, rollout: Rollout, anchored: bool = True) -> torch.Tensor:
    """(N,) log π(trajectory) with gradients: the CoT and answer steps' log-probabilities summed (Eq. 9, §4).

    A soft/fuzzy CoT step's term is Eq. 10, log N(h̃_t; μ_t, σ²I) with μ_t = p_{t-1} E, which `anchored=False`
    computes as written: gaussian_log_prob(h̃_t, soft_mean(teacher-forced logits, E, τ), sigma_abs).
    Training keeps the default, `anchored_surrogate`: in exact arithmetic the same value and gradient, but taken
    at the recorded mean and logits, because under bf16 the teacher-forced pass rounds differently from
    generate's, and Eq. 10's 1/σ² (and, at τ = 1e-4, the softmax's ~1/τ Jacobian at near-ties) blows that
    rounding up into a gradient that can point anywhere. Gumbel's density (§9.1) is anchored the same way, at
    the recorded log p' (GumbelCoT.log_density); hard and multiplex, categorical, ignore `anchored`.
    """
    return step_log_probs(model, rollout, anchored).sum(1)


def step_log_probs(model, rollout: Rollout, anchored: bool = True) -> torch.Tensor:
    """(N, S) log π of each recorded step's action under the current parameters, with gradients: one
    teacher-forced forward (§4). `log_prob` sums them; `rollout.step_kinds` says which step is which.

    At a CoT step the recorded action (the noisy h̃_t, the sampled token, ...: see KINDS) is detached data and
    its density is recomputed from the parameters; at an answer step the token is the action. Prefill tokens
    are given, not sampled, and padding never counts (zero). `anchored`: see `log_prob`. Each term is computed
    on its own steps only: the (steps, V) tensors are the memory peak.
    """
    r = rollout
    if not r.cot_sampled or r.answer_tau == 0:
        raise ValueError("greedy rollouts (sigma = 0, tau = 0 or a greedy answer) have no log-probability")
    E = getattr(model, "module", model).embed_tokens.weight
    logits = teacher_forced_logits(model, r)                         # (N, S, V)
    cot, answer = r.step_kinds == STEP_COT, r.step_kinds == STEP_ANSWER
    terms = logits.new_zeros(cot.shape)                              # (N, S) log-prob of each step's action
    terms[cot] = KINDS[r.mode].log_density(logits[cot], E, r, cot, anchored)   # drawn in generate's "CoT step"
    terms[answer] = F.log_softmax(logits[answer] / r.answer_tau, -1).gather(-1, r.tokens[answer][:, None])[:, 0]
    return terms


def teacher_forced_logits(model, r: Rollout) -> torch.Tensor:
    """(N, S, V) float32 logits that predicted each recorded step: one forward over [prompt; steps] (§4).
    The G samples of a prompt share it: the prompt goes through the model once per group, not once per row
    (the prompt is most of the tokens on short CoTs), and its gradient collects every row's."""
    core = getattr(model, "module", model)                           # unwrap DistributedDataParallel
    E = core.embed_tokens.weight
    S = r.tokens.shape[1]
    # F.embedding, not E[r.tokens]: indexing's backward accumulates repeated ids with several CPU threads in
    # an order that changes from run to run, so a seed would not reproduce (docs/training.md, "Reproducibility")
    step_embeds = F.embedding(r.tokens, E)                           # (N, S, d)
    if r.mode != "hard":
        step_embeds = torch.where((r.step_kinds == STEP_COT)[..., None], r.cot_embeds.to(E.dtype), step_embeds)
    prompt_ids, prompt_of_row = torch.unique(r.prompt_ids, dim=0, return_inverse=True)  # (U, P) distinct, (N,)
    prompt_pad_lens = torch.zeros(len(prompt_ids), dtype=r.pad_lens.dtype, device=r.pad_lens.device)
    prompt_pad_lens[prompt_of_row] = r.pad_lens
    return model(embeds=step_embeds, prefix=(F.embedding(prompt_ids, E), prompt_pad_lens, prompt_of_row),
                 last=S + 1)[:, :-1]


# --------------------------------------------------------------------------- numerics and speed
# What generate and log_prob run on: the rollout record, the stop rule and phases of §3 on the device, one
# random stream per prompt group, sampling with one uniform per row, and the anchored gradient of Eq. 10.

@dataclass
class Rollout:
    """One batch of trajectories: what training and evaluation need, and nothing more."""
    prompt_ids: torch.Tensor         # (N, P) left-padded prompts
    pad_lens: torch.Tensor           # (N,) padding slots before each prompt
    tokens: torch.Tensor             # (N, S) token of each step: hard CoT / shadow CoT / prefill / answer
    step_kinds: torch.Tensor         # (N, S) STEP_PAD / STEP_COT / STEP_PREFILL / STEP_ANSWER
    logp: torch.Tensor               # (N,) log π(trajectory) as computed while generating
    entropy: torch.Tensor            # (N, S) entropy (nats) of the untempered next-token distribution at each step
    cot_text: list[str]              # the hard or greedy-shadow CoT, decoded
    answer_text: list[str]           # prefill + answer, decoded: the text that gets scored
    mode: str
    tau: float                       # CoT temperature
    sigma_abs: float                 # absolute Gaussian noise scale σ = sigma × RMS(E) (soft/fuzzy; else 0)
    answer_tau: float                # answer temperature (0 = greedy)
    cot_sampled: bool                # the CoT was drawn at random (not greedy), so it has a log-density
    # What each CoT kind records for teacher forcing (KINDS; None where a kind records no such thing), detached:
    cot_embeds: torch.Tensor | None = None      # (N, S, d) float32 the inputs fed at CoT steps (all but hard):
    #                                             soft/fuzzy the noisy h̃_t, gumbel/multiplex the mixtures
    cot_means: torch.Tensor | None = None       # (N, S, d) float32 the means μ_t = p_{t-1} E h̃_t was drawn around
    cot_top_ids: torch.Tensor | None = None     # (N, S, K) the K largest logits at each step while generating
    cot_top_logits: torch.Tensor | None = None  # (N, S, K) float32 (soft/fuzzy): where log_prob takes the softmax's Jacobian
    cot_ids: torch.Tensor | None = None         # (N, S, k) the tokens a gumbel (top-k) or multiplex (K draws) input mixes
    cot_log_p: torch.Tensor | None = None       # (N, S, k) float32 gumbel: log p' of cot_ids when drawn (-inf: cut by top-p)
    cot_perturbed: torch.Tensor | None = None   # (N, S, k) float32 gumbel: the action y = log p' + g

    @property
    def cot_lens(self):
        return (self.step_kinds == STEP_COT).sum(1)

    @property
    def cot_entropy(self):
        """(N,) mean entropy along each CoT: hard training lowers it, soft/fuzzy keep the base model's (§8)."""
        return (self.entropy * (self.step_kinds == STEP_COT)).sum(1) / self.cot_lens.clamp(min=1)

    @property
    def answer_lens(self):
        return (self.step_kinds == STEP_ANSWER).sum(1)

    def select(self, row_ids) -> Rollout:
        """The sub-batch of rows `row_ids` (a slice or index list), e.g. a micro-batch for the update."""
        idx = range(len(self.cot_text))[row_ids] if isinstance(row_ids, slice) else row_ids
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                v = v[list(idx)]
            elif isinstance(v, list):
                v = [v[i] for i in idx]
            out[f.name] = v
        return Rollout(**out)


class StopMatcher:
    """Tells, on the device, when a row's text ends with STOP_TEXT (or its brace balance closes).

    A KMP automaton over bytes, advanced a whole token at a time: `table[state, token]` is the length of
    the longest prefix of STOP_TEXT that the text ends with after appending that token's bytes. The stop
    text is ASCII, and ASCII bytes never occur inside a multi-byte UTF-8 character, so matching bytes is
    matching text, and no per-step decode (a device-to-host copy) is needed.
    """

    def __init__(self, token_bytes: list[bytes], device, stop_text: str = STOP_TEXT):
        pattern = stop_text.encode()
        m = len(pattern)
        dfa = np.zeros((m + 1, 256), dtype=np.int64)  # byte-level KMP automaton
        fallback = 0
        for state in range(m + 1):
            dfa[state] = dfa[fallback]
            if state < m:
                dfa[state, pattern[state]] = state + 1
                if state > 0:
                    fallback = dfa[fallback, pattern[state]]
        dfa[m] = dfa[fallback]  # after a full match keep matching (only the end of the text matters)
        lengths = np.array([len(b) for b in token_bytes])
        padded = np.zeros((len(token_bytes), max(lengths.max(), 1)), dtype=np.int64)
        for i, b in enumerate(token_bytes):
            padded[i, :len(b)] = np.frombuffer(b, dtype=np.uint8)
        table = np.repeat(np.arange(m + 1)[:, None], len(token_bytes), axis=1)  # (m+1, V)
        for j in range(padded.shape[1]):  # feed byte j of every token that has one
            live = np.nonzero(lengths > j)[0]
            table[:, live] = dfa[table[:, live], padded[live, j]]
        self.table = torch.as_tensor(table, device=device)
        self.done_state = m
        braces = [b.count(b"{") - b.count(b"}") for b in token_bytes]
        self.brace_delta = torch.tensor(braces, device=device)  # the answer ends when \boxed{ closes


def check_context(prompts: list[list[int]], questions: list[str], max_cot_tokens: int, max_answer_tokens: int,
                  context: int, tokenizer) -> None:
    """Refuse, before any work, budgets that do not fit the model's context: generate allocates the KV cache
    for the longest prompt + CoT budget + answer prefill + answer budget up front."""
    prefill = len(tokenizer.encode(PREFILL_BUDGET))
    longest = max(range(len(prompts)), key=lambda i: len(prompts[i]))
    need = len(prompts[longest]) + max_cot_tokens + prefill + max_answer_tokens
    if need > context:
        q = questions[longest]
        raise SystemExit(f"the longest prompt ({len(prompts[longest])} tokens: {q[:60]!r}{'...' if len(q) > 60 else ''})"
                         f" + the CoT budget {max_cot_tokens} + the answer prefill {prefill} + the answer budget "
                         f"{max_answer_tokens} = {need} tokens, more than the model's context of {context}: lower "
                         "--max-cot-tokens / --max-answer-tokens, or leave out the longest problems")


def left_pad(prompts: list[list[int]], pad_id: int, device):
    P = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), P), pad_id, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):] = torch.tensor(p)
    pad_lens = torch.tensor([P - len(p) for p in prompts])
    return ids.to(device), pad_lens.to(device)


class GroupRandom:
    """One random stream per prompt group (or one for all rows), so a group's rollouts depend only on its own
    seed, not on which other prompts share the batch or on how prompts are split over DDP ranks."""

    def __init__(self, seeds: int | list[int], n_rows: int, device):
        seeds = seeds if isinstance(seeds, list) else [seeds]
        if n_rows % len(seeds):
            raise ValueError(f"{n_rows} rows cannot be split into {len(seeds)} seed groups")
        self.rows_per_group, self.device = n_rows // len(seeds), device
        self.gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    def normal(self, dim: int) -> torch.Tensor:  # (N, dim) standard normal
        return torch.cat([torch.empty(self.rows_per_group, dim, device=self.device).normal_(generator=g)
                          for g in self.gens])

    def uniform(self) -> torch.Tensor:  # (N,) float64 uniform on [0, 1): one per row, for `categorical`
        return self.uniforms(1)[:, 0]

    def uniforms(self, k: int) -> torch.Tensor:  # (N, k) float64 uniform on [0, 1): k per row
        return torch.cat([torch.rand(self.rows_per_group, k, generator=g, device=self.device, dtype=torch.float64)
                          for g in self.gens])


@dataclass
class Phases:
    """Where each row is in [CoT][prefill][answer], and the rules of §3 that move it on, on the device."""
    phase: torch.Tensor          # (N,) STEP_COT -> STEP_PREFILL -> STEP_ANSWER -> STEP_PAD (done)
    match_state: torch.Tensor    # (N,) StopMatcher state of the CoT text
    n_cot: torch.Tensor          # (N,) CoT steps so far
    which_prefill: torch.Tensor  # (N,) 0: after an early stop (PREFILL_EARLY), 1: at the budget (PREFILL_BUDGET)
    prefill_pos: torch.Tensor    # (N,) prefill tokens given so far
    braces: torch.Tensor         # (N,) { minus } in the answer: it ends when \boxed{ closes
    n_answer: torch.Tensor       # (N,) answer tokens so far

    @classmethod
    def start(cls, n: int, device) -> Phases:
        zeros = lambda: torch.zeros(n, dtype=torch.long, device=device)  # noqa: E731
        return cls(torch.full((n,), STEP_COT, device=device), *(zeros() for _ in range(6)))

    def advance(self, token, matcher: StopMatcher, stop_ids, prefill_lens, max_cot_tokens: int, max_answer_tokens: int):
        """Account for the step each row just took (`token`, in its current phase), then move rows on."""
        in_cot, in_prefill, in_answer = self.phase == STEP_COT, self.phase == STEP_PREFILL, self.phase == STEP_ANSWER
        self.n_cot += in_cot
        self.match_state = torch.where(in_cot, matcher.table[self.match_state, token], self.match_state)
        stopped = in_cot & (self.match_state == matcher.done_state)      # the CoT text ends with STOP_TEXT
        # CoT budget L reached, or the model ended its turn: either way the full marker is prefilled
        budget = in_cot & ~stopped & ((self.n_cot >= max_cot_tokens) | torch.isin(token, stop_ids))
        self.which_prefill = torch.where(budget, 1, self.which_prefill)
        self.prefill_pos += in_prefill
        self.braces += torch.where(in_answer, matcher.brace_delta[token], 0)
        self.n_answer += in_answer
        answer_over = in_answer & (torch.isin(token, stop_ids) | (self.braces < 0) | (self.n_answer >= max_answer_tokens))
        prefill_over = in_prefill & (self.prefill_pos >= prefill_lens[self.which_prefill])
        self.phase = torch.where(stopped | budget, STEP_PREFILL, self.phase)
        self.phase = torch.where(prefill_over, STEP_ANSWER, self.phase)
        self.phase = torch.where(answer_over, STEP_PAD, self.phase)


def at_temperature(logits, tau, log_p1, p1):
    """(log p, p) at temperature τ; τ = 1 reuses the untempered pair, τ = 0 (greedy) has none."""
    if tau == 1:
        return log_p1, p1
    if tau == 0:
        return None, None
    log_p = F.log_softmax(logits / tau, dim=-1)
    return log_p, log_p.exp()


def categorical(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One draw per row from probs (N, V) by inverting its CDF at u (N,) ~ U[0, 1): the first token whose
    cumulative probability exceeds u. One random number per row, not V, and no host sync; in float64, so that
    summing 10⁵ probabilities does not shift any token's share.

    >>> categorical(torch.tensor([[0.5, 0.0, 0.5]]), torch.tensor([0.7], dtype=torch.float64))
    tensor([2])
    """
    cdf = probs.double().cumsum(-1)                                               # (N, V)
    drawn = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0]  # probs need not sum to 1
    return drawn.clamp(max=probs.shape[1] - 1)  # u * total can round up to the total (odds ~2^-53)


def gumbel_noise(u: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel(0, 1) draws, float32, from uniforms u on [0, 1) (float64): g = −log(−log u). u = 0 (odds
    2^-53) is moved up to the smallest float64, so g stays finite: from −6.6 (u = 0) to 36.7 (the largest u).

    >>> gumbel_noise(torch.tensor([math.exp(-math.exp(-1.0)), 0.0, 1 - 2**-53], dtype=torch.float64))  # 1, ends
    tensor([ 1.0000, -6.5630, 36.7368])
    """
    return -torch.log(-torch.log(u.clamp(min=torch.finfo(torch.float64).tiny))).float()


def anchored_surrogate(logits, E, residual, top_ids, top_logits, tau: float) -> torch.Tensor:
    """(K,) zero in value; its gradient is Eq. 10's, (h̃ − μ)/σ² · ∂μ/∂θ, taken where the action was drawn.

    For K CoT steps: logits (K, V) teacher-forced; residual (K, d) = (h̃ − μ_gen)/σ², recorded; top_ids and
    top_logits (K, JACOBIAN_TOP_K), the largest logits recorded while generating.

    The update is on-policy: in exact arithmetic the teacher-forced logits *are* those the rollout was drawn
    from. Under bf16 the one full forward here and the cached one-token forwards of `generate` round
    differently, and Eq. 10 amplifies the difference: (1) the residual h̃ − μ_θ picks up δ = μ_θ − μ_gen, and
    δ/σ² swamps the signal σε/σ² (at τ = 1e-4 a flipped argmax makes δ a whole embedding difference); (2) at
    τ = 1e-4 the softmax's Jacobian is zero except at near-ties, where it is ~1/τ, so which steps carry a
    huge gradient depends on the last bits of the logits. Both are removed by taking the gradient at the
    generation point: the residual is the recorded σε = h̃ − μ_gen, and the Jacobian of μ = softmax(l/τ) E
    is taken at the recorded logits (the 64 largest; the rest, which carry no mass at τ = 1e-4, teacher-forced).
    Only ∂l_θ/∂θ and ∂E/∂θ come from this pass.
    """
    with torch.autocast(logits.device.type, enabled=False):
        E = E.float()                                                                 # (V, d)
        at_generation = logits.detach().scatter(-1, top_ids, top_logits)             # (K, V)
        p = F.softmax(at_generation / tau, dim=-1)                                    # (K, V)
        # through E: ∂μ/∂E_v = p_v, so the residual's gradient on row v is p_v (h̃ − μ)/σ²
        through_E = (residual * (p @ E)).sum(-1)                                      # (K,)
        # through the logits: ∂μ/∂l_v = p_v (E_v − μ)/τ. At τ = 1e-4 E_v − μ is ~e^(−gap/τ) for the argmax
        # row, far below float32's rounding of μ, and 1/τ would blow that rounding up to a noise larger than
        # the signal; so (h̃ − μ)·(E_v − μ)/σ² is formed from differences to the argmax row, which are exact.
        s = residual @ E.detach().T                                                   # (K, V) (h̃−μ)·E_v/σ²
        s_diff = s - s.gather(-1, at_generation.argmax(-1, keepdim=True))            # s_v − s_argmax
        coef = p * (s_diff - (p * s_diff).sum(-1, keepdim=True))                      # p_v (h̃−μ)·(E_v − μ)/σ²
        through_logits = (coef * logits).sum(-1) / tau                                # (K,)
        surrogate = through_E + through_logits
    return surrogate - surrogate.detach()


if __name__ == "__main__":
    from model import load_model
    from tokenizer import load_tokenizer
    from default_model import resolve_model
    from data import build_prompt

    ap = argparse.ArgumentParser(description="Print what a CoT (hard, soft, fuzzy, gumbel or multiplex) says, step by step.")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--mode", default="fuzzy", choices=list(KINDS), help="the CoT kind (§2; gumbel, multiplex: §9)")
    ap.add_argument("--prompt", default="Tom has 3 boxes with 4 apples each. He eats 2. How many apples are left?")
    ap.add_argument("--tau", type=float, default=None, help="CoT temperature (default per mode: " +
                    ", ".join(f"{m} {t:g}" for m, t in DEFAULT_TAU.items()) + ")")
    ap.add_argument("--sigma", type=float, default=0.33, help="soft/fuzzy noise multiplier (§2); 0: a greedy CoT "
                    "for every mode but hard")
    ap.add_argument("--max-cot-tokens", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompt-format", choices=["raw", "chat"], default="chat", help="chat suits small models")
    args = ap.parse_args()
    if args.max_cot_tokens < 1 or not math.isfinite(args.sigma) or args.sigma < 0 or (args.tau is not None and not (
            math.isfinite(args.tau) and (args.tau > 0 or args.tau == 0 and args.mode == "hard"))):
        ap.error("need --max-cot-tokens >= 1, finite --sigma >= 0 and finite --tau > 0 (--tau 0, greedy, only "
                 "with --mode hard)")
    folder = resolve_model(args.model)
    model, tok = load_model(folder).eval(), load_tokenizer(folder)
    prompt = tok.encode_prompt(build_prompt(args.prompt, tok, args.prompt_format))
    r = generate(model, tok, [prompt], args.mode, tau=args.tau, sigma=args.sigma,
                 max_cot_tokens=args.max_cot_tokens, answer_tau=0.0, seed=args.seed)
    print(f"mode={r.mode} tau={r.tau} sigma_abs={r.sigma_abs:.4f}  CoT steps={int(r.cot_lens[0])}  "
          f"mean entropy={r.cot_entropy[0]:.3f} nats")
    print(f"--- CoT, step by step: {KINDS[r.mode].reads} (what the stop rule reads) and the entropy (nats) of "
          "the distribution it came from")
    for s in range(int(r.cot_lens[0])):
        print(f"{s:4d}  {r.entropy[0, s]:6.3f}  {tok.decode([int(r.tokens[0, s])])!r}")
    if r.mode == "hard":
        print("--- CoT text: the tokens the model sampled (the argmax at --tau 0) and read\n" + r.cot_text[0])
    else:  # a continuous CoT has no text of its own
        print(f"--- {KINDS[r.mode].reads} at each step of the {r.mode} CoT (the model read a (noisy) mixture of embeddings, "
              "not these)\n" + r.cot_text[0])
    print("--- answer (prefill + greedy answer)\n" + r.answer_text[0])
