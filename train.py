"""Train a chain of thought with RL: hard, soft or fuzzy CoT, REINFORCE with an RLOO baseline (PAPER.md §4-§5).

    python train.py --mode fuzzy --sigma 0.33                                  # one process, CPU or one GPU
    torchrun --standalone --nproc_per_node 8 train.py --mode fuzzy --dataset gsm8k --model meta-llama/Llama-3.2-3B-Instruct

One step: sample prompts -> roll out G samples each (no gradient) -> rewards -> RLOO advantages ->
one teacher-forced log_prob forward with gradient, in micro-batches -> clip -> AdamW.
All randomness is a function of (--seed, step, prompt index), so a resumed run, or one on another number of
ranks, draws exactly the same prompts, noise and samples.
"""

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from contextlib import nullcontext

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from data import build_prompt, load_dataset, reward
from default_model import resolve_model
from model import load_model, save_model
from rloo import rloo_advantages, rloo_loss
from rollout import DEFAULT_TAU, generate, log_prob
from tokenizer import load_tokenizer

# Per-dataset defaults. gsm8k: the paper's values (§3, §5). arithmetic: the offline default, sized so the
# 135M default model shows steps, reward and a validation score on a 2-core CPU within minutes.
DATASET_DEFAULTS = {
    "gsm8k": dict(steps=4000, samples_per_prompt=32, prompts_per_step=2, max_cot_tokens=128, lr=6e-6,
                  eval_every=100, val_size=200, prompt_format="raw"),
    "arithmetic": dict(steps=60, samples_per_prompt=8, prompts_per_step=2, max_cot_tokens=48, lr=3e-5,
                       eval_every=15, val_size=40, prompt_format="chat"),  # raw: ~0% for a 135M model
}
FALLBACK_DEFAULTS = dict(DATASET_DEFAULTS["gsm8k"], max_cot_tokens=512)  # MATH-style sets (§3)


def get_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["hard", "soft", "fuzzy"], default="fuzzy")
    ap.add_argument("--sigma", type=float, default=0.33, help="noise multiplier: σ = sigma × RMS(E) (§2)")
    ap.add_argument("--tau", type=float, default=None, help="CoT temperature (default: hard 1.0, soft 0.5, fuzzy 1e-4)")
    ap.add_argument("--answer-tau", type=float, default=1.0, help="answer temperature in training (§3)")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--dataset", default="arithmetic")
    ap.add_argument("--data-path", default=None, help="local JSONL/parquet in GSM8K format")
    ap.add_argument("--prompt-format", choices=["raw", "chat"], help="raw: the paper's prompt (§6); chat: chat template")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--samples-per-prompt", type=int, help="G (paper: 32)")
    ap.add_argument("--prompts-per-step", type=int, help="B over all ranks (paper: 2)")
    ap.add_argument("--max-cot-tokens", type=int, help="CoT budget L (§3)")
    ap.add_argument("--max-answer-tokens", type=int, default=32)
    ap.add_argument("--lr", type=float, help="peak learning rate (paper: 6e-6 Llama 3B, 3e-6 Llama 8B, 8e-6 Qwen 3B)")
    ap.add_argument("--warmup-steps", type=int, default=20)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--micro-batch", type=int, default=8, help="rows per log_prob forward/backward")
    ap.add_argument("--activation-checkpointing", action="store_true")
    ap.add_argument("--eval-every", type=int)
    ap.add_argument("--val-size", type=int)
    ap.add_argument("--save-every", type=int, default=0, help="also checkpoint every N steps (0: at evals only)")
    ap.add_argument("--out-dir", default="out")
    ap.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-bad-steps", type=int, default=5, help="stop after this many non-finite steps in a row")
    args = ap.parse_args(argv)

    for k, v in DATASET_DEFAULTS.get(args.dataset, FALLBACK_DEFAULTS).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.tau = DEFAULT_TAU[args.mode] if args.tau is None else args.tau
    problems = []
    for name in ("steps", "samples_per_prompt", "prompts_per_step", "max_cot_tokens", "max_answer_tokens",
                 "micro_batch", "eval_every", "val_size"):
        if getattr(args, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be >= 1")
    if args.samples_per_prompt < 2:
        problems.append("--samples-per-prompt must be >= 2: the RLOO baseline needs other samples")
    if args.sigma <= 0 and args.mode != "hard":
        problems.append("--sigma must be > 0 for soft/fuzzy training: σ = 0 has no log-probability (Eq. 10)")
    if args.tau <= 0 or args.answer_tau <= 0:
        problems.append("--tau and --answer-tau must be > 0 in training (a greedy policy has no gradient)")
    if not 0 < args.lr < 1:
        problems.append("--lr must be in (0, 1)")
    if problems:
        ap.error("; ".join(problems))
    return args


# --------------------------------------------------------------------------- helpers

def lr_at(step: int, args) -> float:
    """Linear warm-up for --warmup-steps, then cosine decay to 0 over the remaining steps (§5)."""
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    progress = (step - args.warmup_steps) / max(1, args.steps - args.warmup_steps)
    return args.lr * 0.5 * (1 + math.cos(math.pi * progress))


def save_checkpoint(path: str, model, tokenizer_folder: str, state: dict):
    """Hugging Face folder (+ tokenizer files, + training state), written atomically: build it in a temporary
    folder, then swap it in, so a crash at any moment leaves either the old or the new checkpoint."""
    tmp, old = path + ".tmp", path + ".old"
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model, tmp)
    for name in os.listdir(tokenizer_folder):
        if name.startswith("tokenizer") or name in ("special_tokens_map.json", "generation_config.json"):
            shutil.copy(os.path.join(tokenizer_folder, name), tmp)
    torch.save(state, os.path.join(tmp, "train_state.pt"))
    if os.path.exists(path):
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def checkpoint_to_resume(out_dir: str) -> str | None:
    for name in ("last", "last.old"):  # last.old exists only if a crash hit between the two renames
        if os.path.exists(os.path.join(out_dir, name, "train_state.pt")):
            return os.path.join(out_dir, name)
    return None


@torch.no_grad()
def validate(model, tok, prompts, labels, args, rank, world, autocast) -> float:
    """Greedy validation accuracy (§5 model selection): hard with greedy CoT, soft/fuzzy with σ = 0, greedy answer."""
    model.eval()
    correct, batch = 0, 64
    mine = list(range(rank, len(prompts), world))
    for i in range(0, len(mine), batch):
        idx = mine[i:i + batch]
        with autocast:
            r = generate(model, tok, [prompts[j] for j in idx], args.mode, tau=0.0 if args.mode == "hard" else args.tau,
                         sigma=0.0, max_cot_tokens=args.max_cot_tokens, max_answer_tokens=args.max_answer_tokens,
                         answer_tau=0.0)
        correct += sum(reward(text, labels[j]) == 100 for text, j in zip(r.answer_text, idx))
    total = torch.tensor([correct], dtype=torch.float64, device=model.embed_tokens.weight.device)
    if world > 1:
        dist.all_reduce(total)
    return total.item() / len(prompts)


# --------------------------------------------------------------------------- main

def main(argv=None):
    args = get_args(argv)
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if ddp:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        rank, world = dist.get_rank(), dist.get_world_size()
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}" if backend == "nccl" else "cpu"
        if backend == "nccl":
            torch.cuda.set_device(device)
    else:
        rank, world, device = 0, 1, "cuda" if torch.cuda.is_available() else "cpu"
    master = rank == 0
    print0 = print if master else (lambda *a, **k: None)
    if args.prompts_per_step % world:
        raise SystemExit(f"--prompts-per-step {args.prompts_per_step} must be divisible by the {world} ranks "
                         "(all samples of a prompt stay on one rank so the RLOO baseline is exact)")
    os.makedirs(args.out_dir, exist_ok=True)

    # --- model, tokenizer, data
    resume_from = checkpoint_to_resume(args.out_dir) if args.resume else None
    if args.resume and resume_from is None:
        raise SystemExit(f"--resume: no checkpoint in {args.out_dir}/last")
    base_folder = resolve_model(args.model)
    folder = resume_from or base_folder
    model = load_model(folder, device=device, dtype=torch.float32)  # fp32 master weights
    model.gradient_checkpointing = args.activation_checkpointing
    tok = load_tokenizer(base_folder)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if "cuda" in str(device) else nullcontext()

    train_set = load_dataset(args.dataset, "train", data_path=args.data_path)
    val_set = load_dataset(args.dataset, "validation", data_path=args.data_path, limit=args.val_size)
    encode = lambda p: tok.encode_prompt(build_prompt(p.question, tok, args.prompt_format))
    train_prompts, val_prompts = [encode(p) for p in train_set], [encode(p) for p in val_set]
    val_labels = [p.answer for p in val_set]

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    step, best = 0, -1.0
    if resume_from:
        state = torch.load(os.path.join(resume_from, "train_state.pt"), map_location=device, weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        step, best = state["step"], state["best"]
        print0(f"resumed from {resume_from} at step {step} (best validation {best:.3f})")
    ddp_model = DDP(model, device_ids=[device] if "cuda" in str(device) else None) if ddp else model

    def checkpoint(name):
        if master:
            state = {"optimizer": optimizer.state_dict(), "step": step, "best": best, "args": vars(args)}
            save_checkpoint(os.path.join(args.out_dir, name), model, base_folder, state)
        if ddp:
            dist.barrier()

    B, G = args.prompts_per_step, args.samples_per_prompt
    local_B = B // world
    print0(f"mode={args.mode} tau={args.tau} sigma={args.sigma} model={args.model} dataset={args.dataset} "
           f"({len(train_set)} train / {len(val_set)} val) B={B} G={G} steps={args.steps} world={world} device={device}")
    metrics_file = open(os.path.join(args.out_dir, "metrics.jsonl"), "a") if master else None
    samples_file = open(os.path.join(args.out_dir, "samples.jsonl"), "a") if master else None
    if step == 0:
        val = validate(model, tok, val_prompts, val_labels, args, rank, world, autocast)
        print0(f"step 0: greedy validation accuracy {val:.3f} (before training)")
        if master:
            metrics_file.write(json.dumps({"step": 0, "val_accuracy": val}) + "\n")
            metrics_file.flush()
    bad_steps = 0
    bar = tqdm(total=args.steps, initial=step, disable=not master, dynamic_ncols=True)
    while step < args.steps:
        # --- prompts of this step: an epoch-wise permutation fixed by the seed; this rank takes its share
        per_epoch = len(train_prompts) // B
        epoch, slot = divmod(step, per_epoch)
        order = list(range(len(train_prompts)))
        random.Random(args.seed * 1_000_003 + epoch).shuffle(order)
        chosen = order[slot * B:(slot + 1) * B][rank * local_B:(rank + 1) * local_B]

        # --- rollouts without gradient (§4: samples come from a stop-gradient copy of the policy)
        t0 = time.time()
        model.eval()
        with autocast:
            roll = generate(model, tok, [train_prompts[i] for i in chosen], args.mode, samples_per_prompt=G,
                            tau=args.tau, sigma=args.sigma, max_cot_tokens=args.max_cot_tokens,
                            max_answer_tokens=args.max_answer_tokens, answer_tau=args.answer_tau,
                            seed=[args.seed * 1_000_003 + step * 10_007 + i for i in chosen])
        rewards = torch.tensor([reward(text, train_set[chosen[row // G]].answer)
                                for row, text in enumerate(roll.answer_text)], device=device).view(local_B, G)
        advantages = rloo_advantages(rewards).flatten()  # Eq. 12
        t1 = time.time()

        # --- REINFORCE update: only rows with a nonzero advantage carry gradient (Eq. 14)
        model.train()
        optimizer.zero_grad(set_to_none=False)
        active = advantages.nonzero()[:, 0].tolist()
        chunks = [active[i:i + args.micro_batch] for i in range(0, len(active), args.micro_batch)]
        n_chunks = torch.tensor(len(chunks), device=device)
        if ddp:  # every rank must run the same number of backward passes, or DDP hangs
            dist.all_reduce(n_chunks, op=dist.ReduceOp.MAX)
        loss_sum = 0.0
        for i in range(int(n_chunks)):
            rows, weight = (chunks[i], 1.0) if i < len(chunks) else ([0], 0.0)  # a zero-weight pass if idle
            sync = ddp_model.no_sync() if ddp and i < int(n_chunks) - 1 else nullcontext()
            with sync, autocast:
                lp = log_prob(ddp_model, roll.select(rows))
                loss = rloo_loss(lp, weight * advantages[rows], total=local_B * G)  # Eq. 13-14
            loss.backward()
            loss_sum += loss.item()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        if torch.isfinite(grad_norm):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, args)
            optimizer.step()
            bad_steps = 0
        else:  # a non-finite gradient would poison the weights: skip the step, and stop if it keeps happening
            bad_steps += 1
            print0(f"step {step}: non-finite gradient, update skipped ({bad_steps} in a row)")
            if bad_steps >= args.max_bad_steps:
                raise SystemExit(f"{bad_steps} non-finite steps in a row: lower --lr or check the data")
        step += 1
        t2 = time.time()

        # --- logging: numbers averaged over ranks; completions next to their rewards
        stats = torch.tensor([rewards.mean(), rewards.std(), (rewards == 100).float().mean(),
                              (rewards >= 10).float().mean(), (rewards.std(1) == 0).float().mean(),
                              roll.cot_lens.float().mean(), roll.answer_lens.float().mean(),
                              roll.cot_entropy.mean(), loss_sum], device=device, dtype=torch.float64)
        if ddp:
            dist.all_reduce(stats)
            stats /= world
        keys = ["reward", "reward_std", "accuracy", "extraction_rate", "no_signal_groups",
                "cot_len", "answer_len", "cot_entropy", "loss"]
        row = {"step": step, **dict(zip(keys, stats.tolist())), "sigma_abs": roll.sigma_abs, "lr": lr_at(step - 1, args),
               "grad_norm": grad_norm.item(), "tokens_per_s": (roll.cot_lens + roll.answer_lens).sum().item() / (t1 - t0),
               "rollout_s": t1 - t0, "update_s": t2 - t1}
        if step % args.eval_every == 0 or step == args.steps:
            row["val_accuracy"] = validate(model, tok, val_prompts, val_labels, args, rank, world, autocast)
            if row["val_accuracy"] > best:
                best = row["val_accuracy"]
                checkpoint("best")
            checkpoint("last")
        elif args.save_every and step % args.save_every == 0:
            checkpoint("last")
        if master:
            metrics_file.write(json.dumps(row) + "\n")
            metrics_file.flush()
            for i in (int(rewards[0].argmax()), int(rewards[0].argmin())):  # best and worst of the first group
                samples_file.write(json.dumps({"step": step, "reward": rewards[0, i].item(), "label": train_set[chosen[0]].answer,
                                               "cot": roll.cot_text[i], "answer": roll.answer_text[i]}) + "\n")
            samples_file.flush()
            bar.update(1)
            bar.set_postfix(reward=f"{row['reward']:.1f}", acc=f"{row['accuracy']:.2f}",
                            best_val=f"{best:.2f}" if best >= 0 else "-", cot=f"{row['cot_len']:.0f}")
            if "val_accuracy" in row or step == 1:
                tqdm.write(f"step {step}: reward {row['reward']:.1f} acc {row['accuracy']:.2f} "
                           f"no-signal groups {row['no_signal_groups']:.2f} cot {row['cot_len']:.0f} tok "
                           f"entropy {row['cot_entropy']:.2f} σ {roll.sigma_abs:.4f} loss {row['loss']:.2f} "
                           f"| {row['rollout_s']:.1f}s rollout {row['update_s']:.1f}s update"
                           + (f" | greedy val {row['val_accuracy']:.3f}" if "val_accuracy" in row else ""))
                tqdm.write(f"  sample (reward {rewards[0, 0].item():.0f}): {roll.cot_text[0][-200:]!r} -> {roll.answer_text[0]!r}")
    bar.close()
    print0(f"done: best greedy validation accuracy {best:.3f}; checkpoints in {args.out_dir}/best and {args.out_dir}/last")
    if ddp:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
