"""Replicate the paper's tables and figures: train every (mode, seed), evaluate, write a report (docs/paper.md §7-§8).

    python replicate.py --preset cpu --jobs 2                           # offline default model, lab task, 2-core CPU
    python replicate.py --preset paper --nproc-per-node 8               # GSM8K, Llama 3.2 3B, one 8-GPU node
    python replicate.py --preset cpu --modes fuzzy --seeds 0 --train-args "--steps 10" --ood-limit 20

ROOT is --root (default out-replicate-<preset>, git-ignored). For each mode and seed: train.py into
ROOT/runs/<mode>-s<seed>. Then evaluate.py (the six settings of §7, pass@1 and pass@k) on the base model once and
on each run's best/ checkpoint; a run without best/ (no step beat the base model's step-0 validation, §5) selected
the base model, so its numbers are the base model's, and the report says so. Then ood.py (Table 2) on the same
models; skipped with a note when the OOD sets cannot be read. Then ROOT/report.md and ROOT/figures/*.png. Every
command is printed before it runs, its output goes to ROOT/logs/, its exit status and time to ROOT/commands.jsonl.
A run made with other flags than this command's is refused rather than reported.

Restarting the same command skips finished work: a finished run (metrics.jsonl ends with train.py's summary line,
or last/ is at the final step) is not trained again, an unfinished one continues with --resume, and an evaluation
whose JSON already holds every setting with the same configuration is not run again (evaluate.py and ood.py
themselves also skip the settings and sets they hold). Ctrl-C reaches the running script too: train.py saves last/,
evaluate.py keeps its finished settings, and the same command continues from there. On Linux, killing replicate.py
(SIGTERM, even SIGKILL) sends the running script SIGTERM, to the same effect. All flags, the pass-through ones
included, are checked by the scripts' own parsers before anything runs.
"""

import argparse
import concurrent.futures
import contextlib
import ctypes
import io
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time

import torch

import config
import evaluate
import ood
import plot
from checkpoint import RUN_FILES, atomic_write
from config import RESUME_SAFE

HERE = os.path.dirname(os.path.abspath(__file__))
MODES = ("hard", "soft", "fuzzy")
# Hyperparameters of the two presets; --train-args / --eval-args / --ood-args / --ood-limit win over them.
PRESETS = {
    # A 2-core CPU: the offline default model (SmolLM2-135M) on the course's lab task (data.py's `lab` defaults:
    # 2 prompts x 16 samples, CoT 8, lr 3e-5, sigma 1.0, 25 steps, validation every 5); 50 test problems,
    # 4 samples each (sampled soft/fuzzy at evaluate.py's sigma, the paper's 0.33); 30 questions per OOD set.
    "cpu": {"train": "--model smollm2-135m-instruct --dataset lab",
            "eval": "--limit 50 --n-samples 4 --k 1,4",
            "ood_limit": 30, "nproc_per_node": 1},
    # The paper's GSM8K setting (§5): Llama 3.2 3B, 2 prompts x 32 samples, CoT 128, 4,000 steps, lr 6e-6, raw
    # prompt; evaluation (§7) on all 1,319 GSM8K test problems, CoT 512, 32 samples; OOD on the full sets.
    "paper": {"train": "--model meta-llama/Llama-3.2-3B-Instruct --dataset gsm8k --steps 4000 --prompts-per-step 2 "
                       "--samples-per-prompt 32 --max-cot-tokens 128 --lr 6e-6 --warmup-steps 20 --eval-every 100 "
                       "--val-size 200 --sigma 0.33 --prompt-format raw --activation-checkpointing",
              "eval": "--n-samples 32 --max-cot-tokens 512 --k 1,32",
              "ood_limit": None, "nproc_per_node": 8},
}
# Flags replicate.py sets itself in each script's command, and why they may not be passed through.
OWNED = {"train.py": {"--mode": "use --modes", "--seed": "use --seeds", "--out-dir": "use --root",
                      "--resume": "added when a run is unfinished",
                      "--overwrite": "added when a run has no checkpoint"},
         "evaluate.py": {"--model": "the base model is train.py's --model", "--output": "use --root",
                         "--overwrite": "it would redo finished evaluations at every restart"},
         "ood.py": {"--model": "the base model is train.py's --model", "--output": "use --root",
                    "--overwrite": "it would redo finished evaluations at every restart"}}
PR_SET_PDEATHSIG = 1  # Linux's <sys/prctl.h>: the signal a process gets when its parent dies


# --------------------------------------------------------------------------- arguments and the plan

def get_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=PRESETS, default="cpu")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated training modes")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (the paper: 3 per setting)")
    ap.add_argument("--root", default=None, help="where runs, evaluations and the report go (default "
                    "out-replicate-<preset>, git-ignored: checkpoints are GBs; copy report.md and figures/ to keep)")
    ap.add_argument("--train-args", default="", help="more train.py flags, e.g. \"--steps 10 --lr 1e-5\"")
    ap.add_argument("--eval-args", default="", help="more evaluate.py flags, e.g. \"--limit 20\"")
    ap.add_argument("--ood-args", default="", help="more ood.py flags, e.g. \"--sets arc_easy,mmlu\"")
    ap.add_argument("--ood-limit", type=int, default=None, help="questions per OOD set (default: the preset's, cpu "
                    "60, paper all; 0: all)")
    ap.add_argument("--no-ood", action="store_true", help="skip the out-of-domain evaluation")
    ap.add_argument("--train-only", action="store_true",
                    help="train every run, then stop; the same command without it evaluates them and writes the report")
    ap.add_argument("--jobs", type=int, default=1, help="commands run at once (default 1). On a CPU, 2 runs on 1 "
                    "thread each finish sooner than 2 runs one after the other on 2 threads; each command then gets "
                    "OMP_NUM_THREADS = cores / jobs unless OMP_NUM_THREADS is set")
    ap.add_argument("--nproc-per-node", type=int, default=None, help="GPUs per training run (torchrun when > 1; "
                    "default: the preset's, cpu 1, paper 8)")
    args = ap.parse_args(argv)
    preset = PRESETS[args.preset]
    args.root = args.root or f"out-replicate-{args.preset}"
    args.ood_limit = preset["ood_limit"] if args.ood_limit is None else args.ood_limit or None
    args.nproc_per_node = preset["nproc_per_node"] if args.nproc_per_node is None else args.nproc_per_node

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    errors = [f"unknown mode {m!r} in --modes (choose from {', '.join(MODES)})" for m in modes if m not in MODES]
    if not modes or len(set(modes)) != len(modes):
        errors.append(f"--modes must name each mode once, got {args.modes!r}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        errors.append(f"--seeds must be distinct integers >= 0, comma-separated, got {args.seeds!r}")
    if args.ood_limit is not None and args.ood_limit < 0:
        errors.append(f"--ood-limit must be >= 0, got {args.ood_limit}")
    if args.nproc_per_node < 1:
        errors.append(f"--nproc-per-node must be >= 1, got {args.nproc_per_node}")
    if args.jobs < 1:
        errors.append(f"--jobs must be >= 1, got {args.jobs}")
    if errors:
        ap.error("; ".join(errors))
    args.modes, args.seeds = [m for m in MODES if m in modes], seeds  # the paper's order
    return args


def extra_flags(text: str, option: str, script: str) -> list[str]:
    """shlex-split pass-through flags, refusing those replicate.py sets itself (argparse also takes unique
    prefixes, so `--out` would mean --out-dir: prefixes are refused too)."""
    try:
        tokens = shlex.split(text)
    except ValueError as e:
        raise SystemExit(f"replicate.py: {option} {text!r}: {e}") from None
    for token in tokens:
        name = token.split("=")[0]
        for flag, instead in OWNED[script].items():
            if token.startswith("--") and len(name) > 2 and flag.startswith(name):
                raise SystemExit(f"replicate.py: {option} may not set {flag}: replicate.py sets it for every "
                                 f"{script} command ({instead})")
    return tokens


def checked(script: str, parse, argv: list[str]) -> argparse.Namespace:
    """The script's own parse-and-check of `argv`, so that a bad flag fails now, before hours of training."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parse(argv)
    except SystemExit:
        reason = err.getvalue().split("error: ", 1)[-1].strip()
        raise SystemExit(f"replicate.py: {script} refuses these flags: {reason}\n  "
                         f"{shlex.join([script, *argv])}") from None


def make_plan(args) -> dict:
    """Every command's flags, checked by train.py, evaluate.py and ood.py before anything runs."""
    preset, root = PRESETS[args.preset], args.root
    train_extra = extra_flags(args.train_args, "--train-args", "train.py")
    eval_extra = extra_flags(args.eval_args, "--eval-args", "evaluate.py")
    ood_extra = extra_flags(args.ood_args, "--ood-args", "ood.py")
    runs = []
    for mode in args.modes:
        for seed in args.seeds:
            name = f"{mode}-s{seed}"
            argv = [*shlex.split(preset["train"]), *train_extra, "--mode", mode, "--seed", str(seed),
                    "--out-dir", os.path.join(root, "runs", name)]
            runs.append({"name": name, "mode": mode, "seed": seed, "out_dir": argv[-1], "train_argv": argv,
                         "train": checked("train.py", config.get_args, argv)})
    first = runs[0]["train"]  # the model, data and prompt are the same for every mode and seed
    data = ["--dataset", first.dataset, "--prompt-format", first.prompt_format]
    data += ["--data-path", first.data_path] if first.data_path else []

    def eval_argv(model, name):
        return ["--model", model, *data, *shlex.split(preset["eval"]), *eval_extra,
                "--output", os.path.join(root, "eval", name + ".json")]

    def ood_argv(model, name):
        limit = ["--limit", str(args.ood_limit)] if args.ood_limit else []
        return ["--model", model, *limit, *ood_extra, "--output", os.path.join(root, "ood", name + ".json")]

    checked("evaluate.py", evaluate.get_args, eval_argv(first.model, "base"))  # the runs' commands differ only in --model
    ood_note = "not run (--no-ood)" if args.no_ood else \
        ood_data_missing(checked("ood.py", ood.get_args, ood_argv(first.model, "base")))
    return {"base_model": first.model, "runs": runs, "eval_argv": eval_argv, "ood_argv": ood_argv,
            "ood_note": ood_note}


def ood_data_missing(ood_args) -> str | None:
    """Why the OOD sets cannot be read (ood.py's own message), or None when they can."""
    for name in ood_args.sets:
        try:
            ood.load_set(name, ood_args.data_dir, limit=1)
        except FileNotFoundError as e:
            return f"not run: {e}"
    return None


# --------------------------------------------------------------------------- running commands

def die_with_parent():
    """A Popen preexec_fn that has the child sent SIGTERM when replicate.py dies, even by SIGKILL, which no handler
    of ours sees: train.py then saves last/ and stops, evaluate.py keeps its finished settings, and no command runs
    on unrecorded. Linux only (prctl PR_SET_PDEATHSIG). Elsewhere None: there is no such call, and the child of a
    killed replicate.py runs to its end; stop it by hand (its command was printed, its log is in ROOT/logs).
    Linux sends the signal when the *thread* that started the child ends; run_command waits for its child in that
    same thread, so that happens only when replicate.py dies."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: between fork and exec the child only calls it
    parent = os.getpid()

    def preexec():
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before prctl: no signal will come
            os._exit(1)
    return preexec


def run_command(cmd: list[str], log_path: str, env: dict | None = None) -> int:
    """Run `cmd` with its output appended to `log_path`; its exit status. On Ctrl-C the child got the same
    signal (one process group): wait while it saves its work, then stop. If replicate.py is killed outright,
    the child gets SIGTERM (die_with_parent)."""
    with open(log_path, "a") as log:
        log.write(f"$ {shlex.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=HERE, env=env,
                                preexec_fn=die_with_parent())
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.wait()
            raise


def execute(cmd: list[str], root: str, log_name: str, env: dict | None = None):
    """Print the command, run it, record it in ROOT/commands.jsonl; a failure stops replicate.py, naming the log."""
    log_path = os.path.join(root, "logs", log_name + ".log")
    print(f"$ {shlex.join(cmd)}\n  (log: {log_path})", flush=True)
    t0 = time.time()
    try:
        rc = run_command(cmd, log_path, env)
    except KeyboardInterrupt:
        rc = 130
    with open(os.path.join(root, "commands.jsonl"), "a") as f:
        f.write(json.dumps({"command": shlex.join(cmd), "seconds": time.time() - t0, "exit": rc,
                            "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}) + "\n")
    if rc in (130, 143):
        raise SystemExit(f"interrupted ({log_path}); what finished is kept: run the same replicate.py command "
                         "again to continue")
    if rc != 0:
        with open(log_path, errors="replace") as f:
            tail = "".join(f.readlines()[-15:])
        raise SystemExit(f"replicate.py: this command failed (exit {rc}):\n  {shlex.join(cmd)}\n"
                         f"last lines of {log_path}:\n{tail}")


def run_all(commands: list[tuple[list[str], str]], root: str, jobs: int):
    """execute() each (command, log name), `jobs` at a time. After a failure or Ctrl-C nothing new starts; the
    commands already running finish (their work is kept), then replicate.py stops."""
    os.makedirs(os.path.join(root, "logs"), exist_ok=True)
    env = None
    if jobs > 1 and "OMP_NUM_THREADS" not in os.environ:  # share the cores instead of oversubscribing them
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // jobs))}
    stop = threading.Event()

    def job(cmd, log_name):
        if stop.is_set():
            return
        try:
            execute(cmd, root, log_name, env)
        except BaseException:
            stop.set()
            raise

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(job, cmd, log_name) for cmd, log_name in commands]
        try:
            concurrent.futures.wait(futures)
        except KeyboardInterrupt:  # the running commands got Ctrl-C too: they save their work and stop
            stop.set()
            raise SystemExit("interrupted; what finished is kept: run the same replicate.py command again to "
                             "continue") from None
    for f in futures:
        if f.exception() is not None:
            raise f.exception()


def script(name: str, nproc: int = 1) -> list[str]:
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                os.path.join(HERE, name)]
    return [sys.executable, os.path.join(HERE, name)]


# --------------------------------------------------------------------------- what is finished

def summary_line(out_dir: str) -> dict | None:
    """train.py's closing line of metrics.jsonl (best step, base and best validation, collapse), if any."""
    try:
        with open(os.path.join(out_dir, "metrics.jsonl")) as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
        row = json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):  # no file, or a last line cut short by a crash
        return None
    return row if "summary" in row else None


def train_status(out_dir: str, wanted) -> str:
    """'done', 'resume' (a checkpoint of an earlier step) or 'start' (nothing to continue from), for the run that
    train.py's parsed flags `wanted` describe. A run made with other flags is refused: its results would be
    reported as this command's."""
    steps, summary = wanted.steps, summary_line(out_dir)
    for name in ("last", "last.old"):  # last.old: a crash between train.py's two renames
        path = os.path.join(out_dir, name, "train_state.pt")
        if os.path.exists(path):
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception:  # corrupt: train.py --resume names it and falls back, or says why not
                return "resume"
            stored, free = state.get("args", {}), RESUME_SAFE | {"overwrite"}
            differ = [f"--{k.replace('_', '-')} {stored[k]} there, {v} now" for k, v in vars(wanted).items()
                      if k not in free and k in stored and stored[k] != v]
            if differ:
                raise SystemExit(f"replicate.py: {out_dir} holds a run made with other flags ({'; '.join(differ)}). "
                                 "Use another --root, or move that run away.")
            # done also when stopped between the last save and the summary line
            return "done" if state["step"] >= steps or (summary and summary["step"] >= steps) else "resume"
    return "done" if summary and summary["step"] >= steps else "start"  # done: last/ deleted to save space


def check_same_results(output: str, parsed, same: tuple):
    """Refuse an evaluation JSON made with flags that change its results (`same`, the script's SAME_RESULTS and
    what picks the questions): evaluate.py and ood.py would refuse it too, and they cannot be told to discard it
    (--overwrite at every restart would redo finished work)."""
    try:
        with open(output) as f:
            config = json.load(f)["config"]
    except (OSError, ValueError, KeyError):
        return
    keys = [k for k in same if k in vars(parsed)]
    differ = [f"--{k.replace('_', '-')} {config.get(k)} there, {getattr(parsed, k)} now" for k in keys
              if config.get(k) != getattr(parsed, k)]
    if differ:
        raise SystemExit(f"replicate.py: {output} holds an evaluation made with other flags ({'; '.join(differ)}). "
                         "Delete it (and its .md) to evaluate again with these, or use another --root.")


def same_config(output: str, parsed, key: str = "settings") -> bool:
    """Whether the JSON at `output` was made with exactly these flags (and holds every requested setting)."""
    try:
        with open(output) as f:
            config = json.load(f)["config"]
    except (OSError, ValueError, KeyError):
        return False
    wanted = {k: v for k, v in vars(parsed).items() if k not in ("overwrite", key)}
    return all(config.get(k) == v for k, v in wanted.items()) and set(getattr(parsed, key)) <= set(config[key])


def ood_complete(output: str, parsed) -> bool:
    try:
        with open(output) as f:
            complete = json.load(f).get("complete")
    except (OSError, ValueError):
        return False
    return bool(complete) and same_config(output, parsed, key="sets")


# --------------------------------------------------------------------------- the pipeline

def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = get_args(argv)
    plan = make_plan(args)
    root, t0 = args.root, time.time()
    for folder in ("runs", "eval", "ood", "logs", "figures"):
        os.makedirs(os.path.join(root, folder), exist_ok=True)

    commands = []
    for run in plan["runs"]:  # training (§4-§5)
        status = train_status(run["out_dir"], run["train"])
        if status == "done":
            print(f"{run['name']}: finished, skipped ({run['out_dir']})")
            continue
        flag = ["--resume"] if status == "resume" else []
        if status == "start" and any(os.path.exists(os.path.join(run["out_dir"], f)) for f in RUN_FILES):
            print(f"{run['name']}: {run['out_dir']} holds a run stopped before its first checkpoint: starting over")
            flag = ["--overwrite"]
        commands.append(([*script("train.py", args.nproc_per_node), *run["train_argv"], *flag], "train_" + run["name"]))
    run_all(commands, root, args.jobs)
    for run in plan["runs"]:
        if train_status(run["out_dir"], run["train"]) != "done":
            raise SystemExit(f"replicate.py: train.py exited 0 but {run['out_dir']} is not at step "
                             f"{run['train'].steps}; see {os.path.join(root, 'logs', 'train_' + run['name'] + '.log')}")
    if args.train_only:
        print(f"--train-only: {len(plan['runs'])} runs trained in {root}/runs; evaluate them with the same command "
              "without --train-only")
        return

    # Which model each run selected (§5): best/, or the base model when no step beat it.
    models = [("base", plan["base_model"])]
    for run in plan["runs"]:
        best = os.path.join(run["out_dir"], "best")
        run["selected"] = run["name"] if os.path.exists(os.path.join(best, "config.json")) else "base"
        if run["selected"] != "base":
            models.append((run["name"], best))

    commands = []
    for name, model in models:  # the six settings (§7)
        eval_argv = plan["eval_argv"](model, name)
        parsed = evaluate.get_args(eval_argv)
        if same_config(eval_argv[-1], parsed):
            print(f"evaluation of {name}: complete, skipped ({eval_argv[-1]})")
        else:  # evaluate.py adds the settings left to do, or recomputes pass@k for other --k
            check_same_results(eval_argv[-1], parsed, (*evaluate.SAME_RESULTS, "dataset", "split", "data_path",
                                                        "limit"))
            commands.append(([*script("evaluate.py"), *eval_argv], "eval_" + name))
    if plan["ood_note"] is None:  # out of domain (Table 2)
        for name, model in models:
            ood_argv = plan["ood_argv"](model, name)
            parsed = ood.get_args(ood_argv)
            if ood_complete(ood_argv[-1], parsed):
                print(f"OOD evaluation of {name}: complete, skipped ({ood_argv[-1]})")
            else:  # ood.py adds the sets left to do
                check_same_results(ood_argv[-1], parsed, ood.SAME_RESULTS)
                commands.append(([*script("ood.py"), *ood_argv], "ood_" + name))
    else:
        print(f"out-of-domain evaluation {plan['ood_note']}")
    run_all(commands, root, args.jobs)

    figures = draw_figures(args, plan)
    path = os.path.join(root, "report.md")
    atomic_write(path, report(args, plan, figures, time.time() - t0, argv))
    print(f"wrote {path}")


# --------------------------------------------------------------------------- the report

def mean_std(values: list[float], digits: int = 1) -> str:
    """'mean ± sample standard deviation' over seeds; one seed: the value alone."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def seeds(names: list[str]) -> str:
    """How many seeds a row averages, and how many of them selected the base model (no best/)."""
    base = names.count("base")
    return f"{len(names)} ({base} = base model)" if base else str(len(names))


def number(x) -> str:
    return "?" if x is None else f"{x:.3f}"


def read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def groups(args, plan) -> list[tuple[str, list[str]]]:
    """[(row label, the name of the selected model of each seed)]: the base model, then one row per mode."""
    return [("base model", ["base"])] + [
        (f"{mode} training", [r["selected"] for r in plan["runs"] if r["mode"] == mode]) for mode in args.modes]


def eval_rows(root: str, name: str) -> tuple[dict, int, int]:
    """({setting: table row}, the largest k, the number of problems) of one evaluation."""
    result = read_json(os.path.join(root, "eval", name + ".json"))
    return {row["setting"]: row for row in result["table"]}, max(result["config"]["k"]), len(result["problems"])


def count_range(counts) -> str:
    """How many problems (or questions) the cells of a table cover: '50', or '48–50' if the models' files differ."""
    return f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)}–{max(counts)}"


def table(head: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                     + ["| " + " | ".join(r) + " |" for r in rows])


def report(args, plan, figures: list[str], seconds: float, argv: list[str]) -> str:
    root = args.root
    evals = {name: eval_rows(root, name) for _, names in groups(args, plan) for name in names}
    k = max(kk for _, kk, _ in evals.values())
    problems = count_range([n for _, _, n in evals.values()])
    settings = [s for s in evaluate.SETTINGS if s in evals["base"][0]]

    def cell(names, setting, key):
        return mean_std([evals[n][0][setting][key] for n in names if setting in evals[n][0]
                         and key in evals[n][0][setting]])

    out = [f"# Replication report ({args.preset} preset)", "",
           "Command: `" + shlex.join(["python", "replicate.py", *argv]) + "`  ",
           f"Machine: {platform.platform()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
           + (", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
              if torch.cuda.is_available() else "no GPU") + "  ",
           f"Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; this invocation took {seconds:.0f} s; "
           f"the commands of all invocations, {command_seconds(root):.0f} s (each in commands.jsonl).", "",
           f"Models: base `{plan['base_model']}`; each run is evaluated at its best/ checkpoint, the best greedy "
           "validation (§5). A run without best/ never beat the base model's step-0 validation: its selected model "
           "is the base model, and its numbers below are the base model's. Cells are the mean ± the sample standard "
           "deviation over seeds (one seed: the value alone), in percent.", "", "## Runs", ""]
    rows = []
    for run in plan["runs"]:
        s = summary_line(run["out_dir"]) or {}  # none: stopped between its last save and the summary line
        best = (f"best/ (step {s.get('best_step', '?')}, validation {number(s.get('best_val_accuracy'))})"
                if run["selected"] != "base" else "base model (no step beat it)")
        rows.append([run["name"], str(s.get("step", "?")), number(s.get("base_val_accuracy")), best,
                     s.get("collapse") or ""])
    out += [table(["run", "steps", "base validation", "evaluated", "collapse warning"], rows), ""]

    out += [f"## Table 1 shape: hard inference (greedy pass@1 / sample pass@1 / pass@{k}), {problems} problems", ""]
    rows = [[label, cell(names, "hard-greedy", "pass@1"), cell(names, "hard-sample", "pass@1"),
             cell(names, "hard-sample", f"pass@{k}"), seeds(names) if i else "—"]
            for i, (label, names) in enumerate(groups(args, plan))]
    out += [table(["model", "greedy pass@1", "sample pass@1", f"pass@{k}", "seeds"], rows), ""]

    for key in ("pass@1", f"pass@{k}"):
        out += [f"## Six inference settings (§7), {key}: training mode × inference setting, {problems} problems", ""]
        rows = [[label, *(cell(names, s, key) for s in settings)] for label, names in groups(args, plan)]
        out += [table(["model", *settings], rows), ""]
    out.append("(greedy settings draw one rollout per problem: their pass@k is their pass@1)\n")

    out += ["## Table 2 shape: out of domain (NLL per token of the correct answer, nats; MC accuracy %)", ""]
    if plan["ood_note"]:
        out += [f"Out-of-domain evaluation {plan['ood_note']}", ""]
    else:
        ood_rows = {n: {r["set"]: r for r in read_json(os.path.join(root, "ood", n + ".json"))["table"]}
                    for _, names in groups(args, plan) for n in names}
        sets = list(ood_rows["base"])
        rows = [[label, *(mean_std([ood_rows[n][s][key] for n in names], digits)
                          for s in sets for key, digits in (("nll_per_token", 3), ("accuracy", 1)))]
                for label, names in groups(args, plan)]
        questions = {s: count_range([rows_of[s]["questions"] for rows_of in ood_rows.values()]) for s in sets}
        out += [table(["model", *(f"{s} {what} ({questions[s]} questions)" for s in sets for what in ("NLL", "acc"))],
                      rows), "",
                "(ood.py: lower NLL is better; MC accuracy ranks the choices by NLL per token, not the paper's "
                "generated answer.)", ""]

    out += ["## Figures", ""] + [f"![{os.path.basename(f)}]({os.path.relpath(f, root)})\n" if f.endswith(".png")
                                 else f"- {f}\n" for f in figures]
    return "\n".join(out) + "\n"


def command_seconds(root: str) -> float:
    with contextlib.suppress(OSError), open(os.path.join(root, "commands.jsonl")) as f:
        return sum(json.loads(line)["seconds"] for line in f if line.strip())
    return 0.0


def draw_figures(args, plan) -> list[str]:
    """Training curves per mode (seeds as a band), pass@k curves, entropy profiles base vs each mode (§8), with
    plot.py's functions. A figure that cannot be drawn becomes a line saying why."""
    root, out = args.root, []
    try:
        plt = plot.import_pyplot()
    except SystemExit as e:
        return [f"no figures: {e}"]
    evals = [(label + (f" ({names.count('base')} of {len(names)} = base model)" if i and "base" in names else ""),
              [os.path.join(root, "eval", n + ".json") for n in names])
             for i, (label, names) in enumerate(groups(args, plan))]
    by_mode = [(m, [os.path.join(r["out_dir"], "metrics.jsonl") for r in plan["runs"] if r["mode"] == m])
               for m in args.modes]
    figures = [("training_curves.png", lambda path: plot.plot_train(plt, by_mode, path)),
               ("passk.png", lambda path: plot.plot_passk(plt, evals, path)),
               ("entropy_hard-sample.png", lambda path: plot.plot_entropy(plt, evals, "hard-sample", 10, path))]
    for name, draw in figures:
        path = os.path.join(root, "figures", name)
        try:
            draw(path)
            out.append(path)
        except SystemExit as e:  # plot.py's clear refusals, e.g. too few rollouts for an entropy profile
            out.append(f"{name} not drawn: {e}")
        finally:
            plt.close("all")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
