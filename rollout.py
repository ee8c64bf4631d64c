"""Hard, soft and fuzzy chain-of-thought rollouts, and the log-probability that trains them (docs/paper.md §2-§4).

A rollout is   [prompt] [CoT inputs ...] [prefill] [answer tokens ...]
  - hard CoT:  x_t ~ softmax(logits/τ), input E[x_t]                         (§2, τ = 1)
  - soft CoT:  input h̃_t = p_{t-1} E + σ ε,  p = softmax(logits/τ), ε ~ N(0, I)  (Eq. 5-6, τ = 0.5)
  - fuzzy CoT: the same with τ = 0.0001, so p E is (nearly) the argmax token's embedding
  - the answer is always ordinary tokens (§3).
σ is absolute: `sigma_abs` = `sigma` × RMS(E), `sigma` being the multiplier of §2 (`noise_scale`).
The log-probability of a trajectory is Σ_CoT log N(h̃_t; p_{t-1}E, σ²I) + Σ_answer log p(a_t)  (Eq. 9-10);
`log_prob` recomputes it with gradients in one teacher-forced forward, no backpropagation through time.

The math comes first: noise_scale, soft_mean, gaussian_log_prob, generate, log_prob (with step_log_probs and
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
DEFAULT_TAU = {"hard": 1.0, "soft": 0.5, "fuzzy": 0.0001}  # §2
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


@torch.no_grad()
def generate(model, tokenizer, prompts: list[list[int]], mode: str, samples_per_prompt: int = 1,
             tau: float | None = None, sigma: float = 0.33, max_cot_tokens: int = 128,
             max_answer_tokens: int = 32, answer_tau: float = 1.0, seed: int | list[int] = 0,
             matcher: StopMatcher | None = None) -> Rollout:
    """Roll out `samples_per_prompt` trajectories for each prompt (rows grouped by prompt).

    mode: hard | soft | fuzzy. tau: CoT temperature (default per mode; 0 = greedy for hard).
    sigma: the noise multiplier of §2 (0 = greedy soft/fuzzy). answer_tau: 0 = greedy answer.
    seed: one seed for all rows, or one per prompt (see GroupRandom).
    """
    if mode not in DEFAULT_TAU:
        raise ValueError(f"mode must be hard, soft or fuzzy, got {mode!r}")
    tau = DEFAULT_TAU[mode] if tau is None else tau
    if tau < 0 or sigma < 0 or (mode != "hard" and tau == 0):
        raise ValueError(f"need tau >= 0 (> 0 for soft/fuzzy) and sigma >= 0, got tau={tau}, sigma={sigma}")
    E = model.embed_tokens.weight                                   # (V, d) the input embedding matrix
    device, V = E.device, E.shape[0]  # p runs over the model's full vocabulary (§2), padding ids included
    matcher = matcher or StopMatcher(tokenizer.token_bytes + [b""] * (V - len(tokenizer.token_bytes)), device)
    pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id
    sigma_abs = noise_scale(model, sigma) if mode != "hard" else 0.0
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
    rec_tokens, rec_kinds, rec_embeds, rec_means, rec_top, rec_entropy = [], [], [], [], [], []

    for step in range(max_steps):
        kind = phases.phase                                          # (N,) what this step is, per row
        in_cot, in_prefill, in_answer = kind == STEP_COT, kind == STEP_PREFILL, kind == STEP_ANSWER
        u = rng.uniform()  # one uniform per row: a row samples either a CoT token or an answer token, never both

        # --- next-token distributions in float32 (τ = 1e-4 overflows half precision); τ = 1 reuses the untempered one
        log_p1 = F.log_softmax(logits, dim=-1)
        p1 = log_p1.exp()
        rec_entropy.append(-(p1 * log_p1).sum(-1))                   # entropy of the untempered distribution
        shadow = logits.argmax(-1)                                   # the greedy shadow token (§3)

        # --- CoT step (§2): how each mode draws its input from the logits (its log-density: step_log_probs)
        if mode == "hard":
            log_p, p = at_temperature(logits, tau, log_p1, p1)       # p = softmax(logits / τ)   (Eq. 3)
            cot_token = categorical(p, u) if tau > 0 else shadow
            cot_embed = E[cot_token]
            if tau > 0:
                logp += torch.where(in_cot, log_p.gather(1, cot_token[:, None])[:, 0], 0.0)
        else:
            cot_token = shadow
            mean = soft_mean(logits, E, tau)                          # h^0_t = p_{t-1} E   (Eq. 5)
            cot_embed = mean + sigma_abs * rng.normal(mean.shape[1])  # + σ ε, ε ~ N(0, I)   (Eq. 6)
            if sigma_abs > 0:
                logp += torch.where(in_cot, gaussian_log_prob(cot_embed, mean, sigma_abs), 0.0)  # Eq. 10

        # --- answer step: ordinary tokens (§3), sampled at answer_tau or greedy
        if answer_tau > 0:
            log_pa, pa = at_temperature(logits, answer_tau, log_p1, p1)
            answer_token = categorical(pa, u)
            logp += torch.where(in_answer, log_pa.gather(1, answer_token[:, None])[:, 0], 0.0)
        else:
            answer_token = shadow
        prefill_token = prefill_table[phases.which_prefill, phases.prefill_pos.clamp(max=prefill_table.shape[1] - 1)]

        token = torch.where(in_cot, cot_token, torch.where(in_prefill, prefill_token, answer_token))
        embeds = torch.where(in_cot[:, None], cot_embed.to(E.dtype), E[token])
        rec_tokens.append(token)
        rec_kinds.append(kind)
        if mode != "hard":
            rec_embeds.append(cot_embed.float())                     # the action h̃_t
            rec_means.append(mean)                                   # and the point where log_prob's
            rec_top.append(logits.topk(min(JACOBIAN_TOP_K, V), dim=-1))  # gradient is taken: anchored_surrogate

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
        cot_embeds=torch.stack(rec_embeds, 1)[:, :used] if mode != "hard" else None,
        cot_means=torch.stack(rec_means, 1)[:, :used] if mode != "hard" else None,
        cot_top_ids=torch.stack([t.indices for t in rec_top], 1)[:, :used] if mode != "hard" else None,
        cot_top_logits=torch.stack([t.values for t in rec_top], 1)[:, :used] if mode != "hard" else None,
        logp=logp, entropy=torch.stack(rec_entropy, 1)[:, :used],
        cot_text=[tokenizer.decode([t for t, k in zip(ts, ks) if k == STEP_COT]) for ts, ks in zip(tok_list, kind_list)],
        answer_text=[tokenizer.decode([t for t, k in zip(ts, ks) if k in (STEP_PREFILL, STEP_ANSWER)])
                     for ts, ks in zip(tok_list, kind_list)],
        mode=mode, tau=tau, sigma_abs=sigma_abs, answer_tau=answer_tau)


def log_prob(model, rollout: Rollout, anchored: bool = True) -> torch.Tensor:
    """(N,) log π(trajectory) with gradients: the CoT and answer steps' log-probabilities summed (Eq. 9, §4).

    A soft/fuzzy CoT step's term is Eq. 10, log N(h̃_t; μ_t, σ²I) with μ_t = p_{t-1} E, which `anchored=False`
    computes as written: gaussian_log_prob(h̃_t, soft_mean(teacher-forced logits, E, τ), sigma_abs).
    Training keeps the default, `anchored_surrogate`: in exact arithmetic the same value and gradient, but taken
    at the recorded mean and logits, because under bf16 the teacher-forced pass rounds differently from
    generate's, and Eq. 10's 1/σ² (and, at τ = 1e-4, the softmax's ~1/τ Jacobian at near-ties) blows that
    rounding up into a gradient that can point anywhere.
    """
    return step_log_probs(model, rollout, anchored).sum(1)


def step_log_probs(model, rollout: Rollout, anchored: bool = True) -> torch.Tensor:
    """(N, S) log π of each recorded step's action under the current parameters, with gradients: one
    teacher-forced forward (§4). `log_prob` sums them; `rollout.step_kinds` says which step is which.

    At a CoT step the recorded noisy h̃_t is the (detached) action and μ_t = p_{t-1} E is recomputed from the
    parameters; at an answer step the token is the action. Prefill tokens are given, not sampled, and padding
    never counts (zero). `anchored`: see `log_prob`. Each term is computed on its own steps only: the (steps, V)
    tensors are the memory peak.
    """
    r = rollout
    if (r.mode != "hard" and r.sigma_abs == 0) or (r.mode == "hard" and r.tau == 0) or r.answer_tau == 0:
        raise ValueError("greedy rollouts (sigma = 0, tau = 0 or a greedy answer) have no log-probability")
    E = getattr(model, "module", model).embed_tokens.weight
    logits = teacher_forced_logits(model, r)                         # (N, S, V)
    cot, answer = r.step_kinds == STEP_COT, r.step_kinds == STEP_ANSWER
    terms = logits.new_zeros(cot.shape)                              # (N, S) log-prob of each step's action

    # each mode's log-density of its CoT input (drawn in generate's "CoT step")
    if r.mode == "hard":   # categorical log p_{t-1}(x_t) at the CoT temperature (§4)
        terms[cot] = F.log_softmax(logits[cot] / r.tau, -1).gather(-1, r.tokens[cot][:, None])[:, 0]
    elif not anchored:     # Eq. 10: log N(h̃_t; μ_t, σ²I), μ_t = p_{t-1} E, as written
        terms[cot] = gaussian_log_prob(r.cot_embeds[cot], soft_mean(logits[cot], E, r.tau), r.sigma_abs)
    else:                  # Eq. 10's value at the generation point, and its gradient (anchored_surrogate)
        residual = (r.cot_embeds[cot] - r.cot_means[cot]) / r.sigma_abs**2
        terms[cot] = gaussian_log_prob(r.cot_embeds[cot], r.cot_means[cot], r.sigma_abs) + anchored_surrogate(
            logits[cot], E, residual, r.cot_top_ids[cot], r.cot_top_logits[cot], r.tau)
    terms[answer] = F.log_softmax(logits[answer] / r.answer_tau, -1).gather(-1, r.tokens[answer][:, None])[:, 0]
    return terms


def teacher_forced_logits(model, r: Rollout) -> torch.Tensor:
    """(N, S, V) float32 logits that predicted each recorded step: one forward over [prompt; steps] (§4).
    The G samples of a prompt share it: the prompt goes through the model once per group, not once per row
    (the prompt is most of the tokens on short CoTs), and its gradient collects every row's."""
    core = getattr(model, "module", model)                           # unwrap DistributedDataParallel
    E = core.embed_tokens.weight
    S = r.tokens.shape[1]
    step_embeds = E[r.tokens]                                        # (N, S, d)
    if r.mode != "hard":
        step_embeds = torch.where((r.step_kinds == STEP_COT)[..., None], r.cot_embeds.to(E.dtype), step_embeds)
    prompt_ids, prompt_of_row = torch.unique(r.prompt_ids, dim=0, return_inverse=True)  # (U, P) distinct, (N,)
    prompt_pad_lens = torch.zeros(len(prompt_ids), dtype=r.pad_lens.dtype, device=r.pad_lens.device)
    prompt_pad_lens[prompt_of_row] = r.pad_lens
    return model(embeds=step_embeds, prefix=(E[prompt_ids], prompt_pad_lens, prompt_of_row), last=S + 1)[:, :-1]


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
    cot_embeds: torch.Tensor | None  # (N, S, d) float32 noisy inputs h̃_t at CoT steps (soft/fuzzy), detached
    cot_means: torch.Tensor | None   # (N, S, d) float32 the means μ_t = p_{t-1} E they were drawn around (soft/fuzzy)
    cot_top_ids: torch.Tensor | None     # (N, S, K) the K largest logits at each step while generating (soft/fuzzy),
    cot_top_logits: torch.Tensor | None  # (N, S, K) float32: where log_prob takes the softmax's Jacobian
    logp: torch.Tensor               # (N,) log π(trajectory) as computed while generating
    entropy: torch.Tensor            # (N, S) entropy (nats) of the untempered next-token distribution at each step
    cot_text: list[str]              # the hard or greedy-shadow CoT, decoded
    answer_text: list[str]           # prefill + answer, decoded: the text that gets scored
    mode: str
    tau: float                       # CoT temperature
    sigma_abs: float                 # absolute noise scale σ = sigma × RMS(E) (0 = greedy soft/fuzzy)
    answer_tau: float                # answer temperature (0 = greedy)

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
        return torch.cat([torch.rand(self.rows_per_group, generator=g, device=self.device, dtype=torch.float64)
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

    ap = argparse.ArgumentParser(description="Print what a hard/soft/fuzzy CoT says, step by step.")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--mode", default="fuzzy", choices=list(DEFAULT_TAU))
    ap.add_argument("--prompt", default="Tom has 3 boxes with 4 apples each. He eats 2. How many apples are left?")
    ap.add_argument("--tau", type=float, default=None)
    ap.add_argument("--sigma", type=float, default=0.33)
    ap.add_argument("--max-cot-tokens", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompt-format", choices=["raw", "chat"], default="chat", help="chat suits small models")
    args = ap.parse_args()
    if args.max_cot_tokens < 1 or not math.isfinite(args.sigma) or args.sigma < 0 or \
            (args.tau is not None and not (math.isfinite(args.tau) and args.tau >= 0)):
        ap.error("need --max-cot-tokens >= 1 and finite --sigma >= 0 and --tau >= 0")
    folder = resolve_model(args.model)
    model, tok = load_model(folder).eval(), load_tokenizer(folder)
    prompt = tok.encode_prompt(build_prompt(args.prompt, tok, args.prompt_format))
    r = generate(model, tok, [prompt], args.mode, tau=args.tau, sigma=args.sigma,
                 max_cot_tokens=args.max_cot_tokens, answer_tau=0.0, seed=args.seed)
    print(f"mode={r.mode} tau={r.tau} sigma_abs={r.sigma_abs:.4f}  CoT steps={int(r.cot_lens[0])}  "
          f"mean entropy={r.cot_entropy[0]:.3f} nats")
    print("--- CoT, step by step: the " + ("sampled token" if r.mode == "hard" else "greedy shadow token")
          + " and the entropy (nats) of the distribution it came from")
    for s in range(int(r.cot_lens[0])):
        print(f"{s:4d}  {r.entropy[0, s]:6.3f}  {tok.decode([int(r.tokens[0, s])])!r}")
    if r.mode == "hard":
        print("--- CoT text: the tokens the model sampled (the argmax at --tau 0) and read\n" + r.cot_text[0])
    else:  # a soft/fuzzy CoT has no text of its own
        print(f"--- greedy shadow of the {r.mode} CoT (the argmax token at each step; the model read p E + σ ε, "
              "not these)\n" + r.cot_text[0])
    print("--- answer (prefill + greedy answer)\n" + r.answer_text[0])
