"""Train a chain of thought with RL: hard, soft or fuzzy CoT, REINFORCE, RLOO baseline (docs/paper.md §4-§5).

    python train.py --mode fuzzy --sigma 0.33                                  # one process, CPU or one GPU
    torchrun --standalone --nproc_per_node 8 train.py --mode fuzzy --dataset gsm8k --model meta-llama/Llama-3.2-3B-Instruct
    python train.py --out-dir out --resume                                     # continue a stopped run
    torchrun --nproc_per_node 8 train.py --fsdp --model meta-llama/Llama-3.1-8B-Instruct ...  # shard the model

One step: pick B prompts -> roll out G samples each (no gradient) -> rewards (Eq. 11) -> RLOO advantages
(Eq. 12) -> one teacher-forced log_prob forward with gradient, in micro-batches (Eq. 13-14) -> clip -> AdamW.
The step's B·G rows are split evenly over the ranks; every row's randomness is a function of
(--seed, step, problem, sample index) only, so a resumed run, or one on another number of ranks, draws exactly
the same prompts, noise and samples.

OUT_DIR holds metrics.jsonl, samples.jsonl, last/ (model + train_state.pt: what --resume needs) and best/
(a Hugging Face folder, written only when a validation beats the base model's step-0 score). Under --fsdp,
last/optimizer/ holds the AdamW state, sharded over the ranks (torch.distributed.checkpoint).
"""

import argparse
import errno
import hashlib
import json
import math
import os
import pickle
import random
import shlex
import shutil
import signal
import sys
import time
from contextlib import contextmanager, nullcontext

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from data import DATASET_DEFAULTS, FALLBACK_DEFAULTS, build_prompt, load_dataset, reward
from default_model import resolve_model
from model import Transformer, load_model, save_model
from rloo import rloo_advantages, rloo_loss
from rollout import DEFAULT_TAU, generate, log_prob
from tokenizer import load_tokenizer

# Flags that may differ from the stored run on --resume: they change how long it runs, when it saves and
# how the update is chunked, not what it learns. --steps stretches the cosine schedule (lr_at) to the new end.
RESUME_SAFE = {"steps", "eval_every", "save_every", "save_minutes", "max_bad_steps", "micro_batch",
               "activation_checkpointing", "compile", "out_dir", "resume"}
RUN_FILES = ["metrics.jsonl", "samples.jsonl", "best", "last", "best.tmp", "last.tmp", "best.old", "last.old"]
COLLAPSE_EXTRACTION = 0.25  # validation extraction rate below this fraction of the base model's = collapse
VAL_BATCH = {"cuda": 64, "cpu": 16}  # validation rows per generate call; small on CPU so the progress bar moves
REWARD_HELP = ("rewards (Eq. 11): 100 = correct boxed answer, 10 = a \\boxed{...} answer that is wrong, "
               "0 = no boxed answer. Small models often copy the prompt's \\boxed{[answer]} placeholder: "
               "that scores 10, so a reward near 10 with accuracy 0 means 'boxes something', not 'solves'.")


# --------------------------------------------------------------------------- arguments

def finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["hard", "soft", "fuzzy"], default="fuzzy")
    ap.add_argument("--sigma", type=finite_float,
                    help="noise multiplier: σ = sigma × RMS(E) (§2; default: the paper's 0.33, lab 1.0)")
    ap.add_argument("--tau", type=finite_float, default=None,
                    help="CoT temperature (default: hard 1.0, soft 0.5, fuzzy 1e-4)")
    ap.add_argument("--answer-tau", type=finite_float, default=1.0, help="answer temperature in training (§3)")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--dataset", default="arithmetic")
    ap.add_argument("--data-path", default=None, help="local JSONL/parquet in GSM8K format")
    ap.add_argument("--prompt-format", choices=["raw", "chat"], help="raw: the paper's prompt (§6); chat: chat template")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--samples-per-prompt", type=int, help="G (paper: 32)")
    ap.add_argument("--prompts-per-step", type=int, help="B over all ranks (paper: 2)")
    ap.add_argument("--max-cot-tokens", type=int, help="CoT budget L (§3)")
    ap.add_argument("--max-answer-tokens", type=int, default=32)
    ap.add_argument("--lr", type=finite_float,
                    help="peak learning rate (paper: 6e-6 Llama 3B, 3e-6 Llama 8B, 8e-6 Qwen 3B)")
    ap.add_argument("--warmup-steps", type=int, help="linear warm-up steps before the cosine decay (§5)")
    ap.add_argument("--weight-decay", type=finite_float, default=0.0)
    ap.add_argument("--grad-clip", type=finite_float, default=1.0, help="max gradient norm (> 0)")
    ap.add_argument("--micro-batch", type=int, default=8, help="rows per log_prob forward/backward")
    ap.add_argument("--activation-checkpointing", action="store_true")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the rollouts' decode step (model.compile_decode_step; not with --fsdp)")
    ap.add_argument("--fsdp", action="store_true",
                    help="shard weights, gradients and AdamW state over the ranks (FSDP2; under torchrun, >= 2 ranks)")
    ap.add_argument("--eval-every", type=int)
    ap.add_argument("--val-size", type=int)
    ap.add_argument("--save-every", type=int, default=0, help="also save last/ every N steps (0: off)")
    ap.add_argument("--save-minutes", type=finite_float, default=10.0,
                    help="also save last/ after this many minutes without a save (0: off)")
    ap.add_argument("--out-dir", default="out")
    ap.add_argument("--resume", action="store_true", help="continue the run in OUT_DIR from OUT_DIR/last")
    ap.add_argument("--overwrite", action="store_true", help="delete the run already in OUT_DIR and start over")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-bad-steps", type=int, default=5, help="stop after this many non-finite steps in a row")
    return ap


def given_flags(argv) -> set[str]:
    """The flags written on the command line, as argparse dests: parsed again with every default suppressed."""
    ap = build_parser()
    for action in ap._actions:
        action.default = argparse.SUPPRESS
    return set(vars(ap.parse_args(argv)))


def get_args(argv=None, stored: dict | None = None):
    """Parse and check the flags. On --resume, `stored` (the run's own arguments) replaces the defaults, and a
    flag given explicitly must equal the stored value unless it is in RESUME_SAFE."""
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.resume and args.overwrite:
        ap.error("--resume continues the run in --out-dir and --overwrite deletes it: choose one")
    if stored is not None:
        given = {k: getattr(args, k) for k in given_flags(argv)}
        conflicts = [f"--{k.replace('_', '-')} {v} (the run has {stored[k]})" for k, v in sorted(given.items())
                     if k not in RESUME_SAFE and k in stored and v != stored[k]]
        if conflicts:
            safe = " ".join(f"--{k.replace('_', '-')}" for k in sorted(RESUME_SAFE))
            ap.error(f"--resume continues the run in {args.out_dir} with its own settings, but these flags differ: "
                     + "; ".join(conflicts) + f". Drop them (the stored values apply), or start a new run in another "
                     f"--out-dir. Flags that may change on resume: {safe}")
        args = argparse.Namespace(**{**vars(ap.parse_args([])), **stored, **given})

    for k, v in DATASET_DEFAULTS.get(args.dataset, FALLBACK_DEFAULTS).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.tau = DEFAULT_TAU[args.mode] if args.tau is None else args.tau
    problems = []
    for name in ("steps", "samples_per_prompt", "prompts_per_step", "max_cot_tokens", "max_answer_tokens",
                 "micro_batch", "eval_every", "val_size", "max_bad_steps"):
        if getattr(args, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("warmup_steps", "save_every", "save_minutes", "weight_decay"):
        if getattr(args, name) < 0:
            problems.append(f"--{name.replace('_', '-')} must be >= 0")
    if args.samples_per_prompt < 2:
        problems.append("--samples-per-prompt must be >= 2: the RLOO baseline needs other samples")
    if args.sigma <= 0 and args.mode != "hard":
        problems.append("--sigma must be > 0 for soft/fuzzy training: σ = 0 has no log-probability (Eq. 10)")
    if args.tau <= 0 or args.answer_tau <= 0:
        problems.append("--tau and --answer-tau must be > 0 in training (a greedy policy has no gradient)")
    if not 0 < args.lr < 1:
        problems.append("--lr must be in (0, 1)")
    if args.grad_clip <= 0:
        problems.append("--grad-clip must be > 0 (it is the largest gradient norm an update may have)")
    if args.compile and args.fsdp:
        problems.append("--compile is not supported with --fsdp (the compiled step would have to trace FSDP's hooks)")
    if problems:
        ap.error("; ".join(problems))
    return args


# --------------------------------------------------------------------------- the output folder and checkpoints

def prepare_out_dir(args, remove: bool):
    """Refuse to write over a run unless --resume (continue it) or --overwrite (delete it, saying what)."""
    existing = [n for n in RUN_FILES if os.path.exists(os.path.join(args.out_dir, n))]
    if not args.resume and existing:
        if not args.overwrite:
            raise SystemExit(f"{args.out_dir} already holds a run ({', '.join(existing)}). Continue it with --resume, "
                             f"start over with --overwrite (deletes those), or choose another --out-dir.")
        if remove:
            print(f"--overwrite: deleting {', '.join(os.path.join(args.out_dir, n) for n in existing)}")
            for name in existing:
                path = os.path.join(args.out_dir, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    if remove:
        os.makedirs(args.out_dir, exist_ok=True)


def load_resume_state(out_dir: str) -> tuple[str, dict]:
    """(folder, train state) of the newest complete checkpoint: last/, else last.old/ (left by a crash between two
    renames), else an older best/ that still holds a state. Unreadable ones are named and skipped."""
    skipped = []
    for name in ("last", "last.old", "best"):
        folder = os.path.join(out_dir, name)
        path = os.path.join(folder, "train_state.pt")
        if not os.path.exists(path):
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "GLOBAL" in str(e):  # it names a Python object to import and call: it could run code
                raise SystemExit(f"refusing to load {path}: it holds Python objects other than tensors, numbers, "
                                 "strings, lists and dicts, and unpickling them could run code. Resume only from "
                                 "checkpoints train.py wrote.") from None
            skipped.append(f"{path} is corrupt ({str(e).splitlines()[0][:120]})")
            continue
        except Exception as e:
            skipped.append(f"{path} is corrupt ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
            continue
        missing = {"optimizer", "step", "args", "progress"} - set(state if isinstance(state, dict) else ())
        if missing or not os.path.exists(os.path.join(folder, "config.json")):
            skipped.append(f"{folder} is incomplete (missing {', '.join(sorted(missing)) or 'config.json'})")
            continue
        if skipped:
            print(f"warning: {'; '.join(skipped)}. Resuming from {folder} (step {state['step']}) instead.",
                  file=sys.stderr)
        return folder, state
    raise SystemExit(f"--resume: no checkpoint to resume from in {out_dir}"
                     + (": " + "; ".join(skipped) if skipped else f" (no {out_dir}/last/train_state.pt)"))


def disk_full(error: Exception, folder: str) -> bool:
    """ENOSPC, or a library error (torch, safetensors) raised while the disk had (almost) no space left."""
    if getattr(error, "errno", None) == errno.ENOSPC:
        return True
    try:
        return shutil.disk_usage(folder).free < 64 * 2**20
    except OSError:
        return False


def save_checkpoint(path: str, model, tokenizer_folder: str, state: dict | None = None, clean: bool = True):
    """Hugging Face folder + tokenizer files (+ train_state.pt for last/), written atomically: built in a temporary
    folder, then swapped in, so a crash or a full disk at any moment leaves the old or the new checkpoint whole.
    clean=False keeps what the ranks already wrote into the temporary folder (under --fsdp: optimizer/)."""
    tmp, old = path + ".tmp", path + ".old"
    if clean:
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_model(model, tmp)
        for name in os.listdir(tokenizer_folder):
            if name.startswith("tokenizer") or name in ("special_tokens_map.json", "generation_config.json"):
                shutil.copy(os.path.join(tokenizer_folder, name), tmp)
        if state is not None:
            with open(os.path.join(tmp, "train_state.pt"), "wb") as f:  # a file object: a full disk is an OSError
                torch.save(state, f)
    except Exception as e:
        folder = os.path.dirname(os.path.abspath(path))
        full = disk_full(e, folder)
        shutil.rmtree(tmp, ignore_errors=True)
        if not full:
            raise
        kept = f"the previous checkpoint in {path} is intact" if os.path.exists(path) else f"{path} was not written"
        raise SystemExit(f"no space left on device while saving a checkpoint in {folder}; {kept}. "
                         "Free some space, then continue with --resume.") from None
    if os.path.exists(path):
        shutil.rmtree(old, ignore_errors=True)  # a crash while it was being deleted leaves it; path is whole
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def truncate_log(path: str, step: int):
    """Keep the lines of a JSONL log up to `step` (a resume replays what came after), via a temporary file."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        kept = [line for line in f if _keep(line, step)]
    with open(path + ".tmp", "w") as f:
        f.writelines(kept)
    os.replace(path + ".tmp", path)


def _keep(line: str, step: int) -> bool:
    """A line of a step up to `step`; not a run's closing summary, nor a line cut short by a crash."""
    try:
        row = json.loads(line)
        return row["step"] <= step and "summary" not in row
    except (ValueError, KeyError, TypeError):
        return False


def json_line(row: dict) -> str:
    """One JSON line. JSON has no NaN or inf: such values are written as null and listed under "nonfinite"."""
    bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        row = {**{k: None if k in bad else v for k, v in row.items()}, "nonfinite": bad}
    return json.dumps(row, allow_nan=False) + "\n"


# --------------------------------------------------------------------------- pieces of a step

def lr_at(i: int, args) -> float:
    """Learning rate of update i (0-based): linear warm-up for --warmup-steps, then cosine decay to 0 (§5)."""
    if i < args.warmup_steps:
        return args.lr * (i + 1) / args.warmup_steps
    progress = (i - args.warmup_steps) / max(1, args.steps - args.warmup_steps)
    return args.lr * 0.5 * (1 + math.cos(math.pi * progress))


def step_problems(step: int, n_train: int, B: int, seed: int) -> list[int]:
    """The B training problems of step `step` (1-based): consecutive slices of a per-epoch permutation."""
    epoch, slot = divmod(step - 1, n_train // B)
    order = list(range(n_train))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order[slot * B:(slot + 1) * B]


def row_seed(seed: int, step: int, problem: int, sample: int) -> int:
    """The random stream of one rollout row depends on (seed, step, problem, sample index) and nothing else."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{step}/{problem}/{sample}".encode()).digest()[:7], "little")


def gather(x: torch.Tensor, world: int) -> torch.Tensor:
    """Concatenate every rank's x (all the same shape) in rank order."""
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x)
    return torch.cat(parts)


def loss_without_constant(loss: float, advantages: torch.Tensor, cot_lens: torch.Tensor, dim: int,
                          sigma_abs: float, total: int) -> float:
    """The loss of Eq. 13-14 without Eq. 10's normalising constant c = −½·d·log(2πσ²), which every soft/fuzzy
    CoT step adds to log π. It adds −(c/total)·Σ A·n_cot to the loss: large, and independent of the parameters,
    so it carries no learning signal. Hard CoT (σ = 0) has no such constant."""
    if sigma_abs == 0:
        return loss
    c = -0.5 * dim * math.log(2 * math.pi * sigma_abs**2)
    return loss + c * float((advantages.double() * cot_lens.double()).sum()) / total


class StopSignal:
    """SIGINT/SIGTERM: the first lets the current step (or validation) finish, then last/ is saved and the run
    exits with 128 + the signal's number; another one a second or more later exits at once (last/ keeps its
    previous state). Under torchrun, Ctrl-C reaches each worker twice (from the terminal and from the launcher,
    which kills the workers 30 s later): the duplicate is ignored."""

    def __init__(self):
        self.signum, self.since = 0, 0.0
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.signum:
            if time.time() - self.since < 1:
                return
            print(f"\n{name} again: stopping now; last/ keeps the previous checkpoint", file=sys.stderr, flush=True)
            raise SystemExit(128 + signum)
        self.signum, self.since = signum, time.time()
        print(f"\n{name}: finishing this step, then saving last/ (send it again to stop at once)",
              file=sys.stderr, flush=True)

    def restore(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def pick_threads(device: str, local_world: int) -> str:
    """On CPU: OMP_NUM_THREADS if set, else this machine's cores shared among the local ranks (one process per
    core group avoids oversubscription, which slows everything down on a shared machine)."""
    if device != "cpu":
        return f"threads={torch.get_num_threads()}"
    if os.environ.get("OMP_NUM_THREADS"):
        n, why = int(os.environ["OMP_NUM_THREADS"]), "OMP_NUM_THREADS"
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        n, why = max(1, cores // local_world), f"{cores} cores / {local_world} ranks"
    torch.set_num_threads(n)
    return f"threads={n} ({why})"


def init_distributed(world: int) -> str:
    """Join the torchrun process group (NCCL on GPUs, gloo on CPU) -> this rank's device."""
    if world == 1:
        return "cuda" if torch.cuda.is_available() else "cpu"
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    if backend == "gloo":
        return "cpu"
    device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    torch.cuda.set_device(device)
    return device


# --------------------------------------------------------------------------- FSDP (--fsdp)
# DDP keeps the fp32 weights, gradients and AdamW state on every rank: 16 bytes a parameter, 128 GB for an 8B
# model, more than a GPU holds. FSDP2 (torch.distributed.fsdp.fully_shard) splits all three over the W ranks:
# one unit per transformer block plus a root unit (embeddings, final norm, head). A unit's parameters are
# all-gathered just before it computes and freed after; its gradients are reduce-scattered (averaged over the
# ranks, as DDP does) after its backward, so each rank keeps and updates 1/W of everything.

class RootUnit(nn.Module):
    """FSDP's root unit: runs fn(model, ...) inside its forward.

    rollout.py reads the embedding matrix E outside model.forward (the soft inputs p E, the teacher-forced
    inputs, anchored_surrogate's gradient of Eq. 10). With the Transformer itself as the root unit, E would be
    sharded there, and FSDP would reduce-scatter the root's gradients as soon as the backward reached
    model.forward's input, before E's other gradients arrive: they would be lost (checked: E got no gradient).
    Inside this unit's forward E is whole, and since fn's inputs need no gradient, FSDP reduce-scatters the
    root's gradients after the whole backward."""

    def __init__(self, model: Transformer):
        super().__init__()
        self.model = model

    def forward(self, fn, *args, **kwargs):
        return fn(self.model, *args, **kwargs)


def shard(model: Transformer, device: str) -> RootUnit:
    """fully_shard each transformer block, then the root unit (what is left: embeddings, final norm, head)."""
    if "cuda" in device:
        # Blocks: bf16 all-gathers and matrix products, gradients reduced in fp32 into fp32 master weights.
        # cast_forward_inputs=False keeps the residual stream in fp32, as under DDP's autocast (which still runs
        # and casts per op), so the blocks compute as they do under DDP, except that the RMSNorm gains are bf16.
        block_policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                                            cast_forward_inputs=False)
        # The root stays fp32: the head (tied to E in SmolLM2) and p E must be float32 (model.fp32_logits,
        # rollout.anchored_surrogate); a bf16 param_dtype would make the head's weight bf16 without a word.
        root_policy = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32,
                                           cast_forward_inputs=False)
    else:  # gloo on CPU: float32 throughout, as a CPU run without FSDP
        block_policy = root_policy = MixedPrecisionPolicy()
    for block in model.layers:
        fully_shard(block, mp_policy=block_policy)
    # the root's parameters stay gathered from its forward to the end of the backward, which needs them at once
    root = fully_shard(RootUnit(model), mp_policy=root_policy, reshard_after_forward=False)
    root(lambda model: None)  # FSDP makes the first unit that runs forward the root: this one, now
    root.reshard()
    return root


@contextmanager
def gathered(root: RootUnit):
    """The whole model gathered for a rollout or a validation, freed after it.

    FSDP's default would gather each block again at every decoding step, and that cannot work here: each rank
    stops decoding when its own rows are done, and ranks have different numbers of validation problems, so
    ranks would wait in different collectives. Gathered here, at the same point on every rank, the decoding
    steps run no collective at all, and the model is all-gathered once per rollout instead of once per
    decoding step (on 2 CPU ranks, the default model: 303 against 1017 ms per forward; README). Cost: the
    whole model in the compute dtype while generating (bf16 on GPU: 2 bytes a parameter, 16 GB for 8B)."""
    units = [m for m in root.modules() if isinstance(m, FSDPModule)]
    for unit in units:
        unit.unshard()
    root.set_reshard_after_forward(False)
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
        root.set_reshard_after_forward(True)                   # back to training: blocks free after forward,
        root.set_reshard_after_forward(False, recurse=False)   # the root keeps its parameters until backward


def full_copy(model: Transformer) -> Transformer | None:
    """The full weights gathered to rank 0's CPU, as a plain Transformer that save_model writes (None on the
    other ranks). Every rank must call it: it all-gathers each unit."""
    weights = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() != 0:
        return None
    with torch.device("meta"):  # no memory: load_state_dict(assign=True) takes the gathered tensors as they are
        copy = Transformer(model.cfg)
    copy.load_state_dict(weights, assign=True)
    if model.cfg.tie_embeddings:
        copy.lm_head.weight = copy.embed_tokens.weight
    return copy


def save_optimizer_shards(root: RootUnit, optimizer, folder: str):
    """Every rank writes its shard of the AdamW state into folder (torch.distributed.checkpoint)."""
    dcp.save({"optimizer": get_optimizer_state_dict(root, optimizer)}, checkpoint_id=folder)


def load_optimizer_shards(root: RootUnit, optimizer, folder: str):
    """Every rank reads its shard of the AdamW state. Call it before any gradient exists: the template that
    get_optimizer_state_dict makes for the loaded values is the state of one AdamW step with lr 0 on zero
    gradients, which it only takes on an optimizer without state and without gradients."""
    state = {"optimizer": get_optimizer_state_dict(root, optimizer)}
    dcp.load(state, checkpoint_id=folder)
    set_optimizer_state_dict(root, optimizer, state["optimizer"])


def check_fsdp(args, state: dict | None, world: int):
    """--fsdp needs ranks; a run resumes the way it was saved: with or without FSDP, on as many ranks under FSDP."""
    if args.fsdp and world < 2:
        raise SystemExit("--fsdp shards the model over ranks: launch with torchrun --nproc_per_node N (N >= 2), or "
                         "train one process without --fsdp")
    if state is None:
        return
    saved_world = state["optimizer"].get("fsdp_world")  # only FSDP checkpoints have it
    if (saved_world is not None) != args.fsdp:
        how = "with --fsdp" if saved_world else "without --fsdp"
        raise SystemExit(f"{args.out_dir}/last was saved by a run {how} (its AdamW state is "
                         f"{'sharded over ranks' if saved_world else 'one file'}): resume it {how}")
    if saved_world is not None and saved_world != world:
        raise SystemExit(f"{args.out_dir}/last holds AdamW state sharded over {saved_world} ranks: resume with "
                         f"torchrun --nproc_per_node {saved_world} (this launch has {world})")


# --------------------------------------------------------------------------- the trainer

class Trainer:
    """One training run: setup (checks, data, model, optimizer, resume) in __init__, the loop in train()."""

    def __init__(self, args, resume_from: str | None, state: dict | None):
        self.args = args
        self.rank, self.world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        self.master = self.rank == 0
        B, G = args.prompts_per_step, args.samples_per_prompt
        if B * G % self.world:
            raise SystemExit(f"the {B} × {G} = {B * G} rows of a step must split evenly over the {self.world} ranks "
                             "(--prompts-per-step × --samples-per-prompt divisible by the number of ranks)")
        prepare_out_dir(args, remove=self.master)
        self.train_set, self.val_set = self.load_data()  # before the model: data problems fail fast

        self.device = init_distributed(self.world)
        threads = pick_threads(self.device, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        n = B * G // self.world
        self.rows = range(self.rank * n, (self.rank + 1) * n)  # this rank's rows: row r = problem r // G, sample r % G

        self.base_folder = resolve_model(args.model)
        self.tok = load_tokenizer(self.base_folder)
        encode = lambda p: self.tok.encode_prompt(build_prompt(p.question, self.tok, args.prompt_format))
        self.train_prompts, self.val_prompts = [encode(p) for p in self.train_set], [encode(p) for p in self.val_set]
        # fp32 master weights; under FSDP loaded on the CPU, and fully_shard moves each rank's shard to its device
        self.model = load_model(resume_from or self.base_folder, device="cpu" if args.fsdp else self.device,
                                dtype=torch.float32)
        self.model.gradient_checkpointing = args.activation_checkpointing
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if "cuda" in self.device else nullcontext()
        self.root = shard(self.model, self.device) if args.fsdp else None
        if args.compile:
            self.model.compile_decode_step()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        if state and args.fsdp and os.path.isdir(os.path.join(resume_from, "optimizer")):  # absent: no state yet
            load_optimizer_shards(self.root, self.optimizer, os.path.join(resume_from, "optimizer"))
        elif state and not args.fsdp:
            self.optimizer.load_state_dict(state["optimizer"])
        for p in self.model.parameters():  # a step without signal is an AdamW step on a zero gradient, resumed or not
            p.grad = torch.zeros_like(p)
        # progress: everything about the run so far that is not weights; saved in last/train_state.pt
        self.step, self.progress = 0, {"base_val": None, "base_extraction": None, "best_val": None,
                                       "best_step": None, "collapse": None}
        if state:
            self.step, self.progress = state["step"], state["progress"]
        # gradient_as_bucket_view: the gradients live in DDP's buckets instead of beside a flat copy (4 bytes a
        # parameter less: 12 GiB for a 3B model, see plan.py)
        self.ddp_model = DDP(self.model, device_ids=[self.device] if "cuda" in self.device else None,
                             gradient_as_bucket_view=True) if self.world > 1 and not args.fsdp else self.model
        self.print0(f"mode={args.mode} tau={args.tau} sigma={args.sigma} model={args.model} dataset={args.dataset} "
                    f"({len(self.train_set)} train / {len(self.val_set)} val) B={B} G={G} steps={args.steps} "
                    f"world={self.world}{' (FSDP)' if args.fsdp else ''} device={self.device} {threads}")
        if state:
            self.print0(f"resumed from {resume_from} at step {self.step} (base model validation "
                        f"{self.progress['base_val']:.3f}, best so far {self.progress['best_val']:.3f})")
        self.print0(REWARD_HELP)
        if self.master:
            if state:  # the logs read as one run: drop what was logged after the checkpoint
                for name in ("metrics.jsonl", "samples.jsonl"):
                    truncate_log(os.path.join(args.out_dir, name), self.step)
            self.metrics_file = open(os.path.join(args.out_dir, "metrics.jsonl"), "a")
            self.samples_file = open(os.path.join(args.out_dir, "samples.jsonl"), "a")
        self.last_save, self.bad_steps = time.time(), 0

    def print0(self, *a, **k):
        if self.master:
            tqdm.write(" ".join(map(str, a)), **k)

    def load_data(self):
        args = self.args
        try:
            train_set = load_dataset(args.dataset, "train", data_path=args.data_path)
            val_set = load_dataset(args.dataset, "validation", data_path=args.data_path, limit=args.val_size)
        except (ValueError, FileNotFoundError, ImportError) as e:
            raise SystemExit(f"data: {e}") from None
        if len(train_set) < args.prompts_per_step:
            raise SystemExit(f"data: the training set has {len(train_set)} problems, fewer than --prompts-per-step "
                             f"{args.prompts_per_step}")
        if not val_set:
            raise SystemExit("data: the validation set is empty")
        return train_set, val_set

    # --- the loop: prompts -> rollouts -> rewards -> advantages -> update -> log
    def train(self):
        args, B, G = self.args, self.args.prompts_per_step, self.args.samples_per_prompt
        stop = StopSignal()
        try:
            if self.progress["base_val"] is None:
                self.validate_base()
            bar = tqdm(total=args.steps, initial=self.step, disable=not self.master, dynamic_ncols=True)
            stopping = self.sync_flags(stop)[0]
            while self.step < args.steps and not stopping:
                self.step += 1
                t0 = time.time()
                problems = step_problems(self.step, len(self.train_set), B, args.seed)
                roll = self.rollouts(problems)                                      # §4: no gradient
                my_problems = [self.train_set[problems[r // G]] for r in self.rows]
                my_rewards = torch.tensor([reward(text, p.answer, p.numeral_answer)
                                           for p, text in zip(my_problems, roll.answer_text)], device=self.device)
                rewards = gather(my_rewards, self.world).view(B, G)                 # Eq. 11, every rank's rows
                advantages = rloo_advantages(rewards).flatten()[self.rows.start:self.rows.stop]  # Eq. 12
                t1 = time.time()
                update = self.update(roll, advantages)                              # Eq. 13-14
                row = self.metrics(rewards, roll, update, t0, t1)
                if self.step % args.eval_every == 0 or self.step == args.steps:
                    row.update(self.evaluate())
                stopping, save_due = self.sync_flags(stop)
                save = "val_accuracy" in row or save_due or stopping or \
                    (args.save_every and self.step % args.save_every == 0)
                if save:
                    row["saved"] = [*row.get("saved", []), "last"]
                self.log(row, problems, roll, my_rewards, bar)
                if save:  # after the log: a crash between the two replays this step, rather than losing its line
                    self.save_last()
            bar.close()
            if stopping and self.step < args.steps:
                self.stop_now(stop.signum)
            self.finish()
        finally:
            stop.restore()
            if self.world > 1 and dist.is_initialized():
                dist.destroy_process_group()

    def rollouts(self, problems):
        """This rank's rows of the step, each with its own seed (see row_seed). The rows come in runs of k of the
        same problem (k divides both the rank's row count and G, so no run crosses a group): each run's prompt
        is prefilled once and copied to its k rows."""
        args, G = self.args, self.args.samples_per_prompt
        k = math.gcd(len(self.rows), G)
        self.model.eval()
        with self.autocast, self.whole_model():
            return self.run(generate, self.tok, [self.train_prompts[problems[r // G]] for r in self.rows[::k]],
                            args.mode, samples_per_prompt=k, tau=args.tau, sigma=args.sigma,
                            max_cot_tokens=args.max_cot_tokens, max_answer_tokens=args.max_answer_tokens,
                            answer_tau=args.answer_tau,
                            seed=[row_seed(args.seed, self.step, problems[r // G], r % G) for r in self.rows])

    def run(self, fn, *args, **kwargs):
        """fn(model, *args, **kwargs): under FSDP inside the root unit's forward (RootUnit says why); the update's
        log_prob goes through DDP, which averages the ranks' gradients; anything else gets the plain model."""
        if self.root is not None:
            return self.root(fn, *args, **kwargs)
        return fn(self.ddp_model if fn is log_prob else self.model, *args, **kwargs)

    def whole_model(self):
        """Around generation: under FSDP the model is gathered once for all decoding steps (see gathered)."""
        return gathered(self.root) if self.root is not None else nullcontext()

    def update(self, roll, advantages) -> dict:
        """REINFORCE on this rank's rows: only rows with a nonzero advantage carry gradient (Eq. 14). The losses of
        the micro-batches add up to the step's loss; DDP or FSDP averages the ranks' gradients."""
        args, n = self.args, len(self.rows)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=False)
        active = advantages.nonzero()[:, 0].tolist()
        chunks = [active[i:i + args.micro_batch] for i in range(0, len(active), args.micro_batch)]
        n_chunks = torch.tensor(len(chunks), device=self.device)
        if self.world > 1:  # every rank must run the same passes, or DDP / FSDP wait in a collective forever
            dist.all_reduce(n_chunks, op=dist.ReduceOp.MAX)
        loss = 0.0
        for i in range(int(n_chunks)):
            rows, weight = (chunks[i], 1.0) if i < len(chunks) else ([0], 0.0)  # a zero-weight pass if idle
            # DDP reduces the gradients once, after the last micro-batch. FSDP reduce-scatters after each: holding
            # the whole model's unsharded gradients until the last one is what it is there to avoid.
            sync = self.ddp_model.no_sync() if isinstance(self.ddp_model, DDP) and i < int(n_chunks) - 1 \
                else nullcontext()
            with sync, self.autocast:
                chunk_loss = rloo_loss(self.run(log_prob, roll.select(rows)), weight * advantages[rows], total=n)
            chunk_loss.backward()
            loss += chunk_loss.item()
        # under FSDP the gradients are sharded DTensors: the norms below are the whole model's, on every rank
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), args.grad_clip).item()
        out = {"loss": loss, "grad_norm": grad_norm, "grad_norm_clipped": math.nan,
               "loss_no_const": loss_without_constant(loss, advantages, roll.cot_lens, self.model.cfg.dim,
                                                      roll.sigma_abs, n)}
        if math.isfinite(grad_norm):
            out["grad_norm_clipped"] = torch.nn.utils.get_total_norm(
                [p.grad for p in self.model.parameters()]).item()
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(self.step - 1, args)
            self.optimizer.step()
            self.bad_steps = 0
        else:  # a non-finite gradient would poison the weights: skip the step, and stop if it keeps happening
            self.bad_steps += 1
            self.print0(f"step {self.step}: non-finite gradient norm ({grad_norm}), update skipped "
                        f"({self.bad_steps} in a row). Possible causes: --lr {args.lr} too high, --sigma {args.sigma} "
                        f"too small (σ divides in Eq. 10), --tau {args.tau} too small (logits / τ overflow)")
            if self.bad_steps >= args.max_bad_steps:
                self.save_last()
                raise SystemExit(f"{self.bad_steps} non-finite steps in a row (up to step {self.step}): lower --lr, "
                                 f"or check --sigma / --tau and the data. last/ holds step {self.step} (the skipped "
                                 f"steps changed no weights).")
        return out

    def metrics(self, rewards, roll, update, t0, t1) -> dict:
        """The step's numbers: reward statistics over all B·G rows, the rest averaged over the ranks."""
        local = torch.tensor([roll.cot_lens.float().mean(), roll.answer_lens.float().mean(), roll.cot_entropy.mean(),
                              update["loss"], update["loss_no_const"],
                              (roll.cot_lens + roll.answer_lens).sum() / (t1 - t0)],
                             device=self.device, dtype=torch.float64)
        if self.world > 1:
            dist.all_reduce(local)
            local /= self.world
        cot_len, answer_len, entropy, loss, loss_no_const, tokens_per_s = local.tolist()
        return {"step": self.step, "reward": rewards.mean().item(), "reward_std": rewards.std().item(),
                "accuracy": (rewards == 100).float().mean().item(),
                "extraction_rate": (rewards >= 10).float().mean().item(),
                "no_signal_groups": (rewards.std(1) == 0).float().mean().item(),
                "cot_len": cot_len, "answer_len": answer_len, "cot_entropy": entropy,
                "loss": loss, "loss_no_const": loss_no_const, "grad_norm": update["grad_norm"],
                "grad_norm_clipped": update["grad_norm_clipped"], "sigma_abs": roll.sigma_abs,
                "lr": lr_at(self.step - 1, self.args), "tokens_per_s": tokens_per_s * self.world,
                "rollout_s": t1 - t0, "update_s": time.time() - t1}

    # --- validation and model selection (§5)
    @torch.no_grad()
    def validate(self, label: str) -> tuple[float, float]:
        """Greedy validation: hard with greedy CoT, soft/fuzzy with σ = 0, greedy answer -> (accuracy, fraction of
        answers with a boxed answer), over all ranks."""
        args = self.args
        self.model.eval()
        mine = list(range(self.rank, len(self.val_prompts), self.world))
        batch = VAL_BATCH["cuda" if "cuda" in self.device else "cpu"]
        counts = torch.zeros(2, dtype=torch.float64, device=self.device)  # correct, extracted
        with tqdm(total=len(mine), desc=label, unit="problem", disable=not self.master, leave=False,
                  dynamic_ncols=True) as bar, self.whole_model():
            for i in range(0, len(mine), batch):
                idx = mine[i:i + batch]
                with self.autocast:
                    r = self.run(generate, self.tok, [self.val_prompts[j] for j in idx], args.mode,
                                 tau=0.0 if args.mode == "hard" else args.tau, sigma=0.0,
                                 max_cot_tokens=args.max_cot_tokens, max_answer_tokens=args.max_answer_tokens,
                                 answer_tau=0.0)
                scores = [reward(text, self.val_set[j].answer, self.val_set[j].numeral_answer)
                          for text, j in zip(r.answer_text, idx)]
                counts += torch.tensor([sum(s == 100 for s in scores), sum(s >= 10 for s in scores)],
                                       dtype=torch.float64, device=self.device)
                bar.update(len(idx))
        if self.world > 1:
            dist.all_reduce(counts)
        accuracy, extraction = (counts / len(self.val_prompts)).tolist()
        return accuracy, extraction

    def validate_base(self):
        """Step 0: the base model's score is where model selection starts (best/ must beat it)."""
        accuracy, extraction = self.validate("step 0 validation (base model)")
        self.progress.update(base_val=accuracy, base_extraction=extraction, best_val=accuracy)
        self.print0(f"step 0: greedy validation accuracy {accuracy:.3f}, boxed answers {extraction:.2f} "
                    f"(base model: best/ will only hold a model that beats this)")
        if self.master:
            self.metrics_file.write(json_line({"step": 0, "val_accuracy": accuracy, "val_extraction_rate": extraction}))
            self.metrics_file.flush()

    def evaluate(self) -> dict:
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

    # --- checkpoints
    def save(self, name: str):
        """best/: the Hugging Face folder only. last/: the same plus train_state.pt (optimizer, step, arguments,
        progress: plain tensors, numbers, strings, lists and dicts, so it loads with weights_only=True).
        Under FSDP the weights are gathered to rank 0 and written the same way; last/'s AdamW state is written
        by every rank, sharded, into last/optimizer/ (none before the first step makes one), and train_state.pt
        records the number of ranks instead."""
        path, state = os.path.join(self.args.out_dir, name), None
        if name == "last":
            state = {"step": self.step, "args": vars(self.args), "progress": self.progress,
                     "optimizer": self.optimizer.state_dict() if self.root is None else {"fsdp_world": self.world}}
        if self.root is None:  # one process or DDP: rank 0 holds the whole model and optimizer
            if self.master:
                save_checkpoint(path, self.model, self.base_folder, state)
        else:  # FSDP: every rank takes part
            model = full_copy(self.model)
            if self.master:
                shutil.rmtree(path + ".tmp", ignore_errors=True)
            dist.barrier()  # the temporary folder is empty before any rank writes into it
            if state and self.optimizer.state:
                save_optimizer_shards(self.root, self.optimizer, os.path.join(path + ".tmp", "optimizer"))
            if self.master:
                save_checkpoint(path, model, self.base_folder, state, clean=False)
        if self.world > 1:
            dist.barrier()

    def save_last(self):
        self.save("last")
        self.last_save = time.time()

    def sync_flags(self, stop: StopSignal) -> tuple[int, bool]:
        """(signal to stop on, or 0; whether --save-minutes have passed), the same on every rank."""
        due = self.args.save_minutes > 0 and time.time() - self.last_save >= 60 * self.args.save_minutes
        flags = torch.tensor([stop.signum, int(due)], device=self.device)
        if self.world > 1:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        stop.signum = int(flags[0])
        return int(flags[0]), bool(flags[1])

    def stop_now(self, signum: int):
        if not os.path.exists(os.path.join(self.args.out_dir, "last", "train_state.pt")):
            self.save_last()  # stopped before the first step: last/ keeps the step-0 validation
        launcher = f"torchrun --nproc_per_node {self.world}" if self.world > 1 else "python"
        self.print0(f"stopped by {signal.Signals(signum).name} after step {self.step}: last/ saved. Continue with:\n"
                    f"  {launcher} train.py --out-dir {shlex.quote(self.args.out_dir)} --resume")
        raise SystemExit(128 + signum)

    # --- logging
    def log(self, row: dict, problems, roll, my_rewards, bar):
        if not self.master:
            return
        self.metrics_file.write(json_line(row))
        self.metrics_file.flush()
        G = self.args.samples_per_prompt
        first_group = [i for i, r in enumerate(self.rows) if r < G]  # rank 0's rows of the step's first problem
        best = max(first_group, key=lambda i: my_rewards[i])
        worst = min(first_group, key=lambda i: my_rewards[i])
        problem = self.train_set[problems[0]]
        for i in ([best, worst] if my_rewards[best] != my_rewards[worst] else [best]):  # no spread: one line
            self.samples_file.write(json_line({"step": self.step, "reward": my_rewards[i].item(),
                                               "gold": problem.answer, "question": problem.question,
                                               "cot": roll.cot_text[i], "answer": roll.answer_text[i]}))
        self.samples_file.flush()
        best_val = self.progress["best_val"]
        bar.update(1)
        bar.set_postfix(reward=f"{row['reward']:.1f}", acc=f"{row['accuracy']:.2f}",
                        loss_no_const=f"{row['loss_no_const']:.3g}", best_val=f"{best_val:.2f}",
                        cot=f"{row['cot_len']:.0f}")
        if "val_accuracy" in row or self.step == 1:
            tqdm.write(f"step {self.step}: reward {row['reward']:.1f} acc {row['accuracy']:.2f} "
                       f"no-signal groups {row['no_signal_groups']:.2f} cot {row['cot_len']:.0f} tok "
                       f"entropy {row['cot_entropy']:.2f} σ {row['sigma_abs']:.4f} loss_no_const "
                       f"{row['loss_no_const']:.3g} (loss {row['loss']:.4g}) grad_norm {row['grad_norm']:.3g} "
                       f"(clipped {row['grad_norm_clipped']:.3g}) | {row['rollout_s']:.1f}s rollout "
                       f"{row['update_s']:.1f}s update" + (f" | greedy val {row['val_accuracy']:.3f}"
                                                            if "val_accuracy" in row else ""))
            tqdm.write(f"  sample (reward {my_rewards[0].item():.0f}, gold {problem.answer}): "
                       f"{roll.cot_text[0][-200:]!r} -> {roll.answer_text[0]!r}")

    def finish(self):
        """The final line (and the last metrics row) say what best/ holds, and whether training collapsed."""
        p, out = self.progress, self.args.out_dir
        if p["best_step"] is None:
            summary = (f"done: no step beat the base model (validation {p['base_val']:.3f}); best/ not written; the "
                       f"base model {self.args.model} is still the best. last/ holds step {self.step}")
        else:
            summary = (f"done: best greedy validation accuracy {p['best_val']:.3f} at step {p['best_step']} "
                       f"(base model {p['base_val']:.3f}), in {out}/best; last/ holds step {self.step}")
        if p["collapse"]:
            summary += f". WARNING: {p['collapse']}"
        self.print0(summary)
        if self.master:
            self.metrics_file.write(json_line({"step": self.step, "summary": summary, "best_step": p["best_step"],
                                               "best_val_accuracy": p["best_val"],
                                               "base_val_accuracy": p["base_val"], "collapse": p["collapse"]}))
            self.metrics_file.close()
            self.samples_file.close()


def main(argv=None):
    first = build_parser().parse_args(argv)  # --out-dir and --resume tell where the stored arguments are
    resume_from, state = load_resume_state(first.out_dir) if first.resume else (None, None)
    args = get_args(argv, stored=state["args"] if state else None)
    check_fsdp(args, state, int(os.environ.get("WORLD_SIZE", "1")))
    if state and state["step"] >= args.steps:
        raise SystemExit(f"the run in {args.out_dir} is already at step {state['step']} of --steps {args.steps}; "
                         "pass a larger --steps to train further")
    Trainer(args, resume_from, state).train()


if __name__ == "__main__":
    main(sys.argv[1:])
