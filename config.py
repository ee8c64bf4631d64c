"""train.py's command line: every hyperparameter with its default, the per-dataset defaults (data.py), what may
change on --resume, and the checks that refuse a bad flag before any work (exit 2, one line).

    python train.py --help
"""

import argparse
import math

from data import DATASET_DEFAULTS, FALLBACK_DEFAULTS
from rollout import DEFAULT_TAU

HELP = """Train a chain of thought with RL: hard, soft or fuzzy CoT, REINFORCE with an RLOO baseline (docs/paper.md
§2-§5). Defaults: config.DEFAULTS, then data.DATASET_DEFAULTS for the --dataset (the paper's for gsm8k).

    python train.py --dataset lab --mode fuzzy                 # the course's lab, minutes on a laptop
    torchrun --standalone --nproc_per_node 8 train.py --mode fuzzy --dataset gsm8k --model meta-llama/Llama-3.2-3B-Instruct
    python train.py --out-dir out --resume                     # continue a stopped run (docs/training.md)"""
# Hyperparameters: these, then data.DATASET_DEFAULTS for the dataset (steps, G, B, CoT budget, lr, σ, warm-up,
# validation), then the stored run on --resume, then the command line.
DEFAULTS = dict(mode="fuzzy", tau=None, answer_tau=1.0, model="smollm2-135m-instruct", dataset="arithmetic",
                data_path=None, prompt_format=None, max_answer_tokens=32, weight_decay=0.0, grad_clip=1.0,
                micro_batch=8, activation_checkpointing=False, compile=False, fsdp=False, save_every=0,
                save_minutes=10.0, out_dir="out", resume=False, overwrite=False, seed=0, max_bad_steps=5)
# Flags that may differ from the stored run on --resume: they change how long it runs, when it saves and how the
# update is chunked, not what it learns. --steps stretches the cosine schedule (lr_at) to the new end.
RESUME_SAFE = {"steps", "eval_every", "save_every", "save_minutes", "max_bad_steps", "micro_batch",
               "activation_checkpointing", "compile", "out_dir", "resume"}
MIN_SIGMA = 1e-6  # below this, x = μ + σ·ε rounds to μ in float32 (ulp ~6e-8 relative): Eq. 10's action is lost


def finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Every flag defaults to None here, so that the parsed namespace says exactly what the command line gave;
    the defaults themselves are DEFAULTS and data.DATASET_DEFAULTS (get_args)."""
    ap = argparse.ArgumentParser(prog="train.py", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    flag = lambda name, **kw: ap.add_argument(name, default=None, **kw)
    on = lambda name, help: ap.add_argument(name, action="store_const", const=True, default=None, help=help)
    flag("--mode", choices=list(DEFAULT_TAU), help="CoT kind (§2; gumbel, multiplex: §9; default fuzzy)")
    flag("--sigma", type=finite_float, help="noise multiplier: σ = sigma × RMS(E) (§2; default: the paper's 0.33, lab 1.0)")
    flag("--tau", type=finite_float, help="CoT temperature (default: rollout.DEFAULT_TAU: hard 1.0, soft 0.5, fuzzy 1e-4, gumbel and "
                                           "multiplex 1.0)")
    flag("--answer-tau", type=finite_float, help="answer temperature in training (§3; default 1.0)")
    flag("--model", help="a Hugging Face folder or Hub id (default: the offline smollm2-135m-instruct)")
    flag("--dataset", help="arithmetic (default), lab, gsm8k, math500, olympiadbench, ... (data.py)")
    flag("--data-path", help="local JSONL/parquet in GSM8K format")
    flag("--prompt-format", choices=["raw", "chat"], help="raw: the paper's prompt (§6); chat: chat template")
    flag("--steps", type=int)
    flag("--samples-per-prompt", type=int, help="G (paper: 32)")
    flag("--prompts-per-step", type=int, help="B over all ranks (paper: 2)")
    flag("--max-cot-tokens", type=int, help="CoT budget L (§3)")
    flag("--max-answer-tokens", type=int, help="default 32")
    flag("--lr", type=finite_float, help="peak learning rate (paper: 6e-6 Llama 3B, 3e-6 Llama 8B, 8e-6 Qwen 3B)")
    flag("--warmup-steps", type=int, help="linear warm-up steps before the cosine decay (§5)")
    flag("--weight-decay", type=finite_float, help="default 0")
    flag("--grad-clip", type=finite_float, help="max gradient norm (> 0; default 1.0)")
    flag("--micro-batch", type=int, help="rows per log_prob forward/backward (default 8)")
    on("--activation-checkpointing", "recompute each block's activations in the backward (less memory)")
    on("--compile", "torch.compile the rollouts' decode step (model.compile_decode_step; not with --fsdp)")
    on("--fsdp", "shard weights, gradients and AdamW state over the ranks (FSDP2; under torchrun, >= 2 ranks)")
    flag("--eval-every", type=int)
    flag("--val-size", type=int)
    flag("--save-every", type=int, help="also save last/ every N steps (default 0: off)")
    flag("--save-minutes", type=finite_float, help="also save last/ after this many minutes without a save "
                                                   "(default 10; 0: off)")
    flag("--out-dir", help="the run folder (default out)")
    on("--resume", "continue the run in OUT_DIR from OUT_DIR/last")
    on("--overwrite", "delete the run already in OUT_DIR and start over")
    flag("--seed", type=int, help="default 0")
    flag("--max-bad-steps", type=int, help="stop after this many non-finite steps in a row (default 5)")
    return ap


def parse_flags(argv=None) -> dict:
    """The flags the command line gives, and only those (parsed once, every default None)."""
    ap = build_parser()
    given = {k: v for k, v in vars(ap.parse_args(argv)).items() if v is not None}
    if given.get("resume") and given.get("overwrite"):
        ap.error("--resume continues the run in --out-dir and --overwrite deletes it: choose one")
    return given


def get_args(argv=None, stored: dict | None = None) -> argparse.Namespace:
    return complete_args(parse_flags(argv), stored)


def complete_args(given: dict, stored: dict | None = None) -> argparse.Namespace:
    """DEFAULTS < the dataset's defaults < `stored` (on --resume, the run's own arguments) < the flags given. On
    --resume a flag given explicitly must equal the stored value unless it is in RESUME_SAFE; the run folder is
    always the one on the command line, which is the one resumed from."""
    out_dir = given.get("out_dir", DEFAULTS["out_dir"])
    if stored is not None:
        conflicts = [f"--{k.replace('_', '-')} {v} (the run has {stored[k]})" for k, v in sorted(given.items())
                     if k not in RESUME_SAFE and k in stored and v != stored[k]]
        if conflicts:
            safe = " ".join(f"--{k.replace('_', '-')}" for k in sorted(RESUME_SAFE))
            build_parser().error(f"--resume continues the run in {out_dir} with its own settings, but these flags "
                                 "differ: " + "; ".join(conflicts) + ". Drop them (the stored values apply), or start "
                                 f"a new run in another --out-dir. Flags that may change on resume: {safe}")
    dataset = given.get("dataset") or (stored or {}).get("dataset") or DEFAULTS["dataset"]
    a = argparse.Namespace(**{**DEFAULTS, **DATASET_DEFAULTS.get(dataset, FALLBACK_DEFAULTS), **(stored or {}),
                              **given, "out_dir": out_dir, "resume": bool(given.get("resume")),
                              "overwrite": bool(given.get("overwrite"))})
    a.tau = DEFAULT_TAU[a.mode] if a.tau is None else a.tau
    check_args(build_parser(), a)
    return a


def check_args(ap, a):
    problems = []
    for name in ("steps", "samples_per_prompt", "prompts_per_step", "max_cot_tokens", "max_answer_tokens",
                 "micro_batch", "eval_every", "val_size", "max_bad_steps"):
        if getattr(a, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("warmup_steps", "save_every", "save_minutes", "weight_decay"):
        if getattr(a, name) < 0:
            problems.append(f"--{name.replace('_', '-')} must be >= 0")
    if a.samples_per_prompt < 2:
        problems.append("--samples-per-prompt must be >= 2: the RLOO baseline needs other samples")
    if a.mode != "hard" and a.sigma <= 0:
        problems.append(f"--sigma must be > 0 for {a.mode} training: σ = 0 is the greedy CoT, which has no "
                        "log-probability (Eq. 10; gumbel and multiplex: their noise is on for any σ > 0)")
    elif a.mode in ("soft", "fuzzy") and a.sigma < MIN_SIGMA:
        problems.append(f"--sigma must be >= {MIN_SIGMA:g} for soft/fuzzy training: a smaller noise is lost when "
                        "float32 rounds the noisy input (Eq. 10's action) and 1/σ² overflows in its gradient")
    if a.tau <= 0 or a.answer_tau <= 0:
        problems.append("--tau and --answer-tau must be > 0 in training (a greedy policy has no gradient)")
    if not 0 < a.lr < 1:
        problems.append("--lr must be in (0, 1)")
    if a.grad_clip <= 0:
        problems.append("--grad-clip must be > 0 (it is the largest gradient norm an update may have)")
    if a.compile and a.fsdp:
        problems.append("--compile is not supported with --fsdp (the compiled step would have to trace FSDP's hooks)")
    if problems:
        ap.error("; ".join(problems))
