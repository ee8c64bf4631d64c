"""Train a chain of thought with RL: hard, soft or fuzzy CoT, REINFORCE, RLOO baseline (docs/paper.md §4-§5).

    python train.py --mode fuzzy --sigma 0.33                                  # one process, CPU or one GPU
    torchrun --standalone --nproc_per_node 8 train.py --mode fuzzy --dataset gsm8k --model meta-llama/Llama-3.2-3B-Instruct
    python train.py --out-dir out --resume                                     # continue a stopped run
    torchrun --nproc_per_node 8 train.py --fsdp --model meta-llama/Llama-3.1-8B-Instruct ...  # shard the model

One step (Trainer.train): B prompts -> G rollouts each, no gradient (§2-§3, Eq. 5-6) -> rewards (Eq. 11) ->
RLOO advantages (Eq. 12) -> one teacher-forced log π with gradient, in micro-batches (Eq. 13-14) -> clip ->
AdamW -> log -> every --eval-every steps a greedy validation that keeps the best model (§5) -> checkpoint.
The step's B·G rows are split evenly over the ranks (distributed.py); every row's randomness is a function of
(--seed, step, problem, sample index) only, so a resumed run, or one on another number of ranks, draws exactly
the same prompts, noise and samples. The run folder and its checkpoints: checkpoint.py and docs/training.md.
"""

import hashlib
import math
import os
import random
import shlex
import signal
import sys
import time

import torch
from tqdm import tqdm

from checkpoint import RunLog, StopSignal, load_resume_state, prepare_out_dir, save_run_checkpoint
from config import DEFAULTS, complete_args, parse_flags
from data import build_prompt, load_dataset, reward
from default_model import resolve_model
from distributed import Policy, Ranks, check_fsdp, load_optimizer_shards
from model import load_model
from rloo import rloo_advantages, rloo_loss
from rollout import check_context, generate, log_prob
from tokenizer import load_tokenizer

COLLAPSE_EXTRACTION = 0.25  # validation extraction rate below this fraction of the base model's = collapse
VAL_BATCH = {"cuda": 64, "cpu": 16}  # validation rows per generate call; small on CPU so the progress bar moves
REWARD_HELP = ("rewards (Eq. 11): 100 = correct boxed answer, 10 = a \\boxed{...} answer that is wrong, "
               "0 = no boxed answer. Small models often copy the prompt's \\boxed{[answer]} placeholder: "
               "that scores 10, so a reward near 10 with accuracy 0 means 'boxes something', not 'solves'.")


# --------------------------------------------------------------------------- the algorithm's pieces

def step_problems(step: int, n_train: int, B: int, seed: int) -> list[int]:
    """The B training problems of step `step` (1-based): consecutive slices of a per-epoch permutation."""
    epoch, slot = divmod(step - 1, n_train // B)
    order = list(range(n_train))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order[slot * B:(slot + 1) * B]


def row_seed(seed: int, step: int, problem: int, sample: int) -> int:
    """The random stream of one rollout row depends on (seed, step, problem, sample index) and nothing else."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{step}/{problem}/{sample}".encode()).digest()[:7], "little")


def lr_at(i: int, args) -> float:
    """Learning rate of update i (0-based): linear warm-up for --warmup-steps, then cosine decay to 0 (§5)."""
    if i < args.warmup_steps:
        return args.lr * (i + 1) / args.warmup_steps
    progress = (i - args.warmup_steps) / max(1, args.steps - args.warmup_steps)
    return args.lr * 0.5 * (1 + math.cos(math.pi * progress))


def loss_without_constant(loss: float, advantages: torch.Tensor, cot_lens: torch.Tensor, dim: int,
                          sigma_abs: float, total: int) -> float:
    """The loss of Eq. 13-14 without Eq. 10's normalising constant c = −½·d·log(2πσ²), which every soft/fuzzy
    CoT step adds to log π. It adds −(c/total)·Σ A·n_cot to the loss: large, and independent of the parameters,
    so it carries no learning signal. Hard CoT (σ = 0) has no such constant."""
    if sigma_abs == 0:
        return loss
    c = -0.5 * dim * math.log(2 * math.pi * sigma_abs**2)
    return loss + c * float((advantages.double() * cot_lens.double()).sum()) / total


# --------------------------------------------------------------------------- the run

class Trainer:
    """One training run: setup in __init__, the loop in train(), the rest in small helpers below it."""

    def __init__(self, args, resume_from: str | None, state: dict | None):
        self.args, a = args, args
        self.ranks = Ranks()
        B, G = a.prompts_per_step, a.samples_per_prompt
        if B * G % self.ranks.world:
            raise SystemExit(f"the {B} × {G} = {B * G} rows of a step must split evenly over the {self.ranks.world} "
                             "ranks (--prompts-per-step × --samples-per-prompt divisible by the number of ranks)")
        # Everything that can be wrong is checked before the run folder is touched (--overwrite deletes last).
        self.train_set, self.val_set = load_data(a)
        self.base_folder, self.tok = load_base(a.model)
        encode = lambda p: self.tok.encode_prompt(build_prompt(p.question, self.tok, a.prompt_format))
        self.train_prompts, self.val_prompts = [encode(p) for p in self.train_set], [encode(p) for p in self.val_set]
        model = load_model_or_exit(resume_from or self.base_folder)  # fp32 master weights, on the CPU for now
        check_context(self.train_prompts + self.val_prompts, [p.question for p in self.train_set + self.val_set],
                      a.max_cot_tokens, a.max_answer_tokens, model.cfg.max_seq_len, self.tok)
        self.lock = prepare_out_dir(a.out_dir, a.resume, a.overwrite) if self.ranks.master else None

        threads = self.ranks.start()
        self.rows = self.ranks.rows(B * G)  # this rank's rows: row r = problem r // G, sample r % G
        model.gradient_checkpointing = a.activation_checkpointing
        if not a.fsdp:  # under FSDP, fully_shard moves each rank's shard to its device
            model.to(self.ranks.device)
        self.policy = Policy(model, self.ranks, a.fsdp)  # under FSDP: sharded now
        if a.compile:
            model.compile_decode_step()
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
        if state and a.fsdp and os.path.isdir(os.path.join(resume_from, "optimizer")):  # absent: no state yet
            load_optimizer_shards(self.policy.root, self.optimizer, os.path.join(resume_from, "optimizer"))
        elif state and not a.fsdp:
            self.optimizer.load_state_dict(state["optimizer"])
        for p in model.parameters():  # a step without signal is an AdamW step on a zero gradient, resumed or not
            p.grad = torch.zeros_like(p)
        self.policy.replicate()  # under DDP: wrapped now, after the gradients exist (they become DDP's buckets)
        # progress: everything about the run so far that is not weights; saved in last/train_state.pt
        self.step, self.progress = 0, {"base_val": None, "base_extraction": None, "best_val": None,
                                       "best_step": None, "collapse": None, "updates": 0, "skipped": 0}
        if state:
            self.step, self.progress = state["step"], {**self.progress, **state["progress"]}
        noise = f" sigma={a.sigma}" if a.mode in ("soft", "fuzzy") else ""  # Gaussian noise: σ = sigma × RMS(E)
        self.print0(f"mode={a.mode} tau={a.tau}{noise} model={a.model} dataset={a.dataset} ({len(self.train_set)} "
                    f"train / {len(self.val_set)} val) B={B} G={G} steps={a.steps} world={self.ranks.world}"
                    f"{' (FSDP)' if a.fsdp else ''} device={self.ranks.device} {threads}")
        if state:
            self.print0(f"resumed from {resume_from} at step {self.step} (base model validation "
                        f"{self.progress['base_val']:.3f}, best so far {self.progress['best_val']:.3f})")
        self.print0(REWARD_HELP)
        self.run_log = RunLog(a.out_dir, write=self.ranks.master, resumed_step=self.step if state else None)
        self.last_save, self.bad_steps = time.time(), 0

    def print0(self, *text):
        if self.ranks.master:
            tqdm.write(" ".join(map(str, text)))

    # --- the loop: prompts -> rollouts -> rewards -> advantages -> update -> log -> validate -> checkpoint
    def train(self):
        a, B, G = self.args, self.args.prompts_per_step, self.args.samples_per_prompt
        with StopSignal(finish=True) as stop, self.ranks:  # leaving: the process group is closed
            if self.progress["base_val"] is None:
                self.validate_base()
            bar = tqdm(total=a.steps, initial=self.step, disable=not self.ranks.master, dynamic_ncols=True)
            stopping = self.sync(stop)[0]
            while self.step < a.steps and not stopping:
                self.step += 1
                t0 = time.time()
                problems = step_problems(self.step, len(self.train_set), B, a.seed)
                roll = self.rollouts(problems)                                      # §2-§3, Eq. 5-6
                my_rewards = self.rewards(problems, roll)                           # Eq. 11, this rank's rows
                rewards = self.ranks.all_gather(my_rewards).view(B, G)              # every rank's
                advantages = rloo_advantages(rewards).flatten()[self.rows.start:self.rows.stop]  # Eq. 12
                t1 = time.time()
                self.optimizer.zero_grad(set_to_none=False)
                loss = 0.0
                for chunk, weight in self.policy.micro_batches(advantages.nonzero()[:, 0].tolist(), a.micro_batch):
                    chunk_loss = rloo_loss(self.policy.train_call(log_prob, roll.select(chunk)),   # Eq. 13-14
                                           weight * advantages[chunk], total=len(self.rows))
                    chunk_loss.backward()
                    loss += chunk_loss.item()
                update = self.clip_and_step(loss, has_signal=bool(rewards.std(1).gt(0).any()))
                row = self.metrics(rewards, roll, advantages, update, t0, t1)
                if self.step % a.eval_every == 0 or self.step == a.steps:
                    row.update(self.validate_and_select())                          # §5
                stopping, save_due = self.sync(stop)
                self.log(row, problems, roll, my_rewards, bar, save="val_accuracy" in row or save_due or stopping
                         or bool(a.save_every and self.step % a.save_every == 0))
            bar.close()
            if stopping and self.step < a.steps:
                self.stop_now(stop.signum)
            self.finish()

    def rollouts(self, problems):
        """This rank's rows of the step, each with its own seed (see row_seed). The rows come in runs of k of the
        same problem (k divides both the rank's row count and G, so no run crosses a group): each run's prompt
        is prefilled once and copied to its k rows."""
        a, G = self.args, self.args.samples_per_prompt
        k = math.gcd(len(self.rows), G)
        with self.policy.generating():
            return self.policy.call(generate, self.tok, [self.train_prompts[problems[r // G]] for r in self.rows[::k]],
                                    a.mode, samples_per_prompt=k, tau=a.tau, sigma=a.sigma,
                                    max_cot_tokens=a.max_cot_tokens, max_answer_tokens=a.max_answer_tokens,
                                    answer_tau=a.answer_tau,
                                    seed=[row_seed(a.seed, self.step, problems[r // G], r % G) for r in self.rows])

    def rewards(self, problems, roll) -> torch.Tensor:
        G = self.args.samples_per_prompt
        mine = [self.train_set[problems[r // G]] for r in self.rows]
        return torch.tensor([reward(text, p.answer, p.numeral_answer) for p, text in zip(mine, roll.answer_text)],
                            device=self.ranks.device)

    def clip_and_step(self, loss: float, has_signal: bool) -> dict:
        """Clip the gradient norm, then AdamW at this step's learning rate; a non-finite gradient would poison the
        weights, so that update is skipped, and the run stops if it keeps happening. Under FSDP the gradients
        are sharded DTensors: the norms are the whole model's, on every rank."""
        a, params = self.args, list(self.policy.model.parameters())
        grad_norm = torch.nn.utils.clip_grad_norm_(params, a.grad_clip).item()
        out = {"loss": loss, "grad_norm": grad_norm, "grad_norm_clipped": math.nan}
        if math.isfinite(grad_norm):
            out["grad_norm_clipped"] = torch.nn.utils.get_total_norm([p.grad for p in params]).item()
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(self.step - 1, a)
            self.optimizer.step()
            if has_signal:  # a step without signal (all advantages 0) says nothing about the gradient's health
                self.bad_steps = 0
                self.progress["updates"] += 1
            return out
        self.bad_steps += 1
        self.progress["skipped"] += 1
        self.print0(f"step {self.step}: non-finite gradient norm ({grad_norm}), update skipped ({self.bad_steps} in a "
                    f"row). Possible causes: --lr {a.lr} too high, --sigma {a.sigma} too small (σ divides in Eq. 10), "
                    f"--tau {a.tau} too small (logits / τ overflow)")
        if self.bad_steps >= a.max_bad_steps:
            self.save("last")
            raise SystemExit(f"{self.bad_steps} non-finite steps in a row (up to step {self.step}): lower --lr, or "
                             f"check --sigma / --tau and the data. last/ holds step {self.step} (the skipped steps "
                             "changed no weights).")
        return out

    def metrics(self, rewards, roll, advantages, update, t0, t1) -> dict:
        """The step's numbers: reward statistics over all B·G rows, the rest averaged over the ranks."""
        local = torch.tensor([roll.cot_lens.float().mean(), roll.answer_lens.float().mean(), roll.cot_entropy.mean(),
                              update["loss"], loss_without_constant(update["loss"], advantages, roll.cot_lens,
                                                                    self.policy.model.cfg.dim, roll.sigma_abs,
                                                                    len(self.rows)),
                              (roll.cot_lens + roll.answer_lens).sum() / (t1 - t0)],
                             device=self.ranks.device, dtype=torch.float64)
        local = self.ranks.all_reduce(local) / self.ranks.world
        cot_len, answer_len, entropy, loss, loss_no_const, tokens_per_s = local.tolist()
        return {"step": self.step, "reward": rewards.mean().item(), "reward_std": rewards.std().item(),
                "accuracy": (rewards == 100).float().mean().item(),
                "extraction_rate": (rewards >= 10).float().mean().item(),
                "no_signal_groups": (rewards.std(1) == 0).float().mean().item(),
                "cot_len": cot_len, "answer_len": answer_len, "cot_entropy": entropy,
                "loss": loss, "loss_no_const": loss_no_const, "grad_norm": update["grad_norm"],
                "grad_norm_clipped": update["grad_norm_clipped"], "sigma_abs": roll.sigma_abs,
                "lr": lr_at(self.step - 1, self.args), "tokens_per_s": tokens_per_s * self.ranks.world,
                "rollout_s": t1 - t0, "update_s": time.time() - t1}

    # --- validation and model selection (§5)
    def validate(self, label: str) -> tuple[float, float]:
        """Greedy validation: hard with greedy CoT, soft/fuzzy with σ = 0, greedy answer -> (accuracy, fraction of
        answers with a boxed answer), over all ranks."""
        a, ranks = self.args, self.ranks
        mine = list(range(ranks.rank, len(self.val_prompts), ranks.world))
        batch = VAL_BATCH["cuda" if "cuda" in ranks.device else "cpu"]
        counts = torch.zeros(2, dtype=torch.float64, device=ranks.device)  # correct, extracted
        with tqdm(total=len(mine), desc=label, unit="problem", disable=not ranks.master, leave=False,
                  dynamic_ncols=True) as bar, self.policy.generating():
            for i in range(0, len(mine), batch):
                idx = mine[i:i + batch]
                r = self.policy.call(generate, self.tok, [self.val_prompts[j] for j in idx], a.mode,
                                     tau=0.0 if a.mode == "hard" else a.tau, sigma=0.0, max_cot_tokens=a.max_cot_tokens,
                                     max_answer_tokens=a.max_answer_tokens, answer_tau=0.0)
                scores = [reward(text, self.val_set[j].answer, self.val_set[j].numeral_answer)
                          for text, j in zip(r.answer_text, idx)]
                counts += torch.tensor([sum(s == 100 for s in scores), sum(s >= 10 for s in scores)],
                                       dtype=torch.float64, device=ranks.device)
                bar.update(len(idx))
        accuracy, extraction = (ranks.all_reduce(counts) / len(self.val_prompts)).tolist()
        return accuracy, extraction

    def validate_base(self):
        """Step 0: the base model's score is where model selection starts (best/ must beat it)."""
        accuracy, extraction = self.validate("step 0 validation (base model)")
        self.progress.update(base_val=accuracy, base_extraction=extraction, best_val=accuracy)
        self.print0(f"step 0: greedy validation accuracy {accuracy:.3f}, boxed answers {extraction:.2f} "
                    f"(base model: best/ will only hold a model that beats this)")
        self.run_log.write("metrics", {"step": 0, "val_accuracy": accuracy, "val_extraction_rate": extraction})

    def validate_and_select(self) -> dict:
        """Validate; save best/ when it beats every earlier score (the base model's included); detect collapse."""
        p = self.progress
        accuracy, extraction = self.validate(f"step {self.step} validation")
        out = {"val_accuracy": accuracy, "val_extraction_rate": extraction}
        if accuracy > p["best_val"]:
            p.update(best_val=accuracy, best_step=self.step)
            self.save("best")
            out["saved"] = ["best"]
        collapse = None
        if p["base_val"] > 0 and accuracy == 0:
            collapse = f"validation accuracy fell to 0 from {p['base_val']:.3f} (base model)"
        elif extraction < COLLAPSE_EXTRACTION * p["base_extraction"]:
            collapse = (f"boxed answers fell to {extraction:.2f} of validation problems from "
                        f"{p['base_extraction']:.2f} (base model)")
        if collapse:
            collapse = f"step {self.step}: the model collapsed: {collapse}; lower --lr (now {self.args.lr})"
            p["collapse"] = p["collapse"] or collapse
            out["collapse"] = collapse
            self.print0(f"WARNING: {collapse}")
        return out

    # --- checkpoints and signals
    def save(self, name: str):
        """best/: the Hugging Face folder. last/: the same plus train_state.pt (optimizer, step, arguments,
        progress: plain tensors, numbers, strings, lists and dicts, so it loads with weights_only=True); under
        FSDP it records the number of ranks instead of the AdamW state, which is sharded in last/optimizer/."""
        state = None
        if name == "last":
            state = {"step": self.step, "args": vars(self.args), "progress": self.progress,
                     "optimizer": self.optimizer.state_dict() if not self.args.fsdp else {"fsdp_world": self.ranks.world}}
            self.last_save = time.time()
        save_run_checkpoint(os.path.join(self.args.out_dir, name), self.policy, self.optimizer, self.base_folder,
                            state)

    def sync(self, stop: StopSignal) -> tuple[int, bool]:
        """(signal to stop on, or 0; whether --save-minutes have passed), the same on every rank."""
        due = self.args.save_minutes > 0 and time.time() - self.last_save >= 60 * self.args.save_minutes
        flags = self.ranks.all_reduce(torch.tensor([stop.signum, int(due)], device=self.ranks.device),
                                      torch.distributed.ReduceOp.MAX)
        stop.signum = int(flags[0])
        return int(flags[0]), bool(flags[1])

    def stop_now(self, signum: int):
        if not os.path.exists(os.path.join(self.args.out_dir, "last", "train_state.pt")):
            self.save("last")  # stopped before the first step: last/ keeps the step-0 validation
        launcher = f"torchrun --nproc_per_node {self.ranks.world}" if self.ranks.world > 1 else "python"
        self.print0(f"stopped by {signal.Signals(signum).name} after step {self.step}: last/ saved. Continue with:\n"
                    f"  {launcher} train.py --out-dir {shlex.quote(self.args.out_dir)} --resume")
        raise SystemExit(128 + signum)

    # --- logging
    def log(self, row: dict, problems, roll, my_rewards, bar, save: bool):
        """metrics.jsonl and samples.jsonl (rank 0's best and worst sample of the step's first problem), the
        progress bar, then last/ if due: after the log, so a crash between the two replays this step rather
        than losing its line."""
        if save:
            row["saved"] = [*row.get("saved", []), "last"]
        self.run_log.write("metrics", row)
        if self.ranks.master:
            first_group = [i for i, r in enumerate(self.rows) if r < self.args.samples_per_prompt]  # rank 0's rows
            best = max(first_group, key=lambda i: my_rewards[i])
            worst = min(first_group, key=lambda i: my_rewards[i])
            problem = self.train_set[problems[0]]
            self.run_log.write("samples", *({"step": self.step, "reward": my_rewards[i].item(), "gold": problem.answer,
                                             "question": problem.question, "cot": roll.cot_text[i],
                                             "answer": roll.answer_text[i]}
                                            for i in ([best, worst] if my_rewards[best] != my_rewards[worst]
                                                      else [best])))  # no reward spread: one line
            bar.update(1)
            bar.set_postfix(reward=f"{row['reward']:.1f}", acc=f"{row['accuracy']:.2f}",
                            loss_no_const=f"{row['loss_no_const']:.3g}", best_val=f"{self.progress['best_val']:.2f}",
                            cot=f"{row['cot_len']:.0f}")
            if "val_accuracy" in row or self.step == 1:
                tqdm.write(f"step {self.step}: reward {row['reward']:.1f} acc {row['accuracy']:.2f} no-signal groups "
                           f"{row['no_signal_groups']:.2f} cot {row['cot_len']:.0f} tok entropy "
                           f"{row['cot_entropy']:.2f} σ {row['sigma_abs']:.4f} loss_no_const "
                           f"{row['loss_no_const']:.3g} (loss {row['loss']:.4g}) grad_norm {row['grad_norm']:.3g} "
                           f"(clipped {row['grad_norm_clipped']:.3g}) | {row['rollout_s']:.1f}s rollout "
                           f"{row['update_s']:.1f}s update" + (f" | greedy val {row['val_accuracy']:.3f}"
                                                                if "val_accuracy" in row else ""))
                tqdm.write(f"  sample (reward {my_rewards[0].item():.0f}, gold {problem.answer}): "
                           f"{roll.cot_text[0][-200:]!r} -> {roll.answer_text[0]!r}")
        if save:
            self.save("last")

    def finish(self):
        """The final line (and the last metrics row) say what best/ holds, whether training collapsed, and fail
        the run when no update with a learning signal was ever applied."""
        p, out = self.progress, self.args.out_dir
        if p["best_step"] is None:
            summary = (f"done: no step beat the base model (validation {p['base_val']:.3f}); best/ not written; the "
                       f"base model {self.args.model} is still the best. last/ holds step {self.step}")
        else:
            summary = (f"done: best greedy validation accuracy {p['best_val']:.3f} at step {p['best_step']} "
                       f"(base model {p['base_val']:.3f}), in {out}/best; last/ holds step {self.step}")
        if p["collapse"]:
            summary += f". WARNING: {p['collapse']}"
        failed = p["skipped"] > 0 and p["updates"] == 0
        if failed:
            summary = (f"FAILED: every update with a learning signal ({p['skipped']}) had a non-finite gradient and "
                       f"was skipped: the weights never changed. Check --sigma, --tau and --lr. ({summary})")
        self.print0(summary)
        self.run_log.write("metrics", {"step": self.step, "summary": summary, "best_step": p["best_step"],
                                       "best_val_accuracy": p["best_val"], "base_val_accuracy": p["base_val"],
                                       "collapse": p["collapse"]})
        self.run_log.close()
        if failed:
            raise SystemExit(1)


# --------------------------------------------------------------------------- setup

def load_data(a):
    try:
        train_set = load_dataset(a.dataset, "train", data_path=a.data_path)
        val_set = load_dataset(a.dataset, "validation", data_path=a.data_path, limit=a.val_size)
    except (ValueError, FileNotFoundError, ImportError) as e:
        raise SystemExit(f"data: {e}") from None
    if len(train_set) < a.prompts_per_step:
        raise SystemExit(f"data: the training set has {len(train_set)} problems, fewer than --prompts-per-step "
                         f"{a.prompts_per_step}")
    if not val_set:
        raise SystemExit("data: the validation set is empty")
    return train_set, val_set


def load_base(name: str):
    """(folder, tokenizer) of --model, or a one-line error."""
    try:
        folder = resolve_model(name)
        return folder, load_tokenizer(folder)
    except (OSError, ValueError) as e:
        raise SystemExit(f"--model {name}: {e}") from None


def load_model_or_exit(folder: str):
    try:
        return load_model(folder, device="cpu", dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise SystemExit(f"model {folder}: {e}") from None


def main(argv=None):
    given = parse_flags(argv)
    resume_from, state = (load_resume_state(given.get("out_dir", DEFAULTS["out_dir"])) if given.get("resume")
                          else (None, None))
    args = complete_args(given, stored=state["args"] if state else None)
    check_fsdp(args, state, int(os.environ.get("WORLD_SIZE", "1")))
    if state and state["step"] >= args.steps:
        raise SystemExit(f"the run in {args.out_dir} is already at step {state['step']} of --steps {args.steps}; "
                         "pass a larger --steps to train further")
    Trainer(args, resume_from, state).train()


if __name__ == "__main__":
    main(sys.argv[1:])
