"""Evaluate a model (the base model or a train.py checkpoint) in the six inference settings of docs/paper.md §7.

    python evaluate.py --model out/best --dataset gsm8k                  # the paper's evaluation (a GPU job)
    python evaluate.py --model out/best --dataset arithmetic --limit 20  # CPU-sized defaults, see below

Each setting is a CoT kind (hard / soft / fuzzy), a CoT temperature and a noise multiplier; the answer is
always greedy at test time (§3). Greedy settings draw one rollout per problem, sample settings --n-samples.
Scoring (§5, §7): correct = reward 100 (Math-Verify on the last \\boxed{} of the answer); pass@1 = mean
accuracy over samples; pass@k = the unbiased estimator 1 - C(n-c, k) / C(n, k).

Defaults per dataset: the paper's datasets get the paper's evaluation (a 512-token CoT budget, the raw
prompt, 32 samples: §3, §6, §7); `arithmetic`, which is not the paper's, gets train.py's CPU-sized values
(data.DATASET_DEFAULTS). Explicit flags override them.

Output: --output (default results/eval_<model>_<dataset>.json) holds the config, the table, the CoT entropy
profile of each setting and every generation, so every number can be recomputed from it; the markdown table
goes next to it (.md). It is rewritten atomically after each setting, so Ctrl-C loses at most the setting in
progress, and running the same command again skips the settings it already holds (a different
configuration is refused; --overwrite starts over).
"""

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time

import torch
from tqdm import tqdm

from checkpoint import RunLock, StopSignal, atomic_write, earlier_result
from data import (DATASET_DEFAULTS, FALLBACK_DEFAULTS, Problem, build_prompt, extract_boxed, load_dataset, pass_at_k,
                  reward)
from default_model import resolve_model
from model import load_model, pick_device
from rollout import PREFILL_BUDGET, PREFILL_EARLY, STEP_COT, StopMatcher, check_context, generate, noise_scale
from tokenizer import load_tokenizer

# §7: setting -> (CoT kind, CoT τ, sampled?). A sampled soft/fuzzy CoT adds noise σ = --sigma × RMS(E) (§2),
# a greedy one none; hard CoT never has noise. The answer is greedy in every setting. After the paper's six, two
# other methods' kinds (§9), at their authors' T = 1: sampled with their own noise, greedy without (gumbel:
# g = 0; multiplex: K copies of the argmax, which is hard-greedy).
SETTINGS = {
    "hard-greedy": ("hard", 0.0, False),
    "hard-sample": ("hard", 1.0, True),
    "soft-greedy": ("soft", 0.5, False),
    "soft-sample": ("soft", 0.5, True),
    "fuzzy-greedy": ("fuzzy", 0.0001, False),
    "fuzzy-sample": ("fuzzy", 0.0001, True),
    "gumbel-greedy": ("gumbel", 1.0, False),
    "gumbel-sample": ("gumbel", 1.0, True),
    "multiplex-greedy": ("multiplex", 1.0, False),
    "multiplex-sample": ("multiplex", 1.0, True),
}
PAPER_SETTINGS = list(SETTINGS)[:6]  # the default --settings: the paper's evaluation (§7)
PAPER_EVAL_COT_TOKENS = 512  # §3: the CoT budget at evaluation, in every setting, whatever the training budget
CPU_BATCH_ROWS, GPU_BATCH_ROWS = 16, 512  # rows per generate call (on CPU short calls waste less on early stops)
PREFILLS = (PREFILL_EARLY, PREFILL_BUDGET)  # §3: what follows the CoT, one or the other
# Configuration that changes the generations: a finished setting in --output is reused only if these match.
SAME_RESULTS = ("model_folder", "n_samples", "max_cot_tokens", "max_answer_tokens", "sigma", "prompt_format",
                "seed", "dtype")


def dataset_defaults(dataset: str) -> dict:
    """The evaluation defaults of a dataset: the paper's for its datasets, train.py's CPU-sized ones for
    `arithmetic` and `lab` (evaluated at their training budget), e.g. {"max_cot_tokens": 48, "prompt_format": "chat", ...}."""
    train = DATASET_DEFAULTS.get(dataset, FALLBACK_DEFAULTS)
    cot = train["max_cot_tokens"] if dataset in ("arithmetic", "lab") else PAPER_EVAL_COT_TOKENS
    return {"max_cot_tokens": cot, "prompt_format": train["prompt_format"], "n_samples": train["samples_per_prompt"]}


def default_output(model: str, dataset: str, split: str) -> str:
    """results/eval_<model>_<dataset>.json (plus _<split> unless test); a local folder is named by its last two
    parts (out/best -> out-best), a Hub id by the whole id; anything but letters, digits, . _ - becomes -."""
    name = "-".join(os.path.abspath(model).split(os.sep)[-2:]) if os.path.exists(model) else model
    parts = [name, dataset] + ([split] if split != "test" else [])
    safe = [re.sub(r"[^A-Za-z0-9._-]+", "-", p).strip("-.") or "x" for p in parts]
    return os.path.join("results", "eval_" + "_".join(safe) + ".json")


def get_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct", help="checkpoint folder, Hub id or the default")
    ap.add_argument("--dataset", default="gsm8k", help="gsm8k | math500 | olympiadbench | arithmetic | lab")
    ap.add_argument("--split", default="test")
    ap.add_argument("--data-path", default=None, help="local JSONL/parquet file or folder instead of the Hub")
    ap.add_argument("--settings", default=",".join(PAPER_SETTINGS),
                    help="comma-separated, from: " + ", ".join(SETTINGS) + " (default: the paper's six)")
    ap.add_argument("--n-samples", type=int, help="rollouts per problem in sample settings (default 32; arithmetic 8)")
    ap.add_argument("--k", default=None, help="comma-separated k for pass@k (default: 1,N-SAMPLES)")
    ap.add_argument("--limit", type=int, default=None, help="evaluate the first LIMIT problems only")
    ap.add_argument("--max-cot-tokens", type=int, help="CoT budget L (default 512 as in the paper, §3; arithmetic 48)")
    ap.add_argument("--max-answer-tokens", type=int, default=32)
    ap.add_argument("--sigma", type=float, default=0.33, help="noise multiplier of the sample soft/fuzzy settings")
    ap.add_argument("--prompt-format", choices=["raw", "chat"], help="raw: the paper's prompt (§6; default); "
                    "chat: the chat template (arithmetic's default)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help=f"rows per generate call (default: {CPU_BATCH_ROWS} CPU, {GPU_BATCH_ROWS} GPU)")
    ap.add_argument("--seed", type=int, default=0, help="problem i uses seed + i, whatever the batching")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--dtype", choices=["auto", "float32", "autocast", "bfloat16", "float16"], default="auto",
                    help="float32 | autocast: float32 weights, bf16 matmuls, float32 logits and softmax, as train.py "
                         "(auto: autocast on CUDA, float32 on CPU) | bfloat16/float16 weights: half the memory, "
                         "but rounded logits can flip near-tied greedy choices")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the decode step (model.compile_decode_step): one compilation per batch shape, "
                         "then faster steps; the progress bar then moves once per batch")
    ap.add_argument("--output", default=None, help="the JSON (default: results/eval_<model>_<dataset>.json); "
                    "the markdown table goes next to it (.md)")
    ap.add_argument("--overwrite", action="store_true", help="discard the results already in --output")
    args = ap.parse_args(argv)

    for key, value in dataset_defaults(args.dataset).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.output = args.output or default_output(args.model, args.dataset, args.split)
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
    if not (math.isfinite(args.sigma) and args.sigma >= 0):  # NaN passes `< 0`
        errors.append(f"--sigma must be a finite number >= 0, got {args.sigma}")
    if os.path.splitext(args.output)[1] == ".md":
        errors.append("--output is the JSON; the markdown table is written next to it with .md")
    try:
        args.device = pick_device(args.device)
    except ValueError as e:
        errors.append(str(e))
    if errors:
        ap.error("; ".join(errors))
    on_gpu = args.device.startswith("cuda")
    args.dtype = args.dtype if args.dtype != "auto" else "autocast" if on_gpu else "float32"
    args.batch_size = args.batch_size or (GPU_BATCH_ROWS if on_gpu else CPU_BATCH_ROWS)
    return args


# --------------------------------------------------------------------------- generation and scoring

def setting_sigma(name, args) -> float:
    """The noise multiplier of a setting: --sigma for a sampled CoT of any kind but hard, else 0 (§7). Gumbel and
    multiplex (§9) read only whether it is 0 (greedy): their noise has no scale of ours."""
    mode, _, sampled = SETTINGS[name]
    return args.sigma if sampled and mode != "hard" else 0.0


def add_entropy_by_position(sums: torch.Tensor, counts: torch.Tensor, r) -> None:
    """Add a batch's untempered entropy at each CoT position into sums (L,) float64 and counts (L,) int64, in
    place: position t collects step t of every CoT at least t + 1 tokens long. L >= the longest CoT."""
    cot = (r.step_kinds == STEP_COT).cpu()          # (N, S)
    position = (cot.long().cumsum(1) - 1)[cot]      # (number of CoT steps,) each step's place in its CoT
    sums.index_add_(0, position, r.entropy.detach().cpu().double()[cot])
    counts += torch.bincount(position, minlength=len(counts))


def entropy_profile(sums: torch.Tensor, counts: torch.Tensor) -> dict:
    """{"mean": mean entropy (nats) at each CoT position over the rows that reach it, "count": how many rows
    do}, up to the longest CoT: the profile of §8. A non-finite mean is written as null (JSON has no NaN)."""
    L = int((counts > 0).sum())  # a CoT that reaches position t passes every earlier one: counts never rise
    means = (sums[:L] / counts[:L]).tolist()
    return {"mean": [m if math.isfinite(m) else None for m in means], "count": counts[:L].tolist()}


def run_setting(model, tok, prompts, problems, name, args) -> tuple[list[list[dict]], dict]:
    """Roll out one setting on every prompt: per problem the list of its samples (greedy: one), and the
    setting's CoT entropy profile."""
    mode, tau, sampled = SETTINGS[name]
    n = args.n_samples if sampled else 1
    per_batch = max(1, args.batch_size // n)  # prompts per call, so a call holds about --batch-size rows
    V = model.embed_tokens.weight.shape[0]  # the stop-text automaton, built once rather than in every call
    matcher = StopMatcher(tok.token_bytes + [b""] * (V - len(tok.token_bytes)), model.embed_tokens.weight.device)
    sums = torch.zeros(args.max_cot_tokens, dtype=torch.float64)
    counts = torch.zeros(args.max_cot_tokens, dtype=torch.long)
    out = []
    # Progress in decode steps (one model forward each), so that even a single call shows a moving bar and an
    # ETA; a call whose rows all stop early jumps to its budget's end. One call makes at most this many forwards:
    steps_per_call = 1 + args.max_cot_tokens + max(len(tok.encode(p)) for p in PREFILLS) + args.max_answer_tokens
    starts = range(0, len(prompts), per_batch)
    bar = tqdm(total=len(starts) * steps_per_call, desc=name, unit="step", file=sys.stderr)
    call_end = 0

    def tick(*_):  # a forward hook: returns None, so the model's output stays as it is
        if bar.n < call_end:
            bar.update()
    hook = model.register_forward_hook(tick)
    try:
        for c, start in enumerate(starts):
            call_end = (c + 1) * steps_per_call
            idx = range(start, min(start + per_batch, len(prompts)))
            with torch.autocast(model.embed_tokens.weight.device.type, torch.bfloat16, enabled=args.dtype == "autocast"):
                r = generate(model, tok, [prompts[i] for i in idx], mode, samples_per_prompt=n, tau=tau,
                             sigma=setting_sigma(name, args), max_cot_tokens=args.max_cot_tokens,
                             max_answer_tokens=args.max_answer_tokens, answer_tau=0.0,
                             seed=[args.seed + i for i in idx], matcher=matcher)  # seeds: one stream per problem
            out += score(r, [problems[i] for i in idx], n)
            add_entropy_by_position(sums, counts, r)
            bar.set_postfix_str(f"{idx.stop}/{len(prompts)} problems", refresh=False)
            bar.update(call_end - bar.n)
    finally:
        hook.remove()
        bar.close()
    return out, entropy_profile(sums, counts)


def score(r, problems: list[Problem], n: int) -> list[list[dict]]:
    """Per problem of a rollout batch (n rows each, grouped by problem), its samples with their rewards."""
    cot_lens = r.cot_lens.tolist()
    out = []
    for j, problem in enumerate(problems):
        samples = []
        for row in range(j * n, (j + 1) * n):
            rew = reward(r.answer_text[row], problem.answer, problem.numeral_answer)  # Eq. 11: 100 / 10 / 0
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
    lines.append("\n(greedy settings draw one rollout per problem: their pass@k is their accuracy)")
    by_name = {r["setting"]: r for r in rows}
    for kind in ("hard", "soft", "fuzzy"):  # §8's format: greedy / sample pass@1 / sample pass@k, largest k
        greedy, sample = by_name.get(kind + "-greedy"), by_name.get(kind + "-sample")
        if greedy and sample:
            lines.append(f"{kind} inference, greedy / sample pass@1 / pass@{ks[-1]}: {greedy['pass@1']:.1f} / "
                         f"{sample['pass@1']:.1f} / {sample[f'pass@{ks[-1]}']:.1f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the output file

def check_writable(path: str) -> None:
    """Fail now, not after hours of generation, if `path` (and the .md beside it) cannot be written."""
    folder = os.path.dirname(os.path.abspath(path))
    for p in (path, markdown_path(path)):
        if os.path.isdir(p):
            raise IsADirectoryError(f"--output {path}: {p} is a folder")
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise OSError(f"--output {path}: cannot write in {folder} ({e.strerror or e})") from None


def markdown_path(path: str) -> str:
    return os.path.splitext(path)[0] + ".md"


def load_finished(args, config: dict, problems) -> dict:
    """The settings already in --output, as {setting: {"seconds", "generations", "entropy_profile", "spec"}};
    refuses a file made with another configuration or other problems. {} with --overwrite or no file."""
    old = earlier_result(args.output, args.overwrite, config, SAME_RESULTS, "evaluate.py")
    if old is None:
        return {}
    redo = "use another --output, or --overwrite to discard it"
    try:
        old_problems, seconds = old["problems"], {r["setting"]: r["seconds"] for r in old["table"]}
        finished = {s: {"seconds": seconds[s], "generations": [p["generations"][s] for p in old_problems],
                        "entropy_profile": old["entropy_profile"][s], "spec": old["config"]["settings_spec"][s]}
                    for s in seconds}
        same_problems = [(p["question"], p["label"]) for p in old_problems] == [(p.question, p.answer)
                                                                              for p in problems]
    except (KeyError, TypeError) as e:
        raise ValueError(f"--output {args.output} exists but is not an evaluate.py result ({type(e).__name__}: "
                         f"{e}); {redo}") from None
    if not same_problems:
        raise ValueError(f"--output {args.output} holds results on other problems (dataset, split, --data-path or "
                         f"--limit changed); {redo}")
    print(f"{args.output} already holds {', '.join(finished)}: skipping them (--overwrite to redo)", file=sys.stderr)
    return finished


def save(args, config: dict, problems, finished: dict) -> dict:
    """Write the JSON and the markdown table of the finished settings (atomically); return the JSON's dict."""
    names = [s for s in SETTINGS if s in finished]  # the paper's order, whatever order they ran in
    rows = [{**summarize(s, finished[s]["generations"], args.k), "seconds": finished[s]["seconds"]} for s in names]
    table = markdown(rows, args.k)
    result = {"config": {**config, "settings": names, "settings_spec": {s: finished[s]["spec"] for s in names}},
              "table": rows, "markdown": table,
              "entropy_profile": {s: finished[s]["entropy_profile"] for s in names},
              "problems": [{"question": p.question, "label": p.answer,
                            "generations": {s: finished[s]["generations"][i] for s in names}}
                           for i, p in enumerate(problems)]}
    atomic_write(args.output, json.dumps(result, indent=1, allow_nan=False))  # NaN is not JSON
    atomic_write(markdown_path(args.output), f"# {config['model']} on {config['dataset']}/{config['split']}, "
                     f"{len(problems)} problems\n\n{table}\n")
    return result


# --------------------------------------------------------------------------- main

def main(argv=None) -> dict:
    args = get_args(argv)
    try:  # everything a user can get wrong, found before any expensive work, each as one line
        check_writable(args.output)
        lock = RunLock(args.output + ".lock", args.output)  # one writer per --output
        problems = load_dataset(args.dataset, args.split, data_path=args.data_path, limit=args.limit)  # never empty
        folder = resolve_model(args.model)  # a train.py checkpoint is a folder with the tokenizer files in it
        config = {**{k: v for k, v in vars(args).items() if k != "overwrite"}, "model_folder": os.path.abspath(folder),
                  "torch_version": torch.__version__,
                  "device_name": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"}
        finished = load_finished(args, config, problems)
    except (OSError, ValueError, ImportError) as e:
        raise SystemExit(f"evaluate.py: {e}") from None
    try:
        todo = [s for s in args.settings if s not in finished]
        if todo:
            run(args, config, problems, folder, finished, todo)
        result = save(args, config, problems, finished)  # also when nothing was left to do: --k may have changed
    finally:
        os.remove(args.output + ".lock")  # still held: a process that opens it now finds it locked or gone
        lock.release()
    print(result["markdown"])
    print(f"wrote {args.output} and {markdown_path(args.output)}", file=sys.stderr)
    return result


def load(folder: str, args):
    """(model, tokenizer), or a one-line error."""
    try:
        weights_dtype = torch.float32 if args.dtype == "autocast" else getattr(torch, args.dtype)
        return load_model(folder, device=args.device, dtype=weights_dtype).eval(), load_tokenizer(folder)
    except (OSError, ValueError) as e:
        raise SystemExit(f"evaluate.py: --model {args.model}: {e}") from None


def run(args, config, problems, folder, finished: dict, todo: list[str]) -> None:
    """Run the settings `todo`, adding each to `finished` and saving as soon as it is done."""
    model, tok = load(folder, args)
    prompts = [tok.encode_prompt(build_prompt(p.question, tok, args.prompt_format)) for p in problems]  # BOS if wanted
    check_context(prompts, [p.question for p in problems], args.max_cot_tokens, args.max_answer_tokens,
                  model.cfg.max_seq_len, tok)
    if args.compile:
        model.compile_decode_step()
    print(f"{args.model} ({folder}) on {args.dataset}/{args.split}: {len(problems)} problems, settings "
          f"{','.join(todo)}, CoT <= {args.max_cot_tokens} tokens, {args.prompt_format} prompt, {args.device} "
          f"{args.dtype}, {args.batch_size} rows per call, {torch.get_num_threads()} threads", file=sys.stderr)
    name = todo[0]
    try:
        with StopSignal(finish=False):  # SIGTERM (a job scheduler, `kill`) ends the run like Ctrl-C
            for name in todo:
                t0 = time.time()
                generations, profile = run_setting(model, tok, prompts, problems, name, args)
                spec = {"mode": SETTINGS[name][0], "cot_tau": SETTINGS[name][1], "noise": setting_sigma(name, args),
                        "sigma_abs": noise_scale(model, setting_sigma(name, args)), "samples": len(generations[0])}
                finished[name] = {"seconds": time.time() - t0, "generations": generations,
                                  "entropy_profile": profile, "spec": spec}
                row = next(r for r in save(args, config, problems, finished)["table"] if r["setting"] == name)
                tqdm.write(f"{name}: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items() if k.startswith("pass@"))
                           + f" (saved to {args.output})", file=sys.stderr)
    except KeyboardInterrupt:
        done, left = [s for s in SETTINGS if s in finished], [s for s in args.settings if s not in finished]
        saved = f"{args.output} holds {', '.join(done)}" if done else "no setting had finished, nothing was saved"
        print(f"\ninterrupted during {name}: {saved}; run the same command again to do the {len(left)} left "
              f"({', '.join(left)})", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main(sys.argv[1:])
