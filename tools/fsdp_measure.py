"""Rollout under FSDP on 2 gloo ranks (CPU): the model gathered once per rollout (distributed.unsharded) against FSDP's
default of gathering each block again at every decoding step, and against no FSDP (the whole model on each rank).

    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 tools/fsdp_measure.py [--rows 8 --cot 16]

Both ranks roll out the same prompts with the same seeds, so they decode the same number of steps (per-step
gathers would otherwise wait for each other forever: see distributed.unsharded). Prints ms per decoding step, median of
--repeats after a warm-up, the three methods taking turns."""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
import torch
import torch.distributed as dist

import distributed
from data import build_prompt, load_dataset
from default_model import resolve_model
from model import load_model
from rollout import generate
from tokenizer import load_tokenizer

ap = argparse.ArgumentParser()
ap.add_argument("--rows", type=int, default=8)
ap.add_argument("--cot", type=int, default=16)
ap.add_argument("--answer", type=int, default=8)
ap.add_argument("--repeats", type=int, default=3)
a = ap.parse_args()

dist.init_process_group("gloo")
rank = dist.get_rank()
folder = resolve_model("smollm2-135m-instruct")
tok = load_tokenizer(folder)
problem = load_dataset("arithmetic", "train")[0]
prompt = tok.encode_prompt(build_prompt(problem.question, tok, "chat"))
plain = load_model(folder).eval()
sharded = load_model(folder).eval()
root = distributed.shard(sharded, "cpu")


def roll(fn_model):
    return fn_model(generate, tok, [prompt], "fuzzy", samples_per_prompt=a.rows, sigma=0.33, max_cot_tokens=a.cot,
                    max_answer_tokens=a.answer, seed=list(range(a.rows)))


def per_step():
    return roll(root)                       # each block all-gathered at every forward, freed after it


def gathered_once():
    with distributed.unsharded(root):
        return roll(root)


def no_fsdp():
    return roll(lambda fn, *args, **kw: fn(plain, *args, **kw))


methods = {"FSDP, gathered once per rollout": gathered_once, "FSDP, gathered at every decoding step": per_step,
           "no FSDP (whole model on each rank)": no_fsdp}
times = {name: [] for name in methods}
with torch.no_grad():
    for repeat in range(a.repeats + 1):
        for name, fn in methods.items():
            dist.barrier()
            t0 = time.perf_counter()
            r = fn()
            dist.barrier()
            steps = r.tokens.shape[1] + 1  # + the prompt's prefill forward
            if repeat:
                times[name].append((time.perf_counter() - t0) / steps * 1000)
if rank == 0:
    print(f"2 gloo ranks, {torch.get_num_threads()} thread(s) each, SmolLM2-135M fp32, {a.rows} rows per rank, "
          f"{steps} forwards per rollout (prefill + decoding steps), median of {a.repeats}:")
    for name, t in times.items():
        print(f"  {name}: {statistics.median(t):.1f} ms per forward (min {min(t):.1f}, max {max(t):.1f})")
dist.destroy_process_group()
