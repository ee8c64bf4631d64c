"""The labs' expected results (course/README.md, "Labs"), measured with 3 seeds and written to course/expected/.

    python course/labs.py                      # everything: ~1.5 h on 2 CPU cores before lab 7's three
                                               # ~10-min runs; restart-safe
    python course/labs.py --labs 1,3,4         # the rollout-only labs: minutes

Every lab uses the offline default model on the `lab` task (data.py). The training runs are replicate.py's CPU
preset (3 modes x 3 seeds; run through it, so finished runs are skipped); labs 6 and 7 add course/grpo.py
and course/answer_only.py runs.
What each lab writes to course/expected/ (JSONL: one row per seed and setting; PNG: mean and min-max over seeds):
  lab 1  lab1_cot.jsonl              hard / soft / fuzzy CoTs on the test problems, greedy and sampled
  lab 2  lab2_settings.{jsonl,png}   the six inference settings of §7 on 50 test problems (base model)
  lab 3  lab3_sigma.{jsonl,png}      fuzzy rollouts at sigma 0.1 / 0.33 / 1 / 3: reward, accuracy, CoT entropy
  lab 4  lab4_groups.{jsonl,png}     the share of no-signal groups for G = 2 / 4 / 8 / 16
  lab 5  lab5_runs.{jsonl,md}, lab5_curves.png, lab5_entropy.png: the lab preset, 3 modes x 3 seeds
  lab 6  lab6_grpo.{jsonl,md,png}    RLOO vs GRPO-style advantages, fuzzy training
  lab 7  lab7_answer_only.{jsonl,md,png}  soft training with and without the CoT steps' gradient (Eq. 10)
Labs 1, 3 and 4 are rollouts of the base model (no training), cached in ROOT (default out-labs, git-ignored).
"""

import argparse
import json
import os
import shlex
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

import torch  # noqa: E402

import config  # noqa: E402
import plot  # noqa: E402
import replicate  # noqa: E402
from data import build_prompt, load_dataset, reward  # noqa: E402
from default_model import resolve_model  # noqa: E402
from model import load_model  # noqa: E402
from rollout import STEP_COT, generate  # noqa: E402
from tokenizer import load_tokenizer  # noqa: E402

MODEL, DATASET, SEEDS = "smollm2-135m-instruct", "lab", (0, 1, 2)
EXPECTED = os.path.join(HERE, "expected")
REPLICATE_ARGV = ["--preset", "cpu"]  # lab 5's runs (labs 6-7 compare with them): the README's replicate command
SIGMAS, GROUP_SIZES = (0.1, 0.33, 1.0, 3.0), (2, 4, 8, 16)
ROLLOUT_PROBLEMS, COT_TOKENS = 8, 8  # labs 3-4: 8 training problems per seed; the lab preset's CoT budget


# --------------------------------------------------------------------------- helpers

def write_jsonl(name: str, rows: list[dict]):
    path = os.path.join(EXPECTED, name)
    with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    os.replace(path + ".tmp", path)
    print(f"wrote {path}")


def cached(root: str, name: str, compute):
    """compute() once: its JSON result is kept in ROOT/name.json, so a rerun after Ctrl-C skips it."""
    path = os.path.join(root, name + ".json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    result = compute()
    with open(path + ".tmp", "w") as f:
        json.dump(result, f)
    os.replace(path + ".tmp", path)
    return result


def spread(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "min": min(values), "max": max(values)}


class Base:
    """The base model, its tokenizer and the lab prompts, loaded once."""

    def __init__(self):
        folder = resolve_model(MODEL)
        self.model, self.tok = load_model(folder).eval(), load_tokenizer(folder)

    def prompts(self, problems):
        return [self.tok.encode_prompt(build_prompt(p.question, self.tok, "chat")) for p in problems]

    def rollout(self, problems, mode, samples=1, **kwargs):
        """Rollouts and their rewards (Eq. 11), rows grouped by problem."""
        with torch.no_grad():
            r = generate(self.model, self.tok, self.prompts(problems), mode, samples_per_prompt=samples,
                         max_cot_tokens=COT_TOKENS, **kwargs)
        rewards = [reward(text, problems[i // samples].answer, problems[i // samples].numeral_answer)
                   for i, text in enumerate(r.answer_text)]
        return r, rewards


def summary(r, rewards) -> dict:
    return {"reward": statistics.mean(rewards), "accuracy": statistics.mean(x == 100 for x in rewards),
            "cot_entropy": r.cot_entropy.mean().item()}


# --------------------------------------------------------------------------- the labs

def lab1(base: Base, root: str):
    """Greedy: hard (τ = 0), fuzzy (σ = 0, τ = 1e-4), soft (σ = 0, τ = 0.5); how often fuzzy/soft greedy write the
    same CoT as hard greedy. Sampled (the training policies): per seed."""
    problems = load_dataset(DATASET, "test")[:50]

    def run(mode, greedy, seed):
        def compute():
            kwargs = ({"tau": 0.0} if mode == "hard" else {"sigma": 0.0}) if greedy else {"seed": seed}
            r, rewards = base.rollout(problems, mode, answer_tau=0.0, **kwargs)
            cots = [r.tokens[i][r.step_kinds[i] == STEP_COT].tolist() for i in range(len(problems))]
            return {**summary(r, rewards), "cots": cots, "example": r.cot_text[0], "answer": r.answer_text[0]}
        return cached(root, f"lab1_{mode}_{'greedy' if greedy else f'sample_s{seed}'}", compute)

    hard_greedy = run("hard", True, 0)["cots"]
    rows = []
    for mode in ("hard", "soft", "fuzzy"):
        for greedy, seeds in ((True, [None]), (False, SEEDS)):
            for seed in seeds:
                out = run(mode, greedy, seed)
                same = statistics.mean(a == b for a, b in zip(out["cots"], hard_greedy))
                rows.append({"mode": mode, "decoding": "greedy" if greedy else "sample", "seed": seed,
                             "problems": len(problems), "accuracy": out["accuracy"], "cot_entropy": out["cot_entropy"],
                             "same_cot_as_hard_greedy": same, "example_question": problems[0].question,
                             "example_cot": out["example"], "example_answer": out["answer"]})
    write_jsonl("lab1_cot.jsonl", rows)


def lab2(root: str, jobs: int):
    """The six settings of §7 on the base model: evaluate.py with replicate.py's flags, at seeds 0, 1, 2 (seeds 1
    and 2: the sample settings only, since the greedy ones draw no random numbers). Seed 0 is replicate.py's base
    evaluation when it has run."""
    flags = shlex.split(replicate.PRESETS["cpu"]["eval"])
    replicate_base = os.path.join(replicate.get_args(REPLICATE_ARGV).root, "eval", "base.json")
    commands, outputs = [], {}
    for seed in SEEDS:
        outputs[seed] = os.path.join(root, f"lab2_base_s{seed}.json")
        if seed == SEEDS[0] and os.path.exists(replicate_base):
            outputs[seed] = replicate_base
        argv = ["--model", MODEL, "--dataset", DATASET, *flags, "--seed", str(seed), "--output", outputs[seed]]
        if seed != SEEDS[0]:
            argv += ["--settings", "hard-sample,soft-sample,fuzzy-sample"]
        # always run: evaluate.py skips the settings an earlier (interrupted) run of it finished
        commands.append(([sys.executable, os.path.join(REPO, "evaluate.py"), *argv], f"lab2_s{seed}"))
    replicate.run_all(commands, root, jobs)
    rows = [{"setting": row["setting"], "seed": seed, "pass@1": row["pass@1"],
             "pass@4": row.get("pass@4"), "cot_len": row["cot_len"]}
            for seed, out in outputs.items() for row in plot.read_json(out)["table"]]
    write_jsonl("lab2_settings.jsonl", rows)
    bars(rows, "setting", "pass@1", "pass@1 (%) on the lab test problems, base model", "lab2_settings.png")


def lab3(base: Base, root: str):
    """Fuzzy rollouts of the base model at each noise scale: what σ does to reward and CoT entropy."""
    problems = load_dataset(DATASET, "train")[:ROLLOUT_PROBLEMS]
    rows = []
    for sigma in SIGMAS:
        for seed in SEEDS:
            out = cached(root, f"lab3_sigma{sigma}_s{seed}", lambda: summary(*base.rollout(
                problems, "fuzzy", samples=8, sigma=sigma, seed=seed)))
            rows.append({"sigma": sigma, "seed": seed, "rollouts": 8 * len(problems), **out})
    write_jsonl("lab3_sigma.jsonl", rows)
    lines(rows, "sigma", ["reward", "accuracy", "cot_entropy"],
          "fuzzy rollouts of the base model at noise scale sigma (x RMS(E))", "lab3_sigma.png")


def lab4(base: Base, root: str):
    """16 samples per problem, cut into groups of G: the share of groups whose rewards are all equal (no signal)."""
    problems = load_dataset(DATASET, "train")[:ROLLOUT_PROBLEMS]
    rows = []
    for mode in ("hard", "fuzzy"):
        for seed in SEEDS:
            rewards = cached(root, f"lab4_{mode}_s{seed}", lambda: base.rollout(
                problems, mode, samples=max(GROUP_SIZES), seed=seed)[1])
            per_problem = [rewards[i:i + max(GROUP_SIZES)] for i in range(0, len(rewards), max(GROUP_SIZES))]
            for G in GROUP_SIZES:
                rows.append({"mode": mode, "G": G, "seed": seed, "groups": len(rewards) // G,
                             "no_signal_groups": no_signal_share(per_problem, G),
                             "accuracy": statistics.mean(x == 100 for x in rewards)})
    write_jsonl("lab4_groups.jsonl", rows)
    lines(rows, "G", ["no_signal_groups"], "base model rollouts: groups with no learning signal", "lab4_groups.png",
          series="mode")


def no_signal_share(per_problem: list[list[float]], G: int) -> float:
    """The share of groups (G consecutive samples of one problem) whose rewards are all equal: Eq. 12 gives them
    all a zero advantage, so they teach nothing."""
    groups = [row[j:j + G] for row in per_problem for j in range(0, len(row), G)]
    return statistics.mean(len(set(g)) == 1 for g in groups)


def run_rows(out_dir: str, **labels) -> dict:
    metrics = plot.read_metrics(os.path.join(out_dir, "metrics.jsonl"))
    steps = [row for step, row in metrics.items() if step > 0]
    vals = {step: row["val_accuracy"] for step, row in metrics.items() if "val_accuracy" in row}
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        final = json.loads(f.read().splitlines()[-1])
    return {**labels, "steps": len(steps), "val_accuracy": vals, "reward_first": steps[0]["reward"],
            "reward_last": statistics.mean(r["reward"] for r in steps[-3:]),
            "cot_entropy_first": steps[0]["cot_entropy"], "cot_entropy_last": steps[-1]["cot_entropy"],
            "no_signal_groups_mean": statistics.mean(r["no_signal_groups"] for r in steps),
            "best_val_accuracy": final.get("best_val_accuracy"), "base_val_accuracy": final.get("base_val_accuracy"),
            "seconds": sum(r["rollout_s"] + r["update_s"] for r in steps)}


def replicate_runs(mode: str) -> list[str]:
    root = replicate.get_args(REPLICATE_ARGV).root
    return [os.path.join(root, "runs", f"{mode}-s{s}") for s in SEEDS]


def metrics_files(run_dirs: list[str]) -> list[str]:
    return [os.path.join(d, "metrics.jsonl") for d in run_dirs]


def write_markdown(name: str, rows: list[dict], column: str = "advantages"):
    """One line per run: greedy validation at each evaluation, reward at the start and end, entropy, time."""
    steps = sorted({int(k) for r in rows for k in r["val_accuracy"]})
    lines = [f"| mode | {column} | seed | greedy validation at step " + " / ".join(map(str, steps))
             + " | reward, step 1 → mean of the last 3 | CoT entropy, step 1 → last | minutes of steps |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        vals = " / ".join(f"{r['val_accuracy'].get(s, r['val_accuracy'].get(str(s), float('nan'))):.2f}" for s in steps)
        lines.append(f"| {r['mode']} | {r[column]} | {r['seed']} | {vals} | {r['reward_first']:.1f} → "
                     f"{r['reward_last']:.1f} | {r['cot_entropy_first']:.2f} → {r['cot_entropy_last']:.2f} | "
                     f"{r['seconds'] / 60:.1f} |")
    path = os.path.join(EXPECTED, name)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {path}")


def lab5(jobs: int):
    """The lab preset: 3 modes x 3 seeds, trained by replicate.py's CPU preset (`replicate.py --preset cpu` then
    evaluates them for its report)."""
    replicate.main([*REPLICATE_ARGV, "--jobs", str(jobs), "--train-only"])
    runs = {mode: replicate_runs(mode) for mode in ("hard", "soft", "fuzzy")}
    rows = [run_rows(d, mode=m, seed=s, advantages="rloo") for m, dirs in runs.items() for s, d in zip(SEEDS, dirs)]
    write_jsonl("lab5_runs.jsonl", rows)
    write_markdown("lab5_runs.md", rows)
    plt = plot.import_pyplot()
    plot.plot_train(plt, [(f"{m} training", metrics_files(dirs)) for m, dirs in runs.items()],
                    os.path.join(EXPECTED, "lab5_curves.png"))
    plt.close("all")
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (mode, dirs) in enumerate(runs.items()):
        plot.draw(ax, [plot.metric_curve(plot.read_metrics(path), "cot_entropy") for path in metrics_files(dirs)],
                  plot.group_label(f"{mode} training", dirs, "runs"), f"C{i}")
    ax.set(xlabel="step", ylabel="mean CoT entropy (nats)", title="CoT entropy over training (§8, finding 5)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    plot.save(fig, os.path.join(EXPECTED, "lab5_entropy.png"))
    plt.close("all")


def compare_runs(name: str, column: str, mode: str, sides: list[tuple[str, list[str], str]]):
    """NAME.jsonl and NAME.md (a row per run, COLUMN holding its side's label) and NAME.png (training curves, one
    legend entry per side) for sides [(label, run folders, legend)]."""
    rows = [run_rows(d, mode=mode, seed=s, **{column: label})
            for label, dirs, _ in sides for s, d in zip(SEEDS, dirs)]
    write_jsonl(f"{name}.jsonl", rows)
    write_markdown(f"{name}.md", rows, column)
    plt = plot.import_pyplot()
    plot.plot_train(plt, [(legend, metrics_files(dirs)) for _, dirs, legend in sides],
                    os.path.join(EXPECTED, f"{name}.png"))
    plt.close("all")


def against_lab5(root: str, jobs: int, script: str, mode: str, label: str) -> tuple[list[str], list[str]]:
    """course/SCRIPT (train.py with one piece changed) with the lab preset's flags in MODE, 3 seeds, in
    ROOT/LABEL-MODE-sSEED (finished runs skipped) -> (lab 5's runs of MODE, SCRIPT's runs), to be compared."""
    commands, runs = [], []
    for seed in SEEDS:
        out = os.path.join(root, f"{label}-{mode}-s{seed}")
        runs.append(out)
        argv = [*shlex.split(replicate.PRESETS["cpu"]["train"]), "--mode", mode, "--seed", str(seed), "--out-dir", out]
        status = replicate.train_status(out, config.get_args(argv))  # done / resume (a checkpoint) / start
        if status != "done":
            commands.append(([sys.executable, os.path.join(HERE, script), *argv,
                              "--resume" if status == "resume" else "--overwrite"], f"{label}_s{seed}"))
    replicate.run_all(commands, root, jobs)
    lab5_runs = replicate_runs(mode)
    if any(replicate.summary_line(d) is None for d in lab5_runs):
        raise SystemExit(f"{script} is compared with lab 5's {mode} runs: run lab 5 first (course/labs.py --labs 5)")
    return lab5_runs, runs


def lab6(root: str, jobs: int):
    """course/grpo.py (z-scored advantages), fuzzy, against lab 5's RLOO runs."""
    rloo_runs, grpo_runs = against_lab5(root, jobs, "grpo.py", "fuzzy", "grpo")
    compare_runs("lab6_grpo", "advantages", "fuzzy", [("rloo", rloo_runs, "fuzzy, RLOO (Eq. 12)"),
                                                       ("grpo", grpo_runs, "fuzzy, GRPO z-score")])


def lab7(root: str, jobs: int):
    """course/answer_only.py (no gradient through the CoT steps, Eq. 10), soft, against lab 5's soft runs."""
    every_step, answer_only = against_lab5(root, jobs, "answer_only.py", "soft", "answer-only")
    compare_runs("lab7_answer_only", "gradient", "soft",
                 [("every step", every_step, "soft: every step's gradient (Eq. 13-14)"),
                  ("answer only", answer_only, "soft: the answer tokens' gradient only")])


# --------------------------------------------------------------------------- small plots

def bars(rows, key, value, title, name):
    plt = plot.import_pyplot()
    names = list(dict.fromkeys(r[key] for r in rows))
    stats = [spread([r[value] for r in rows if r[key] == n]) for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(names, [s["mean"] for s in stats], color=[plot.SETTING_COLOR[n.split("-")[0]] for n in names],
           yerr=[[s["mean"] - s["min"] for s in stats], [s["max"] - s["mean"] for s in stats]], capsize=4)
    ax.set(title=title, ylabel=value)
    ax.grid(alpha=0.3, axis="y")
    plot.save(fig, os.path.join(EXPECTED, name))
    plt.close("all")


def lines(rows, x, values, title, name, series=None):
    """One panel per value against x (log scale), one line per `series`: mean over seeds, bars from min to max."""
    plt = plot.import_pyplot()
    fig, axes = plt.subplots(1, len(values), figsize=(5 * len(values), 3.8), squeeze=False)
    for ax, value in zip(axes[0], values):
        for i, s in enumerate(dict.fromkeys(r.get(series) for r in rows)):
            xs = sorted({r[x] for r in rows if r.get(series) == s})
            stats = [spread([r[value] for r in rows if r.get(series) == s and r[x] == v]) for v in xs]
            mean = [t["mean"] for t in stats]
            ax.errorbar(xs, mean, yerr=[[t["mean"] - t["min"] for t in stats], [t["max"] - t["mean"] for t in stats]],
                        marker="o", capsize=4, color=f"C{i}", label=f"{s or 'base model'}, {len(SEEDS)} seeds (min-max)")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(xs, [str(v) for v in xs])
        ax.set(xlabel=x, ylabel=value, title=value)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    plot.save(fig, os.path.join(EXPECTED, name))
    plt.close("all")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labs", default="1,2,3,4,5,6,7", help="comma-separated lab numbers")
    ap.add_argument("--root", default="out-labs", help="rollout caches, evaluations, labs 6-7's runs (git-ignored)")
    ap.add_argument("--jobs", type=int, default=2, help="training / evaluation commands at once (replicate.py --jobs)")
    args = ap.parse_args(argv)
    labs = {int(x) for x in args.labs.split(",") if x.strip()}
    if not labs or not labs <= set(range(1, 8)) or args.jobs < 1:
        ap.error("--labs takes numbers from 1 to 7, --jobs >= 1")
    os.makedirs(EXPECTED, exist_ok=True)
    os.makedirs(args.root, exist_ok=True)
    t0 = time.time()
    if labs & {1, 3, 4}:
        torch.manual_seed(0)
        base = Base()
        for n, lab in ((1, lab1), (3, lab3), (4, lab4)):
            if n in labs:
                lab(base, args.root)
    if 5 in labs:
        lab5(args.jobs)
    if 6 in labs:
        lab6(args.root, args.jobs)
    if 7 in labs:
        lab7(args.root, args.jobs)
    if 2 in labs:
        lab2(args.root, args.jobs)
    print(f"labs {sorted(labs)} done in {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
