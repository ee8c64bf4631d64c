"""How far is the default training step from what this CPU can do, and would bf16 help? One thread, the default
step's shape (2 prompts x 8 samples, prompt 105, fuzzy, CoT 48 + answer 8, random SmolLM2-135M weights), each
variant in turn within every round (median of --repeats rounds after a warm-up):

    OMP_NUM_THREADS=1 python tools/cpu_floor.py --repeats 3

- the peak: a 2048^3 float32 matrix product on one thread (GFLOP/s), against the update's rate (its matrix FLOPs
  counted from the shapes, divided by its time);
- the rollout and the update in float32 (what CPU training runs), under bf16 autocast (GPU training's recipe:
  float32 weights, bf16 matrix products), and the rollout with a bf16 copy of the weights."""

import argparse
import os
import statistics
import sys
import time
from contextlib import nullcontext

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import SHAPES, SyntheticTokenizer, build_models, fixed_length_matcher  # noqa: E402
from rloo import rloo_advantages, rloo_loss  # noqa: E402
from rollout import generate, log_prob  # noqa: E402

B, G, PROMPT, COT, ANSWER, MICRO = 2, 8, 105, 48, 8, 8


def seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def peak_gflops() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    return 2 * 2048**3 * 5 / seconds(lambda: [a @ b for _ in range(5)]) / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error(f"--repeats must be at least 1, got {args.repeats}")
    torch.set_num_threads(1)
    cfg = SHAPES["smollm2-135m"]
    model, _ = build_models(cfg, "cpu", torch.float32, with_transformers=False)
    model_bf16, _ = build_models(cfg, "cpu", torch.bfloat16, with_transformers=False)  # the same seed: same weights
    tok, matcher = SyntheticTokenizer(cfg.vocab_size), fixed_length_matcher(cfg.vocab_size, "cpu")
    prompts = torch.randint(0, cfg.vocab_size, (B, PROMPT), generator=torch.Generator().manual_seed(0)).tolist()
    autocast = lambda on: torch.autocast("cpu", dtype=torch.bfloat16) if on else nullcontext()

    @torch.no_grad()
    def rollout(m, bf16_autocast=False):
        with autocast(bf16_autocast):
            return generate(m, tok, prompts, "fuzzy", samples_per_prompt=G, max_cot_tokens=COT,
                            max_answer_tokens=ANSWER, matcher=matcher)

    roll = rollout(model)
    advantages = rloo_advantages(torch.rand(B, G)).flatten()

    def update(bf16_autocast):
        for i in range(0, B * G, MICRO):
            with autocast(bf16_autocast):
                loss = rloo_loss(log_prob(model, roll.select(slice(i, i + MICRO))), advantages[i:i + MICRO],
                                 total=B * G)
            loss.backward()
        model.zero_grad(set_to_none=True)

    variants = {"rollout, float32": lambda: rollout(model), "rollout, bf16 autocast": lambda: rollout(model, True),
                "rollout, bf16 weights": lambda: rollout(model_bf16),
                "update, float32": lambda: update(False), "update, bf16 autocast": lambda: update(True)}
    for fn in variants.values():  # warm-up
        fn()
    times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            times[name].append(seconds(fn))
    peak = peak_gflops()
    # the update's matrix FLOPs: forward 2 x params x tokens (each prompt once, the head only at the steps),
    # backward twice that
    params = sum(p.numel() for p in model.parameters())
    head = cfg.vocab_size * cfg.dim
    steps = roll.tokens.shape[1]
    flops = 3 * 2 * ((params - head) * (B * PROMPT + B * G * steps) + head * B * G * steps)
    update_s = statistics.median(times["update, float32"])
    print(f"one thread; {B} prompts x {G} samples, prompt {PROMPT}, {steps} steps per row; median of {args.repeats}\n")
    print("| variant | seconds (min–max) |\n|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.2f} ({min(ts):.2f}–{max(ts):.2f}) |")
    print(f"\nfloat32 peak (2048^3 product): {peak:.1f} GFLOP/s; the update: {flops / 1e9:.0f} GFLOP of matrix "
          f"products in {update_s:.2f} s = {flops / update_s / 1e9:.1f} GFLOP/s; at the peak it would take "
          f"{flops / peak / 1e9:.2f} s")


if __name__ == "__main__":
    main()
