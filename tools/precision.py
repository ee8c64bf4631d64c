"""What bf16 autocast does to training and greedy decoding, measured on real rollouts (docs/paper.md §4, Eq. 10).

    python tools/precision.py                                   # the default model on CPU (bf16 autocast via oneDNN)
    python tools/precision.py --output results/precision.md     # the same, also written as markdown

Users train in bf16 on GPUs; the tests run in fp32 on a CPU. Three parts:

grad    For each mode and seed, roll out --samples trajectories under bf16 autocast (as train.py does on a
        GPU), then compute the update's gradient Σ_i A_i ∇log π_i (A = +1, −1, ...) on that same rollout as
          reference  fp32, anchored log_prob (rollout.anchored_surrogate)
          train.py   bf16 autocast, anchored log_prob
          textbook   bf16 autocast, Eq. 10 with the teacher-forced mean (log_prob(anchored=False))
        and report each one's cosine and norm ratio to the reference, the gap between the log π recorded while
        generating and the teacher-forced textbook one, and ‖μ_θ − μ_gen‖/σ at each CoT step.
greedy  Greedy fuzzy and hard CoTs in fp32 and under bf16 autocast, with the head in float32 (model.py's
        default) or in bf16: how many rows leave the fp32 path, and the fp32 top-2 logit margin where they do.
time    What the policy costs: a rollout with the float32 vs the bf16 head, an update anchored vs textbook.
"""

import argparse
import math
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from data import build_prompt, load_dataset
from default_model import resolve_model
from model import load_model
from rollout import STEP_COT, generate, log_prob, soft_mean, teacher_forced_logits
from tokenizer import load_tokenizer


def flat_grad(model, rollout, advantages, bf16: bool, anchored: bool = True) -> torch.Tensor:
    """The update's gradient Σ_i A_i ∇log π_i as one vector (the loss of Eq. 14 up to sign and scale)."""
    model.zero_grad(set_to_none=True)
    with torch.autocast(model.embed_tokens.weight.device.type, dtype=torch.bfloat16, enabled=bf16):
        (advantages * log_prob(model, rollout, anchored=anchored)).sum().backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def compare(grad: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(cosine, norm ratio) of a gradient against the reference, in float64 (10^8 terms)."""
    grad, reference = grad.double(), reference.double()
    return ((grad @ reference / (grad.norm() * reference.norm())).item(), (grad.norm() / reference.norm()).item())


@torch.no_grad()
def mean_drift(model, rollout) -> list[float]:
    """‖μ_θ − μ_gen‖/σ at every CoT step: the teacher-forced bf16 mean against the one the noise was drawn around."""
    with torch.autocast(model.embed_tokens.weight.device.type, dtype=torch.bfloat16):
        logits = teacher_forced_logits(model, rollout)
    mean = soft_mean(logits, model.embed_tokens.weight, rollout.tau)
    drift = (mean - rollout.cot_means).norm(dim=-1) / rollout.sigma_abs
    return drift[rollout.step_kinds == STEP_COT].tolist()


def measure(model, tok, prompt, mode: str, seed: int, args) -> dict:
    device = model.embed_tokens.weight.device
    model.eval()
    with torch.autocast(device.type, dtype=torch.bfloat16):  # generation as train.py does it on a GPU
        roll = generate(model, tok, [prompt], mode, samples_per_prompt=args.samples, sigma=args.sigma,
                        max_cot_tokens=args.max_cot_tokens, seed=seed)
    advantages = torch.tensor([(-1.0) ** i for i in range(args.samples)], device=device)
    reference = flat_grad(model, roll, advantages, bf16=False)
    bf16 = flat_grad(model, roll, advantages, bf16=True)
    textbook = flat_grad(model, roll, advantages, bf16=True, anchored=False)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        gap = (roll.logp - log_prob(model, roll, anchored=False)).tolist()
    row = {"mode": mode, "seed": seed, "cot_steps": int(roll.cot_lens.sum()), "logp_gap": gap,
           "bf16": compare(bf16, reference), "textbook": compare(textbook, reference)}
    row["drift"] = mean_drift(model, roll) if mode != "hard" else [0.0]
    return row


@torch.no_grad()
def greedy_divergences(model, tok, prompts, mode: str, max_cot_tokens: int) -> list[tuple[int, float] | None]:
    """Greedy CoT (hard τ = 0, soft/fuzzy σ = 0) in fp32 and under bf16 autocast, per row: None if the two CoTs
    are the same token for token, else (first step where they differ, the fp32 logit margin top-1 − top-2
    there). bf16 can only be expected to agree where that margin is not a near-tie."""
    device = model.embed_tokens.weight.device
    kw = dict(tau=0.0 if mode == "hard" else None, sigma=0.0, max_cot_tokens=max_cot_tokens, answer_tau=0.0)
    fp32 = generate(model, tok, prompts, mode, **kw)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        bf16 = generate(model, tok, prompts, mode, **kw)
    top2 = teacher_forced_logits(model, fp32).topk(2, dim=-1).values                  # (N, S, 2)
    margins = top2[..., 0] - top2[..., 1]
    out = []
    for row in range(len(prompts)):
        a, b = fp32.tokens[row][fp32.step_kinds[row] == STEP_COT], bf16.tokens[row][bf16.step_kinds[row] == STEP_COT]
        n = min(len(a), len(b))
        differ = (a[:n] != b[:n]).nonzero()
        first = int(differ[0]) if len(differ) else (n if len(a) != len(b) else None)
        out.append(None if first is None else (first, margins[row, first].item()))
    return out


def table(rows: list[dict]) -> str:
    head = ["mode", "seed", "CoT steps", "generation − teacher-forced log π (textbook), per row",
            "‖μ_θ − μ_gen‖/σ median / max", "textbook bf16 grad: cos, norm ratio", "train.py bf16 grad: cos, norm ratio"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["mode"], str(r["seed"]), str(r["cot_steps"]), ", ".join(f"{g:+.2f}" for g in r["logp_gap"]),
            f"{statistics.median(r['drift']):.2f} / {max(r['drift']):.2f}",
            f"{r['textbook'][0]:.4f}, {r['textbook'][1]:.2f}", f"{r['bf16'][0]:.4f}, {r['bf16'][1]:.3f}"]) + " |")
    return "\n".join(lines)


def greedy_table(model, tok, prompts, args) -> str:
    lines = ["| greedy CoT | head under autocast | rows whose bf16 CoT leaves the fp32 one | fp32 top-2 margin where it does |",
             "|---|---|---|---|"]
    for mode in ("fuzzy", "hard"):
        for fp32_logits in (True, False):
            model.fp32_logits = fp32_logits
            found = greedy_divergences(model, tok, prompts, mode, args.max_cot_tokens)
            margins = sorted(round(d[1], 3) for d in found if d is not None)
            lines.append(f"| {mode} | {'float32' if fp32_logits else 'bf16'} | {len(margins)} of {len(found)} | "
                         f"{', '.join(map(str, margins)) or '-'} |")
            print(lines[-1], file=sys.stderr)
    model.fp32_logits = True
    return "\n".join(lines)


def time_table(model, tok, prompt, args) -> str:
    """Seconds per rollout and per update (log_prob forward + backward) under bf16 autocast, each variant in
    turn within a round, median of --rounds (so a busy moment on a shared machine slows every variant)."""
    device = model.embed_tokens.weight.device
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    with autocast():
        roll = generate(model, tok, [prompt], "fuzzy", samples_per_prompt=args.samples, max_cot_tokens=args.max_cot_tokens, seed=0)
    advantages = torch.tensor([(-1.0) ** i for i in range(args.samples)], device=device)

    def rollout(fp32_logits) -> int:
        model.fp32_logits = fp32_logits
        with autocast():
            return generate(model, tok, [prompt], "fuzzy", samples_per_prompt=args.samples,
                            max_cot_tokens=args.max_cot_tokens, seed=0).tokens.shape[1]   # decoding steps

    def update(anchored, bf16=True) -> int:
        flat_grad(model, roll, advantages, bf16=bf16, anchored=anchored)
        return 1

    variants = {"rollout, float32 head (ms per decoding step)": lambda: rollout(True),
                "rollout, bf16 head (ms per decoding step)": lambda: rollout(False),
                "update, anchored: train.py (ms)": lambda: update(True),
                "update, textbook Eq. 10 (ms)": lambda: update(False),
                "update in float32 (CPU training), anchored (ms)": lambda: update(True, bf16=False),
                "update in float32 (CPU training), textbook (ms)": lambda: update(False, bf16=False)}
    for run in variants.values():  # warm-up
        run()
    ms = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            t0 = time.perf_counter()
            per = run()
            ms[name].append(1000 * (time.perf_counter() - t0) / per)
    model.fp32_logits = True
    lines = [f"| fuzzy, {args.samples} rows, CoT ≤ {args.max_cot_tokens}, bf16 autocast unless said | median of {args.rounds} | min–max |",
             "|---|---|---|"]
    for name, t in ms.items():
        lines.append(f"| {name} | {statistics.median(t):.1f} | {min(t):.1f}–{max(t):.1f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--parts", default="grad,greedy,time", help="grad: gradients; greedy: greedy agreement; time: cost")
    ap.add_argument("--modes", default="soft,fuzzy,hard", help="modes of the gradient part")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--samples", type=int, default=2, help="trajectories per rollout")
    ap.add_argument("--greedy-prompts", type=int, default=8, help="problems of the greedy-agreement part")
    ap.add_argument("--max-cot-tokens", type=int, default=64)
    ap.add_argument("--sigma", type=float, default=0.33)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds of the time part, after a warm-up")
    ap.add_argument("--output", default=None, help="also write the markdown tables here")
    args = ap.parse_args(argv)
    modes, parts = args.modes.split(","), args.parts.split(",")
    if any(m not in ("hard", "soft", "fuzzy") for m in modes) or any(p not in ("grad", "greedy", "time") for p in parts):
        ap.error("--modes from hard,soft,fuzzy; --parts from grad,greedy,time")
    if args.samples < 2 or args.max_cot_tokens < 1 or args.greedy_prompts < 1 or args.rounds < 1 or not math.isfinite(args.sigma) or args.sigma <= 0:
        ap.error("--samples >= 2, --max-cot-tokens >= 1, --greedy-prompts >= 1, --rounds >= 1, --sigma > 0 and finite")

    folder = resolve_model(args.model)
    model, tok = load_model(folder, device=args.device), load_tokenizer(folder)  # fp32 master weights
    problems = load_dataset("arithmetic", "validation", limit=args.greedy_prompts)
    prompts = [tok.encode_prompt(build_prompt(p.question, tok, "chat")) for p in problems]
    sections = []
    if "grad" in parts:
        rows = []
        for mode in modes:
            for seed in map(int, args.seeds.split(",")):
                rows.append(measure(model, tok, prompts[0], mode, seed, args))
                print(table(rows[-1:]).splitlines()[-1], file=sys.stderr)
        sections.append(table(rows))
    if "greedy" in parts:
        sections.append(greedy_table(model, tok, prompts, args))
    if "time" in parts:
        sections.append(time_table(model, tok, prompts[0], args))
    out = "\n\n".join(sections)
    print(out)
    if args.output:
        with open(args.output, "w") as f:
            f.write(f"`python tools/precision.py {' '.join(argv if argv is not None else sys.argv[1:])}` on {args.device}, "
                    f"torch {torch.__version__}, {torch.get_num_threads()} threads\n\n{out}\n")


if __name__ == "__main__":
    main()
