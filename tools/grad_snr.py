"""The signal-to-noise ratio of one RLOO step's gradient, per parameter group and per part (CoT terms, answer terms).

    python tools/grad_snr.py --mode fuzzy                      # the lab, base model, 8 batches: ~10 min on 2 cores
    python tools/grad_snr.py --mode soft --sigma 0.33 --output results/x.md     # also x.md and x.json

A batch is what one train.py step computes: B prompts × G samples (lab 2 × 16), their rewards (Eq. 11), RLOO
advantages (Eq. 12) and g, the gradient of the loss (Eq. 13-14) before clipping, the update train.py applies.
Batch k (1..K) takes training step k's problems and row seeds (train.step_problems, train.row_seed): K independent
draws of g on the same weights. From their Gram matrix g_i · g_j:

    E‖g‖²   = mean_i ‖g_i‖²
    ‖E g‖²  = mean over pairs i ≠ j of g_i · g_j      unbiased, as E[g_i · g_j] = E g_i · E g_j; the square of the
                                                     mean batch gradient would add tr Cov(g) / K
    cos     = ‖E g‖² / E‖g‖²                         about the cosine of two batches' gradients
    SNR²    = cos / (1 − cos) = ‖E g‖² / tr Cov(g)
    rollouts per step for SNR² = T:   n_T = n · T / SNR²(n),   n = B · G

since tr Cov(g) of a mean over n rollouts falls as 1/n, SNR²(n) = n · SNR²(1): exactly when n grows by more
prompts (independent groups), about when it grows by more samples per prompt (the RLOO baseline changes with G).
cos ≤ 0 (no signal found in K batches) gives n_T = ∞. Each cosine comes with its jackknife standard error over the
batches (leave one out), and "n_T at least" is n_T at cos + 2 SE: fewer rollouts are unlikely to reach T.

Groups: embeddings (model.embed_tokens.weight, the output head too when tied, §1), transformer (every other
parameter) and all. Parts: the CoT steps' terms of log π, the answer tokens' terms (rollout.step_log_probs split
by STEP_COT / STEP_ANSWER: the prefill's terms are zero), and the whole step, their sum. The part sizes per step
are tools/gradient_split.py's measurement; this one asks how much of each is signal.
"""

import argparse
import json
import math
import os
import shlex
import sys
import tempfile
import time
from contextlib import nullcontext

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from checkpoint import atomic_write  # noqa: E402
from config import DEFAULTS, MIN_SIGMA, finite_float  # noqa: E402
from data import DATASET_DEFAULTS, FALLBACK_DEFAULTS, build_prompt, load_dataset, reward  # noqa: E402
from default_model import resolve_model  # noqa: E402
from model import load_model  # noqa: E402
from rloo import rloo_advantages, rloo_loss  # noqa: E402
from rollout import DEFAULT_TAU, STEP_ANSWER, STEP_COT, check_context, generate, step_log_probs  # noqa: E402
from tokenizer import load_tokenizer  # noqa: E402
from train import row_seed, step_problems  # noqa: E402

PARTS = {"cot": STEP_COT, "answer": STEP_ANSWER}   # the parts a gradient is split into; "whole" is their sum
GROUPS = ("embeddings", "transformer")             # "all" is both


# --------------------------------------------------------------------------- the estimates

def moments(gram: torch.Tensor) -> tuple[float, float]:
    """(E‖g‖², ‖E g‖²) from the (K, K) Gram matrix of K independent gradients: the mean of its diagonal, and the
    mean of its off-diagonal entries (the pairwise estimator)."""
    K = len(gram)
    diagonal = gram.diagonal().sum()
    return float(diagonal / K), float((gram.sum() - diagonal) / (K * (K - 1)))


def cosine(gram: torch.Tensor) -> float:
    mean_sq, signal = moments(gram)
    return signal / mean_sq if mean_sq > 0 else math.nan    # nan: every batch's gradient was zero


def jackknife_se(gram: torch.Tensor) -> float:
    """Standard error of `cosine` from its K leave-one-batch-out values (K >= 3)."""
    K = len(gram)
    out = torch.tensor([cosine(gram[keep][:, keep]) for keep in ([j for j in range(K) if j != i] for i in range(K))],
                       dtype=torch.float64)
    return math.sqrt((K - 1) / K * float(((out - out.mean()) ** 2).sum()))


def snr2(cos: float) -> float:
    return cos / (1 - cos) if cos < 1 else math.inf


def rollouts_needed(cos: float, n: int, target: float) -> float:
    """n_T = n · T / SNR²(n): SNR² grows as the rollouts per step (see the module's docstring)."""
    s = snr2(cos)
    return n * target / s if s > 0 else math.inf


def figures(dots: torch.Tensor, n: int, target: float) -> list[dict]:
    """One row per group × part from dots (groups, parts, parts, K, K): dots[g, p, q, i, j] = g_{i,p} · g_{j,q}
    restricted to group g, whose sums over groups and parts are the Gram matrices of "all" and "whole"."""
    rows = []
    for group in ("all", *GROUPS):
        by_part = dots.sum(0) if group == "all" else dots[GROUPS.index(group)]
        for part in (*PARTS, "whole"):
            gram = by_part.sum((0, 1)) if part == "whole" else by_part[list(PARTS).index(part), list(PARTS).index(part)]
            (mean_sq, signal), cos, se = moments(gram), cosine(gram), jackknife_se(gram)
            rows.append({"group": group, "part": part, "mean_sq_norm": mean_sq, "signal": signal, "cos": cos,
                         "cos_se": se, "snr2": snr2(cos), "rollouts_needed": rollouts_needed(cos, n, target),
                         "rollouts_needed_at_least": rollouts_needed(cos + 2 * se, n, target)})
    return rows


def dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """a · b summed in float64, in chunks: the pairwise terms can be 10⁻⁴ of the norms, and a float64 copy of a
    10⁸-entry gradient would cost 0.8 GB."""
    return sum(float(x.double() @ y.double()) for x, y in zip(a.split(1 << 22), b.split(1 << 22)))


# --------------------------------------------------------------------------- one batch (a train.py step)

def step_batch(model, tok, train_set, problems: list[int], step: int, args):
    """Training step `step`'s rollouts, on its problems with its row seeds (train.py's Trainer.rollouts on one
    rank), their rewards (Eq. 11) and RLOO advantages (Eq. 12)."""
    B, G = args.prompts, args.samples
    prompts = [tok.encode_prompt(build_prompt(train_set[p].question, tok, args.prompt_format)) for p in problems]
    roll = generate(model, tok, prompts, args.mode, samples_per_prompt=G, tau=args.tau, sigma=args.sigma,
                    max_cot_tokens=args.max_cot_tokens, max_answer_tokens=DEFAULTS["max_answer_tokens"],
                    answer_tau=DEFAULTS["answer_tau"],
                    seed=[row_seed(args.seed, step, problems[r // G], r % G) for r in range(B * G)])
    gold = [train_set[problems[r // G]] for r in range(B * G)]
    rewards = torch.tensor([reward(text, p.answer, p.numeral_answer) for p, text in zip(gold, roll.answer_text)])
    return roll, rewards, rloo_advantages(rewards.view(B, G)).flatten()


def part_gradients(model, roll, advantages: torch.Tensor, params: list, micro_batch: int) -> dict[str, torch.Tensor]:
    """{part: the step loss's (Eq. 13-14) gradient through that part's terms of log π}, flat float32 vectors in
    `params` order. As in train.py, the rows in micro-batches, those without advantage skipped (they add zero)."""
    sums = {part: [torch.zeros_like(p) for p in params] for part in PARTS}
    rows = advantages.nonzero()[:, 0].tolist()
    for start in range(0, len(rows), micro_batch):
        chunk = rows[start:start + micro_batch]
        sub = roll.select(chunk)
        terms = step_log_probs(model, sub)                                       # (rows, steps)
        for n, (part, kind) in enumerate(PARTS.items()):
            loss = rloo_loss((terms * (sub.step_kinds == kind)).sum(1), advantages[chunk], total=len(advantages))
            grads = torch.autograd.grad(loss, params, retain_graph=n < len(PARTS) - 1, allow_unused=True)
            for total, g in zip(sums[part], grads):
                if g is not None:   # a parameter this part does not reach
                    total += g
    return {part: torch.cat([g.flatten() for g in total]) for part, total in sums.items()}


# --------------------------------------------------------------------------- the command line

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", required=True, choices=list(DEFAULT_TAU), help="the CoT kind (rollout.KINDS)")
    ap.add_argument("--sigma", type=finite_float, default=None, help="noise multiplier (§2; default: the dataset's)")
    ap.add_argument("--tau", type=finite_float, default=None, help="CoT temperature (default: the mode's, " +
                    ", ".join(f"{m} {t:g}" for m, t in DEFAULT_TAU.items()) + ")")
    ap.add_argument("--dataset", default="lab", help="lab (default), arithmetic, gsm8k, ... (data.py)")
    ap.add_argument("--model", default=DEFAULTS["model"])
    ap.add_argument("--batches", type=int, default=8, help="K independent batches (>= 3)")
    ap.add_argument("--prompts", type=int, default=None, help="B prompts per batch (default: the dataset's)")
    ap.add_argument("--samples", type=int, default=None, help="G samples per prompt (default: the dataset's)")
    ap.add_argument("--max-cot-tokens", type=int, default=None, help="CoT budget (default: the dataset's)")
    ap.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="train.py's --seed: which problems and noise")
    ap.add_argument("--target-snr2", type=finite_float, default=1.0, help="the SNR² the rollouts-needed column is for")
    ap.add_argument("--output", default=None, help="also write the tables to this .md file and the numbers "
                                                    "(the Gram matrices too) beside it as .json")
    args = ap.parse_args(argv)
    preset = DATASET_DEFAULTS.get(args.dataset, FALLBACK_DEFAULTS)
    args.sigma = preset["sigma"] if args.sigma is None else args.sigma
    args.tau = DEFAULT_TAU[args.mode] if args.tau is None else args.tau
    args.prompts = preset["prompts_per_step"] if args.prompts is None else args.prompts
    args.samples = preset["samples_per_prompt"] if args.samples is None else args.samples
    args.max_cot_tokens = preset["max_cot_tokens"] if args.max_cot_tokens is None else args.max_cot_tokens
    args.prompt_format = preset["prompt_format"]
    problems = [text for bad, text in [
        (args.batches < 3, "--batches >= 3 (pairs of batches, and a jackknife over them)"),
        (args.prompts < 1, "--prompts >= 1"),
        (args.samples < 2, "--samples >= 2 (the RLOO baseline needs other samples)"),
        (args.max_cot_tokens < 1, "--max-cot-tokens >= 1"),
        (args.tau <= 0, "--tau > 0 (a greedy CoT has no log-probability)"),
        (args.mode != "hard" and args.sigma < MIN_SIGMA, f"--sigma >= {MIN_SIGMA:g} (σ = 0 is a greedy CoT, "
                                                         "which has no log-probability)"),
        (args.target_snr2 <= 0, "--target-snr2 > 0"),
        (args.output is not None and not args.output.endswith(".md"), "--output ending in .md")] if bad]
    if problems:
        ap.error("need " + "; ".join(problems))
    return args


def table(rows: list[dict], n: int, target: float) -> str:
    def number(x: float) -> str:
        return "∞" if math.isinf(x) else f"{x:.3g}"
    lines = [f"| group | part | E‖g‖² | ‖E g‖² | cos ± SE | SNR² | rollouts per step for SNR² = {target:g} "
             f"(now {n}) | at least (cos + 2 SE) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['group']} | {r['part']} | {number(r['mean_sq_norm'])} | {number(r['signal'])} | "
                     f"{r['cos']:+.4f} ± {r['cos_se']:.4f} | {number(r['snr2'])} | {number(r['rollouts_needed'])} | "
                     f"{number(r['rollouts_needed_at_least'])} |")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        train_set = load_dataset(args.dataset, "train")
        folder = resolve_model(args.model)
        tok = load_tokenizer(folder)
    except (ValueError, OSError, ImportError) as e:
        raise SystemExit(f"{args.dataset} / {args.model}: {e}") from None
    if len(train_set) < args.prompts:
        raise SystemExit(f"the {args.dataset} training set has {len(train_set)} problems, fewer than --prompts "
                         f"{args.prompts}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(folder, device=device).eval()      # float32 weights, as train.py's (bf16 autocast on a GPU)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else nullcontext()
    batches = [step_problems(k, len(train_set), args.prompts, args.seed) for k in range(1, args.batches + 1)]
    used = [train_set[p] for b in batches for p in b]
    check_context([tok.encode_prompt(build_prompt(p.question, tok, args.prompt_format)) for p in used],
                  [p.question for p in used], args.max_cot_tokens, DEFAULTS["max_answer_tokens"], model.cfg.max_seq_len,
                  tok)
    E = model.embed_tokens.weight
    params = [E] + [p for p in model.parameters() if p is not E]
    slices = [slice(0, E.numel()), slice(E.numel(), sum(p.numel() for p in params))]   # GROUPS in the flat vector
    n, K = args.prompts * args.samples, args.batches
    dots = torch.zeros(len(GROUPS), len(PARTS), len(PARTS), K, K, dtype=torch.float64)
    per_batch = []
    noise = "" if args.mode == "hard" else f" σ {args.sigma:g}"
    setting = (f"{args.mode} τ {args.tau:g}{noise}, {args.dataset}, {args.model}, {K} batches of {args.prompts} × "
               f"{args.samples} = {n} rollouts (training steps 1-{K} at seed {args.seed}), CoT ≤ {args.max_cot_tokens}")
    print(setting, file=sys.stderr)
    # The K gradients (two parts, 0.5 GB each at 135M parameters) wait on disk, not in memory, for their pairs.
    with tempfile.TemporaryDirectory(prefix="grad_snr_") as spill:
        for j, problems in enumerate(batches):
            t0 = time.time()
            with autocast:
                roll, rewards, advantages = step_batch(model, tok, train_set, problems, j + 1, args)
                grads = part_gradients(model, roll, advantages.to(device), params, DEFAULTS["micro_batch"])
            grads = {part: g.cpu() for part, g in grads.items()}
            torch.save(grads, os.path.join(spill, f"{j}.pt"))
            for i in range(j + 1):
                earlier = grads if i == j else torch.load(os.path.join(spill, f"{i}.pt"), mmap=True, weights_only=True)
                for g, where in enumerate(slices):
                    for p, a in enumerate(PARTS):
                        for q, b in enumerate(PARTS):
                            dots[g, p, q, i, j] = dots[g, q, p, j, i] = dot(earlier[a][where], grads[b][where])
            per_batch.append({"step": j + 1, "problems": problems, "mean_reward": rewards.mean().item(),
                              "accuracy": (rewards == 100).float().mean().item(),
                              "groups_with_signal": int(rewards.view(args.prompts, -1).std(1).gt(0).sum()),
                              "mean_cot_len": roll.cot_lens.float().mean().item(), "seconds": time.time() - t0})
            last = per_batch[-1]
            print(f"batch {j + 1}/{K}: reward {last['mean_reward']:.1f}, accuracy {last['accuracy']:.2f}, "
                  f"{last['groups_with_signal']}/{args.prompts} groups with signal, {last['seconds']:.0f} s",
                  file=sys.stderr)
    rows = figures(dots, n, args.target_snr2)
    out = (f"{setting}; mean reward {sum(b['mean_reward'] for b in per_batch) / K:.1f}, accuracy "
           f"{sum(b['accuracy'] for b in per_batch) / K:.3f}, groups with signal "
           f"{sum(b['groups_with_signal'] for b in per_batch)}/{K * args.prompts}\n\n"
           + table(rows, n, args.target_snr2))
    print(out)
    if args.output:
        command = "python tools/grad_snr.py " + shlex.join(argv)
        atomic_write(args.output, f"`{command}` on {device}, torch {torch.__version__}, {torch.get_num_threads()} "
                     f"threads\n\n{out}\n")
        result = {"command": command, "settings": {k: v for k, v in vars(args).items() if k != "output"},
                  "device": device, "rows": rows, "batches": per_batch, "groups": GROUPS, "parts": list(PARTS),
                  "dots": dots.tolist()}
        atomic_write(args.output[:-len(".md")] + ".json", json.dumps(finite(result), indent=1, allow_nan=False))



def finite(x):
    """x with every inf and NaN replaced by None: JSON has neither (an SNR² of a non-positive cosine is inf)."""
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [finite(v) for v in x]
    return None if isinstance(x, float) and not math.isfinite(x) else x


if __name__ == "__main__":
    main()
