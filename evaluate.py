"""Evaluate a model (the base model or a train.py checkpoint) in the six inference settings of PAPER.md §7.

    python evaluate.py --model smollm2-135m-instruct --dataset gsm8k --data-path ../shared/data/gsm8k/test.jsonl \
        --n-samples 32 --k 1,32 --output results.json
    python evaluate.py --model out/best --dataset arithmetic --limit 100 --n-samples 4 --k 1,4

Each setting is a CoT kind (hard / soft / fuzzy), a CoT temperature and a noise multiplier; the answer is
always greedy at test time (§3). Greedy settings draw one rollout per problem, sample settings --n-samples.
Scoring (§5, §7): correct = reward 100 (Math-Verify on the last \\boxed{} of the answer); pass@1 = mean
accuracy over samples; pass@k = the unbiased estimator 1 - C(n-c, k) / C(n, k). The JSON output holds the
config, the table and every generation, so every number in the table can be recomputed from it.
"""

import argparse
import json
import os
import sys
import time

import torch
from tqdm import tqdm

from data import build_prompt, extract_boxed, load_dataset, pass_at_k, reward
from default_model import resolve_model
from model import load_model
from rollout import StopMatcher, generate, noise_scale
from tokenizer import load_tokenizer

# §7: setting -> (CoT kind, CoT τ, sampled?). A sampled soft/fuzzy CoT adds noise σ = --sigma × RMS(E) (§2),
# a greedy one none; hard CoT never has noise. The answer is greedy in every setting.
SETTINGS = {
    "hard-greedy": ("hard", 0.0, False),
    "hard-sample": ("hard", 1.0, True),
    "soft-greedy": ("soft", 0.5, False),
    "soft-sample": ("soft", 0.5, True),
    "fuzzy-greedy": ("fuzzy", 0.0001, False),
    "fuzzy-sample": ("fuzzy", 0.0001, True),
}


def get_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct", help="checkpoint folder, Hub id or the default")
    ap.add_argument("--dataset", default="gsm8k", help="gsm8k | math500 | olympiadbench | arithmetic")
    ap.add_argument("--split", default="test")
    ap.add_argument("--data-path", default=None, help="local JSONL/parquet file or folder instead of the Hub")
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated, from: " + ", ".join(SETTINGS))
    ap.add_argument("--n-samples", type=int, default=32, help="rollouts per problem in the sample settings")
    ap.add_argument("--k", default=None, help="comma-separated k for pass@k (default: 1,N-SAMPLES)")
    ap.add_argument("--limit", type=int, default=None, help="evaluate the first LIMIT problems only")
    ap.add_argument("--max-cot-tokens", type=int, default=512, help="CoT budget L (§3: 512 at evaluation)")
    ap.add_argument("--max-answer-tokens", type=int, default=32)
    ap.add_argument("--sigma", type=float, default=0.33, help="noise multiplier of the sample soft/fuzzy settings")
    ap.add_argument("--prompt-format", choices=["raw", "chat"], default="raw", help="raw: the paper's prompt (§6)")
    ap.add_argument("--batch-size", type=int, default=None, help="rows per generate call (default: 64 CPU, 512 GPU)")
    ap.add_argument("--seed", type=int, default=0, help="problem i uses seed + i, whatever the batching")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                    help="weights' dtype (auto: bfloat16 on CUDA, else float32); softmax stays float32")
    ap.add_argument("--output", default="results.json", help="where to write the JSON")
    args = ap.parse_args(argv)

    args.settings = list(dict.fromkeys(s.strip() for s in args.settings.split(",") if s.strip()))
    errors = [f"unknown setting {s!r} (choose from {', '.join(SETTINGS)})" for s in args.settings if s not in SETTINGS]
    if not args.settings:
        errors.append("--settings is empty")
    try:
        args.k = sorted({int(k) for k in (args.k or f"1,{args.n_samples}").split(",")})
    except ValueError:
        ap.error(f"--k must be comma-separated integers, got {args.k!r}")
    if args.n_samples < 1:
        errors.append("--n-samples must be >= 1")
    elif args.k[0] < 1 or args.k[-1] > args.n_samples:
        errors.append(f"every --k must be in 1..{args.n_samples} (--n-samples), got {args.k}")
    for name in ("limit", "max_cot_tokens", "max_answer_tokens", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            errors.append(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.sigma < 0:
        errors.append(f"--sigma must be >= 0, got {args.sigma}")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    elif args.device.startswith("cuda") and not torch.cuda.is_available():
        errors.append(f"--device {args.device}: CUDA is not available")
    elif args.device != "cpu" and not args.device.startswith("cuda"):
        errors.append(f"--device must be auto, cpu, cuda or cuda:N, got {args.device!r}")
    if errors:
        ap.error("; ".join(errors))
    on_gpu = args.device.startswith("cuda")
    args.dtype = args.dtype if args.dtype != "auto" else "bfloat16" if on_gpu else "float32"
    args.batch_size = args.batch_size or (512 if on_gpu else 64)
    return args


# --------------------------------------------------------------------------- generation and scoring

def noise(name, args) -> float:
    """The noise multiplier of a setting: --sigma for sampled soft/fuzzy CoT, else 0 (§7)."""
    mode, _, sampled = SETTINGS[name]
    return args.sigma if sampled and mode != "hard" else 0.0


def run_setting(model, tok, prompts, labels, name, args) -> list[list[dict]]:
    """Roll out one setting on every prompt: per problem, the list of its samples (greedy: one)."""
    mode, tau, sampled = SETTINGS[name]
    n = args.n_samples if sampled else 1
    per_batch = max(1, args.batch_size // n)  # prompts per call, so a call holds about --batch-size rows
    V = model.embed_tokens.weight.shape[0]  # the stop-text automaton, built once rather than in every call
    matcher = StopMatcher(tok.token_bytes + [b""] * (V - len(tok.token_bytes)), model.embed_tokens.weight.device)
    out = []
    for start in tqdm(range(0, len(prompts), per_batch), desc=name, unit="batch", file=sys.stderr):
        idx = range(start, min(start + per_batch, len(prompts)))
        r = generate(model, tok, [prompts[i] for i in idx], mode, samples_per_prompt=n, tau=tau,
                     sigma=noise(name, args), max_cot_tokens=args.max_cot_tokens,
                     max_answer_tokens=args.max_answer_tokens, answer_tau=0.0,
                     seed=[args.seed + i for i in idx], matcher=matcher)  # seeds: one stream per problem
        cot_lens = r.cot_lens.tolist()
        for j, i in enumerate(idx):
            samples = []
            for row in range(j * n, (j + 1) * n):  # rows are grouped by prompt
                rew = reward(r.answer_text[row], labels[i])  # Eq. 11: 100 / 10 / 0
                samples.append({"cot": r.cot_text[row], "answer": r.answer_text[row],
                                "extracted": extract_boxed(r.answer_text[row]), "reward": rew,
                                "correct": rew == 100, "cot_len": cot_lens[row]})
            out.append(samples)
    return out


def summarize(name, generations: list[list[dict]], ks: list[int]) -> dict:
    """One table row, in percent. A greedy setting has n = 1: its k draws would all be the same rollout,
    so its pass@k is its pass@1 (the accuracy), hence the min(k, n)."""
    n = len(generations[0])
    flat = [s for samples in generations for s in samples]
    row = {"setting": name, "samples": n}
    for k in ks:
        scores = [pass_at_k(n, sum(s["correct"] for s in samples), min(k, n)) for samples in generations]
        row[f"pass@{k}"] = 100 * sum(scores) / len(scores)
    row["cot_len"] = sum(s["cot_len"] for s in flat) / len(flat)
    row["extraction_rate"] = 100 * sum(s["extracted"] is not None for s in flat) / len(flat)
    return row


def markdown(rows: list[dict], ks: list[int]) -> str:
    head = ["setting", "samples"] + [f"pass@{k}" for k in ks] + ["CoT tokens", "boxed %", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["setting"], str(r["samples"])] + [f"{r[f'pass@{k}']:.1f}" for k in ks]
        lines.append("| " + " | ".join(cells + [f"{r['cot_len']:.1f}", f"{r['extraction_rate']:.1f}",
                                               f"{r['seconds']:.0f}"]) + " |")
    lines.append("(greedy settings draw one rollout per problem: their pass@k is their accuracy)")
    by_name = {r["setting"]: r for r in rows}
    for kind in ("hard", "soft", "fuzzy"):  # §8's format: greedy / sample pass@1 / sample pass@k, largest k
        greedy, sample = by_name.get(kind + "-greedy"), by_name.get(kind + "-sample")
        if greedy and sample:
            lines.append(f"{kind} inference, greedy / sample pass@1 / pass@{ks[-1]}: {greedy['pass@1']:.1f} / "
                         f"{sample['pass@1']:.1f} / {sample[f'pass@{ks[-1]}']:.1f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main

def main(argv=None) -> dict:
    args = get_args(argv)
    folder = resolve_model(args.model)  # a train.py checkpoint is a folder with the tokenizer files in it
    model = load_model(folder, device=args.device, dtype=getattr(torch, args.dtype)).eval()
    tok = load_tokenizer(folder)
    problems = load_dataset(args.dataset, args.split, data_path=args.data_path, limit=args.limit)  # never empty
    prompts = [tok.encode_prompt(build_prompt(p.question, tok, args.prompt_format)) for p in problems]  # BOS if wanted
    labels = [p.answer for p in problems]
    print(f"{args.model} ({folder}) on {args.dataset}/{args.split}: {len(problems)} problems, "
          f"settings {','.join(args.settings)}, {args.device} {args.dtype}, batch {args.batch_size} rows", file=sys.stderr)

    rows, generations = [], {}
    for name in args.settings:
        t0 = time.time()
        generations[name] = run_setting(model, tok, prompts, labels, name, args)
        rows.append({**summarize(name, generations[name], args.k), "seconds": time.time() - t0})
        tqdm.write(f"{name}: " + ", ".join(f"{k} {v:.1f}" for k, v in rows[-1].items() if k.startswith("pass@")),
                   file=sys.stderr)
    table = markdown(rows, args.k)
    print(table)

    config = {**vars(args), "model_folder": os.path.abspath(folder), "torch_version": torch.__version__,
              "device_name": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu",
              "settings_spec": {s: {"mode": SETTINGS[s][0], "cot_tau": SETTINGS[s][1], "noise": noise(s, args),
                                   "sigma_abs": noise_scale(model, noise(s, args)),
                                   "samples": args.n_samples if SETTINGS[s][2] else 1} for s in args.settings}}
    result = {"config": config, "table": rows, "markdown": table,
              "problems": [{"question": p.question, "label": p.answer,
                            "generations": {name: generations[name][i] for name in args.settings}}
                           for i, p in enumerate(problems)]}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.output}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
