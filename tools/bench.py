"""Rollout and training-step speed: this project's hard / soft / fuzzy rollouts against transformers' `generate`
on the same weights, and one full RLOO step (docs/paper.md §5) split into rollout / log-prob forward / backward /
optimizer, with peak memory.

    python tools/bench.py                       # one GPU: SmolLM2-135M and Llama-3.2-3B shapes, batch 32 and 256
    python tools/bench.py --tiny                # a tiny random model, seconds on a CPU: a smoke test of the benchmark
    OMP_NUM_THREADS=1 python tools/bench.py --device cpu --shapes smollm2-135m --batch 32 --prompt-len 32 --cot 32 \
        --answer 8 --train-shape smollm2-135m --train-cot 32 --json bench.json

Weights are random (speed does not depend on their values, once the logits have a realistic scale: see
`build_models`). Every rollout runs its full CoT and answer budget (see `fixed_length_matcher`), so all methods
take the same number of steps.

Every figure is the median of --repeats timed runs after an untimed warm-up (its time is the table's "first call":
with --compile, the compilation), printed with its min–max. The
methods take turns within each round (hard, soft, fuzzy, transformers, hard, ...), and "vs transformers" is the
median of the per-round ratios, so a moment when another process is busy slows both sides of a ratio rather
than one figure. On a shared CPU, OMP_NUM_THREADS=1 also avoids threads waiting on each other."""

import argparse
import json
import os
import platform
import random
import re
import resource
import shlex
import statistics
import sys
import time
from contextlib import contextmanager, nullcontext


import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from model import ModelConfig, Transformer
from rloo import rloo_advantages, rloo_loss
import rollout
from rollout import PREFILL_BUDGET, PREFILL_EARLY, STEP_COT, StopMatcher, generate, log_prob

parser = argparse.ArgumentParser(description="Benchmark rollouts (vs transformers' generate) and one RLOO step.")
parser.add_argument("--shapes", default="smollm2-135m,llama-3.2-3b", help="comma-separated model shapes")
parser.add_argument("--batch", default="32,256", help="comma-separated rollout batch sizes")
parser.add_argument("--prompt-len", type=int, default=128)
parser.add_argument("--cot", type=int, default=256, help="CoT steps of the rollout benchmark")
parser.add_argument("--answer", type=int, default=32, help="answer steps (rollouts and the training step)")
parser.add_argument("--modes", default="hard,soft,fuzzy")
parser.add_argument("--no-transformers", action="store_true", help="skip the transformers comparison")
parser.add_argument("--tiny", action="store_true",
                    help="tiny shapes and sizes for everything (seconds on a CPU); explicit flags still win")
parser.add_argument("--threads", type=int, default=None, help="torch threads on a CPU (default: torch's choice)")
parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure, after one warm-up run")
parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
parser.add_argument("--json", help="also write every number to this file")
parser.add_argument("--skip-train-step", action="store_true")
parser.add_argument("--train-shape", default="llama-3.2-3b")
parser.add_argument("--train-prompts", type=int, default=1, help="prompts of the training step (train.py's B)")
parser.add_argument("--train-samples", type=int, default=32, help="samples per prompt of the training step (G)")
parser.add_argument("--no-activation-checkpointing", action="store_true",
                    help="the training step without activation checkpointing (train.py's default)")
parser.add_argument("--train-cot", type=int, default=128, help="CoT steps of the training step")
parser.add_argument("--micro-batch", type=int, default=8, help="rows per log-prob forward/backward")
parser.add_argument("--compile", action="store_true",
                    help="also time each mode with its decode step compiled (model.compile_decode_step), side by side, "
                         "and compile the training step's rollouts")

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
SHAPES = {
    "smollm2-135m": ModelConfig(vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3, head_dim=64,
                                hidden_dim=1536, tie_embeddings=True),
    "llama-3.2-3b": ModelConfig(vocab_size=128256, dim=3072, n_layers=28, n_heads=24, n_kv_heads=8, head_dim=128,
                                hidden_dim=8192, rope_theta=500000.0, rope_scaling=LLAMA3_ROPE, max_seq_len=131072,
                                tie_embeddings=True),
    # Llama-3-style rope scaling here too, so the same-weights test also covers it
    "tiny": ModelConfig(vocab_size=512, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, hidden_dim=128,
                        rope_theta=500000.0, rope_scaling=LLAMA3_ROPE, max_seq_len=131072, tie_embeddings=True),
}
# what --tiny changes: the defaults of these flags (a flag given on the command line still wins). One thread:
# matrices this small gain nothing from a second one, and on a busy machine every OpenMP barrier then waits for
# a descheduled thread (measured on 2 shared cores: ~10 s in all with 1 thread, 75 s and 10x spreads with 2).
TINY = dict(shapes="tiny", train_shape="tiny", batch="4", prompt_len=8, cot=16, answer=4, train_samples=4,
            train_cot=8, micro_batch=2, threads=1)


def parse_args(argv=None) -> argparse.Namespace:
    """The flags, checked: a bad value raises ValueError (on the command line: a one-line usage error, exit 2)."""
    args = parser.parse_args(argv)
    if args.tiny:  # argparse fills in a default only where the namespace has no value yet
        args = parser.parse_args(argv, namespace=argparse.Namespace(**TINY))
    for name in args.shapes.split(",") + ([] if args.skip_train_step else [args.train_shape]):
        if name not in SHAPES:
            raise ValueError(f"unknown shape {name!r}; known: {', '.join(SHAPES)}")
    if any(m not in rollout.KINDS for m in args.modes.split(",")):
        raise ValueError(f"--modes must be a subset of {','.join(rollout.KINDS)}, got {args.modes!r}")
    if not all(b.strip().isdigit() and int(b) > 0 for b in args.batch.split(",")):
        raise ValueError(f"--batch must be comma-separated integers >= 1, got {args.batch!r}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    if args.repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {args.repeats}")
    if args.train_prompts < 1 or args.train_samples < 2:
        raise ValueError(f"need --train-prompts >= 1 and --train-samples >= 2 (RLOO), got {args.train_prompts} and "
                         f"{args.train_samples}")
    return args


# --------------------------------------------------------------------------- random models and a synthetic tokenizer

def build_models(cfg: ModelConfig, device, dtype, with_transformers: bool, seed: int = 0):
    """Our Transformer with random weights, made on `device` directly in `dtype` (no float32 copy of a 3B model),
    and transformers' LlamaForCausalLM holding a copy of the same weights (or None)."""
    torch.manual_seed(seed)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model, hf = Transformer(cfg).eval(), None
            # Give the (tied) logits a trained model's spread, std ≈ 2.5 (SmolLM2: 2.8). nn.Embedding's N(0, 1)
            # gives std ≈ √dim: then nearly every softmax entry underflows, which makes exp ~10x slower on CPU.
            torch.nn.init.normal_(model.embed_tokens.weight, std=2.5 / cfg.dim**0.5)
            if with_transformers:
                from transformers import LlamaConfig, LlamaForCausalLM  # a dev dependency: imported only here
                hf = LlamaForCausalLM(LlamaConfig(**cfg.to_hf(dtype))).eval()
                # our module names are Hugging Face's minus the "model." prefix
                hf.load_state_dict({k if k.startswith("lm_head") else "model." + k: v
                                    for k, v in model.state_dict().items()})
    finally:
        torch.set_default_dtype(default_dtype)
    return model, hf


class SyntheticTokenizer:
    """What rollout.py needs of a tokenizer, for random-weight models: ids < 256 are single bytes, then the words
    of the prefill texts (so a prefill takes ~5 steps, as with a real BPE), then random 2-4 letter strings.
    EOS is one id past the model's vocabulary: the model can never produce it, so no row stops early."""

    def __init__(self, model_vocab: int, seed: int = 0):
        rng = random.Random(seed)
        words = {w.encode() for text in (PREFILL_EARLY, PREFILL_BUDGET) for w in re.findall(r" ?\S+", text)}
        self.words = {w: 256 + i for i, w in enumerate(sorted(words, key=len, reverse=True))}  # longest first
        self.token_bytes = [bytes([i]) for i in range(256)] + list(self.words)
        while len(self.token_bytes) < model_vocab:
            self.token_bytes.append(bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 4))))
        self.token_bytes.append(b"")
        self.vocab_size, self.eos_id, self.pad_id = model_vocab + 1, model_vocab, 0
        self.stop_ids = {self.eos_id}

    def encode(self, text: str) -> list[int]:  # greedy: a whole word where one starts, else one byte
        data, ids = text.encode(), []
        while data:
            word = next((w for w in self.words if data.startswith(w)), data[:1])
            ids.append(self.words.get(word, word[0]))
            data = data[len(word):]
        return ids

    def decode(self, ids) -> str:
        return b"".join(self.token_bytes[i] for i in ids).decode("utf-8", errors="replace")


def fixed_length_matcher(vocab_size: int, device) -> StopMatcher:
    """A stop matcher that reads every token as "x": the CoT never ends with the stop text and the answer's
    brace never closes, so every row runs the full budgets (its table lookups cost what they do on real text)."""
    return StopMatcher([b"x"] * vocab_size, device)


# --------------------------------------------------------------------------- timing

def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def clock(times: dict, key: str, device):
    """Add the wall time of the block to times[key]; the device is synchronised so queued kernels count."""
    sync(device)
    start = time.perf_counter()
    yield
    sync(device)
    times[key] = times.get(key, 0.0) + time.perf_counter() - start


@contextmanager
def patched(module, name: str, value):
    """module.name = value inside the block (the code under test looks the name up at call time)."""
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def reset_peak(device):
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device) -> float:
    """Peak GPU memory since the last reset, or on CPU the process's peak resident memory so far (Linux: KiB)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def min_max(values, fmt="{:,.1f}") -> str:
    return f"{fmt.format(min(values))}–{fmt.format(max(values))}"


def print_table(header: list[str], rows: list[list]):
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(f"{v:,.1f}" if isinstance(v, float) else str(v) for v in row) + " |")


# --------------------------------------------------------------------------- rollouts vs transformers' generate

def bench_rollouts(shape: str, args, device, dtype, modes: list[str], with_hf: bool) -> list[dict]:
    cfg = SHAPES[shape]
    model, hf = build_models(cfg, device, dtype, with_hf)
    if args.compile:
        model.compile_decode_step()
        compiled_step = model.compiled_decode_step  # compiled lazily: on the first call of a compiled method
    tok, matcher = SyntheticTokenizer(cfg.vocab_size), fixed_length_matcher(cfg.vocab_size, device)
    results = []
    for batch in map(int, args.batch.split(",")):
        prompts = torch.randint(0, cfg.vocab_size, (batch, args.prompt_len),
                                generator=torch.Generator().manual_seed(batch))

        def ours(mode, cot, answer, compiled=False):
            if args.compile:  # the same model, its decode step compiled or eager
                model.compiled_decode_step = compiled_step if compiled else None
            r = generate(model, tok, prompts.tolist(), mode, max_cot_tokens=cot, max_answer_tokens=answer,
                         matcher=matcher)
            if int(r.cot_lens.min()) != cot or int(r.answer_lens.min()) != answer:
                raise RuntimeError(f"{mode} rollout stopped early: the step counts would not be comparable")
            return r.tokens.shape[1]  # steps: CoT + prefill + answer

        def theirs(cot, answer):  # plain sampling at temperature 1, like our hard CoT; it cannot stop early
            ids = prompts.to(device)
            out = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0, top_k=0,
                              top_p=1.0, max_new_tokens=cot + answer, min_new_tokens=cot + answer, use_cache=True,
                              pad_token_id=tok.pad_id, eos_token_id=tok.eos_id)
            return out.shape[1] - args.prompt_len

        methods = {m: (lambda m=m: ours(m, args.cot, args.answer)) for m in modes}
        if args.compile:
            methods.update({f"{m} compiled": (lambda m=m: ours(m, args.cot, args.answer, True)) for m in modes})
        if hf is not None:
            methods["transformers"] = lambda: theirs(args.cot, args.answer)
        steps, first_s = {}, {}
        for method, run in methods.items():  # warm-up: kernels, cuBLAS handles, allocator, and compilation
            times = {}
            with clock(times, "s", device):
                steps[method] = run()
            first_s[method] = times["s"]
        ms_per_step = {method: [] for method in methods}                # per round
        peak = dict.fromkeys(methods, 0.0)
        for _ in range(args.repeats):
            for method, run in methods.items():  # take turns, so a busy moment slows every method of its round
                reset_peak(device)
                times = {}
                with clock(times, "s", device):
                    run()
                ms_per_step[method].append(1000 * times["s"] / steps[method])
                peak[method] = max(peak[method], peak_gib(device))
        for method, ms in ms_per_step.items():
            ms_median = statistics.median(ms)
            # the same tokens per step on both sides, so the speed ratio is the inverse ratio of ms per step
            ratios = ([t / o for t, o in zip(ms_per_step["transformers"], ms)] if "transformers" in ms_per_step
                      else None)
            results.append({"shape": shape, "batch": batch, "method": method, "steps": steps[method],
                            "repeats": args.repeats, "tokens_per_s": 1000 * batch / ms_median,
                            "ms_per_step": ms_median, "ms_per_step_all": ms,
                            "vs_transformers": statistics.median(ratios) if ratios else None,
                            "vs_transformers_all": ratios, "peak_gib": peak[method], "first_call_s": first_s[method]})
            print(f"  {shape} batch {batch} {method}: {results[-1]['tokens_per_s']:,.0f} tokens/s (median of "
                  f"{args.repeats})", file=sys.stderr)
    return results


# --------------------------------------------------------------------------- one RLOO training step

def per_row_teacher_forced_logits(model, r):
    """The update as it was before prompts were shared (rollout.teacher_forced_logits): every row re-encodes
    its own [prompt; steps]. Kept for the comparison in bench_train_step and as a test reference."""
    E, S = model.embed_tokens.weight, r.tokens.shape[1]
    step_embeds = E[r.tokens]
    if r.mode != "hard":
        step_embeds = torch.where((r.step_kinds == STEP_COT)[..., None], r.cot_embeds.to(E.dtype), step_embeds)
    return model(embeds=torch.cat([E[r.prompt_ids], step_embeds], 1), pad_lens=r.pad_lens, last=S + 1)[:, :-1]


def bench_train_step(shape: str, args, device) -> dict:
    """B prompts × G samples, fuzzy CoT, as train.py does it: float32 master weights, bf16 autocast on GPU,
    activation checkpointing (unless --no-activation-checkpointing), micro-batched log-prob forward + backward,
    gradient clipping and AdamW."""
    cfg, B, G = SHAPES[shape], args.train_prompts, args.train_samples
    model, _ = build_models(cfg, device, torch.float32, with_transformers=False)
    model.gradient_checkpointing = not args.no_activation_checkpointing
    if args.compile:
        model.compile_decode_step()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    tok, matcher = SyntheticTokenizer(cfg.vocab_size), fixed_length_matcher(cfg.vocab_size, device)
    prompts = torch.randint(0, cfg.vocab_size, (B, args.prompt_len), generator=torch.Generator().manual_seed(0)).tolist()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if torch.device(device).type == "cuda" else nullcontext()

    def update(roll, advantages, times, part):
        for i in range(0, B * G, args.micro_batch):
            with clock(times, part + "forward", device), autocast:
                loss = rloo_loss(log_prob(model, roll.select(slice(i, i + args.micro_batch))),
                                 advantages[i:i + args.micro_batch], total=B * G)
            with clock(times, part + "backward", device):
                loss.backward()

    def step() -> tuple[dict, dict]:
        times, before = {}, {}
        model.eval()
        with clock(times, "rollout", device), autocast:
            roll = generate(model, tok, prompts, "fuzzy", samples_per_prompt=G, max_cot_tokens=args.train_cot,
                            max_answer_tokens=args.answer, matcher=matcher)
        advantages = rloo_advantages(torch.rand(B, G, device=device)).flatten()  # random rewards: speed is the same
        model.train()
        with patched(rollout, "teacher_forced_logits", per_row_teacher_forced_logits):  # the same update, before
            update(roll, advantages, before, "update without prompt sharing: ")
        optimizer.zero_grad(set_to_none=True)
        update(roll, advantages, times, "log-prob ")
        with clock(times, "optimizer", device):
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return times, before

    step()  # warm-up; it also allocates AdamW's state, which every later step has
    reset_peak(device)
    runs, befores = zip(*[step() for _ in range(args.repeats)])  # [{part: seconds}]
    parts = {part: [run[part] for run in runs] for part in runs[0]}
    totals = [sum(run.values()) for run in runs]
    before_parts = {part: [run[part] for run in befores] for part in befores[0]}
    return {"shape": shape, "prompts": B, "samples": G, "cot": args.train_cot, "answer": args.answer,
            "activation_checkpointing": model.gradient_checkpointing,
            "micro_batch": args.micro_batch, "repeats": args.repeats,
            "seconds": {part: statistics.median(s) for part, s in parts.items()}, "seconds_all": parts,
            "total_s": statistics.median(totals), "total_s_all": totals, "peak_gib": peak_gib(device),
            "before_seconds": {part: statistics.median(s) for part, s in before_parts.items()},
            "before_seconds_all": before_parts}


# --------------------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads and device.type == "cpu":
        torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shapes = args.shapes.split(",")
    modes = args.modes.split(",")
    with_hf = not args.no_transformers
    if with_hf:
        try:
            import transformers  # noqa: F401
        except ImportError:
            print("transformers is not installed: skipping the comparison (pip install -r requirements-dev.txt)")
            with_hf = False
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores)")
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(f"device: {name}{threads}, torch {torch.__version__}, {str(dtype).removeprefix('torch.')}, "
          f"prompt {args.prompt_len}, CoT {args.cot} + answer {args.answer}; "
          f"each figure: median [min–max] of {args.repeats} runs after a warm-up\n")

    rows = [r for shape in shapes for r in bench_rollouts(shape, args, device, dtype, modes, with_hf)]
    mem = "peak GiB" if device.type == "cuda" else "peak RSS GiB (process)"
    print_table(["shape", "batch", "method", "steps", "tokens/s", "ms/step", "ms/step min–max", "vs transformers",
                 "vs transformers min–max", mem, "first call s"],
                [[r["shape"], r["batch"], r["method"], r["steps"], r["tokens_per_s"], f"{r['ms_per_step']:,.2f}",
                  min_max(r["ms_per_step_all"], "{:,.2f}"),
                  f"{r['vs_transformers']:.2f}x" if r["vs_transformers"] else "-",
                  min_max(r["vs_transformers_all"], "{:.2f}x") if r["vs_transformers"] else "-",
                  f"{r['peak_gib']:.2f}", f"{r['first_call_s']:.1f}"] for r in rows])

    train = None
    if not args.skip_train_step:
        train = bench_train_step(args.train_shape, args, device)
        print(f"\nRLOO step: {train['shape']}, {train['prompts']} prompt(s) x {train['samples']} samples, fuzzy, CoT "
              f"{train['cot']} + answer {train['answer']}, micro-batch {train['micro_batch']}, activation checkpointing "
              f"{'on' if train['activation_checkpointing'] else 'off'}, fp32 weights"
              + (" + bf16 autocast" if device.type == "cuda" else ""))
        parts = sum(train["seconds"].values())  # medians of the parts need not add up to the median total
        print_table(["part", "seconds", "seconds min–max", "share"],
                    [[k, f"{train['seconds'][k]:.3f}", min_max(v, "{:.3f}"), f"{train['seconds'][k] / parts:.0%}"]
                     for k, v in train["seconds_all"].items()]
                    + [["total", f"{train['total_s']:.3f}", min_max(train["total_s_all"], "{:.3f}"), "100%"]])
        print(f"{mem}: {train['peak_gib']:.2f}")
        shared = train["seconds"]["log-prob forward"] + train["seconds"]["log-prob backward"]
        before = sum(train["before_seconds"].values())
        print(f"the same update with every row re-encoding its prompt (before the prompt was shared, same rollout "
              f"and weights): {before:.3f} s against {shared:.3f} s: {before / shared:.2f}x")

    if args.json:
        command = shlex.join([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
        with open(args.json, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "dtype": str(dtype), "command": command,
                       "args": vars(args), "rollouts": rows, "train_step": train}, f, indent=2)


if __name__ == "__main__":
    try:
        parse_args()  # checked here too, so that a bad flag is one line and exit 2, as argparse's own errors
    except ValueError as e:
        parser.error(str(e))
    main()
