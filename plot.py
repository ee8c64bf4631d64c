"""Figures as PNG files: training curves, pass@k curves and CoT entropy profiles (matplotlib is optional:
`pip install matplotlib`).

    python plot.py train out/metrics.jsonl out-soft                                # one curve per run
    python plot.py train hard=out-hard-s0,out-hard-s1 fuzzy='out-fuzzy-s*'         # mean and min–max over seeds
    python plot.py passk results.json --output passk.png                           # pass@k for k = 1..n
    python plot.py entropy base=base.json hard=hard.json --setting hard-sample     # entropy along the CoT

A run is a metrics.jsonl file or the OUT_DIR that holds it (train), or an evaluate.py JSON (passk, entropy).
LABEL=RUN,RUN,... draws one curve for several runs (e.g. seeds): their mean at each x, over the runs that
have that x, with a shaded band from their minimum to their maximum. Each RUN may be a glob pattern.
Without a subcommand, `train` is meant: `python plot.py out/metrics.jsonl` works. Without --output, the
figure goes to outputs/ (git-ignored, made when needed): outputs/curves.png, passk.png or entropy.png.
A file that is not what its subcommand reads, or that has nothing to plot, is a one-line error.
"""

import argparse
import glob
import json
import math
import os
import sys

from data import pass_at_k

# (metrics.jsonl key, panel title); the gradient-norm and loss panels are drawn apart, see plot_train
TRAIN_PANELS = [("reward", "mean reward (100 correct, 10 wrong but boxed, 0 no answer)"),
                ("val_accuracy", "greedy validation accuracy"),
                ("cot_entropy", "CoT entropy (nats, untempered)"),
                ("no_signal_groups", "share of groups with no reward spread\n(no learning signal)"),
                ("accuracy", "sample accuracy (training rollouts)"),
                ("cot_len", "CoT length (tokens)")]
SETTING_COLOR = {"hard": "C0", "soft": "C1", "fuzzy": "C2"}
OUTPUTS = "outputs"  # the default folder of the figures, git-ignored
MAX_MARKED_POINTS = 60  # up to this many points per curve get a marker, so a one-step run still shows its point


# --------------------------------------------------------------------------- reading

def read_metrics(path: str) -> dict[int, dict]:
    """step -> metrics of a train.py metrics.jsonl. A resumed run may repeat steps after its last checkpoint:
    the later line wins. The closing summary line and a last line cut short by a crash are skipped; any other
    line that is not a JSON object with an integer "step" is an error."""
    rows = {}
    with open(path, errors="replace") as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:  # the line a crash cut short
                continue
            raise SystemExit(f"plot.py: {path}:{i + 1}: not JSON: {line[:80]!r}; plot.py train reads train.py's "
                             "metrics.jsonl") from None
        step = row.get("step") if isinstance(row, dict) else None
        if not isinstance(step, int) or isinstance(step, bool):
            raise SystemExit(f"plot.py: {path}:{i + 1}: not a metrics row (a JSON object with an integer \"step\"): "
                             f"{line[:80]!r}; plot.py train reads train.py's metrics.jsonl")
        if "summary" not in row:
            rows.setdefault(step, {}).update(row)
    return dict(sorted(rows.items()))


def read_json(path: str) -> dict:
    """An evaluate.py JSON; any other file (a metrics.jsonl, an ood.py JSON) is an error."""
    try:
        with open(path) as f:
            result = json.load(f)
    except ValueError as e:
        raise SystemExit(f"plot.py: {path} is not a JSON file ({e}); passk and entropy read evaluate.py's JSON, "
                         "`plot.py train` a metrics.jsonl") from None
    if not (isinstance(result, dict) and isinstance(result.get("table"), list)
            and all(isinstance(row, dict) and "setting" in row for row in result["table"])):
        raise SystemExit(f"plot.py: {path} is not an evaluate.py result (no table of settings); passk and entropy "
                         "read evaluate.py's JSON")
    return result


def expand_runs(specs: list[str], default_name: str | None) -> list[tuple[str, list[str]]]:
    """["hard=a,b*", "c"] -> [("hard", [a, b1, b2]), ("c", [c])]: a label and its files. A folder stands for
    the `default_name` file inside it. Missing files are an error here, before anything is plotted."""
    groups = []
    for spec in specs:
        label, _, runs = spec.partition("=") if "=" in spec else ("", "", spec)
        paths = []
        for run in filter(None, runs.split(",")):
            matches = sorted(glob.glob(run)) or [run]
            for path in matches:
                if default_name and os.path.isdir(path):
                    path = os.path.join(path, default_name)
                if not os.path.isfile(path):
                    raise SystemExit(f"plot.py: no such file: {path}")
                paths.append(path)
        if not paths:
            raise SystemExit(f"plot.py: {spec!r} names no file")
        if not label:  # an unlabelled run: its folder's name (OUT_DIR) or its file name
            folder = os.path.basename(os.path.dirname(os.path.abspath(paths[0])))
            label = folder if default_name else os.path.splitext(os.path.basename(paths[0]))[0]
        groups.append((label, paths))
    return groups


# --------------------------------------------------------------------------- the numbers behind the curves

def mean_band(curves: list[dict]) -> tuple[list, list[float], list[float], list[float]]:
    """Several curves {x: y} -> (xs, mean, min, max) at every x that some curve has, over the curves that have
    it (runs of different lengths: the longer ones carry on alone)."""
    xs = sorted({x for curve in curves for x in curve})
    values = [[curve[x] for curve in curves if x in curve] for x in xs]
    return xs, [sum(v) / len(v) for v in values], [min(v) for v in values], [max(v) for v in values]


def metric_curve(rows: dict[int, dict], key: str) -> dict[int, float]:
    """step -> value of one metric; steps where it is missing or was not finite (logged as null) are left out."""
    return {step: row[key] for step, row in rows.items()
            if isinstance(row.get(key), (int, float)) and math.isfinite(row[key])}


def pass_at_k_curve(result: dict, setting: str) -> dict[int, float]:
    """k -> pass@k in percent for k = 1..n, from an evaluate.py JSON: the unbiased estimator per problem
    (docs/paper.md §7), averaged over the problems. A greedy setting has n = 1, hence one point."""
    problems = result.get("problems", [])
    if not problems or setting not in problems[0]["generations"]:
        raise SystemExit(f"plot.py: no setting {setting!r} in this evaluation; it has "
                         f"{', '.join(problems[0]['generations']) if problems else 'no problems'}")
    counts = [(len(p["generations"][setting]), sum(s["correct"] for s in p["generations"][setting]))
              for p in problems]
    n = min(n for n, _ in counts)
    return {k: 100 * sum(pass_at_k(n_i, c, k) for n_i, c in counts) / len(counts) for k in range(1, n + 1)}


def entropy_profile(result: dict, setting: str, min_count: int) -> tuple[dict[int, float], dict[int, float]]:
    """(position -> mean entropy, position -> number of rollouts) along the CoT, positions from 1, from an
    evaluate.py JSON. Positions that fewer than `min_count` rollouts reach are left out of the mean: a mean of
    a handful of long CoTs is noise."""
    row = next((r for r in result.get("table", []) if r.get("setting") == setting), {})
    profile = row.get("entropy_profile") or result.get("entropy_profile", {}).get(setting)
    if profile is None:
        have = [r["setting"] for r in result.get("table", []) if "entropy_profile" in r]
        have += list(result.get("entropy_profile", {}))
        raise SystemExit(f"plot.py: no entropy profile for {setting!r} in this evaluation; it has "
                         f"{', '.join(have) or 'none (an evaluate.py from before entropy profiles?)'}")
    count = {t: c for t, c in enumerate(profile["count"], 1)}
    mean = {t: m for t, (m, c) in enumerate(zip(profile["mean"], profile["count"]), 1)
            if c >= min_count and m is not None}
    if not mean:
        raise SystemExit(f"plot.py: no CoT position of {setting!r} is reached by --min-count {min_count} rollouts "
                         f"(at most {max(profile['count'], default=0)}): lower --min-count")
    return mean, count


# --------------------------------------------------------------------------- drawing

def draw(ax, curves: list[dict], label: str, color: str, linestyle: str = "-", band: bool = True, marker="o"):
    """One line: the mean of `curves`, markers on short curves, and the min–max band when there are several."""
    xs, mean, lo, hi = mean_band(curves)
    if not xs:
        return
    ax.plot(xs, mean, color=color, linestyle=linestyle, label=label, marker=marker if len(xs) <= MAX_MARKED_POINTS
            else None, markersize=5 if len(xs) <= 10 else 3)
    if band and len(curves) > 1:
        ax.fill_between(xs, lo, hi, color=color, alpha=0.2, linewidth=0)


def integer_ticks(ax):
    """Steps, positions and k are whole numbers: ticks only there, and a range of at least 2 around a lone
    point (else matplotlib zooms in to ±0.05 and ticks 0.96, 0.98, ...)."""
    from matplotlib.ticker import MaxNLocator
    lo, hi = ax.get_xlim()
    if hi - lo < 2 and ax.get_xscale() == "linear":
        ax.set_xlim((lo + hi) / 2 - 1, (lo + hi) / 2 + 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def group_label(label: str, paths: list[str], unit: str) -> str:
    return f"{label} ({len(paths)} {unit}, mean, min–max)" if len(paths) > 1 else label


def plot_train(plt, groups, output: str):
    runs = [(label, paths, [read_metrics(p) for p in paths]) for label, paths in groups]
    logged = {key for _, _, all_rows in runs for rows in all_rows for row in rows.values() for key in row}
    loss_key = "loss_no_const" if "loss_no_const" in logged else "loss"  # runs from before it: the raw loss
    plotted = [key for key, _ in TRAIN_PANELS] + ["grad_norm", "grad_norm_clipped", loss_key]
    for _, paths, all_rows in runs:  # a file with nothing to draw would vanish from the figure without a word
        for path, rows in zip(paths, all_rows):
            if not any(metric_curve(rows, key) for key in plotted):
                raise SystemExit(f"plot.py: {path} has no row to plot (no step with a number for any of "
                                 f"{', '.join(plotted)}); plot.py train reads train.py's metrics.jsonl")
    fig, axes = plt.subplots(2, 4, figsize=(20, 8.5), sharex=True)  # the same steps in every panel
    for ax, (key, title) in zip(axes.flat, TRAIN_PANELS):
        for i, (label, paths, all_rows) in enumerate(runs):
            draw(ax, [metric_curve(rows, key) for rows in all_rows], group_label(label, paths, "runs"), f"C{i}")
        ax.set_title(title)

    ax = axes.flat[6]  # both gradient norms, same colour per run: solid and dots before clipping, dashed and x after
    for i, (label, paths, all_rows) in enumerate(runs):
        draw(ax, [metric_curve(rows, "grad_norm") for rows in all_rows], label, f"C{i}")
        draw(ax, [metric_curve(rows, "grad_norm_clipped") for rows in all_rows], label, f"C{i}", "--", band=False,
             marker="x")
    if any(line.get_ydata().max() > 10 for line in ax.lines):
        # the unclipped norm can be 10^4 times the clipped one (≤ the clip threshold, 1.0 by default), and a step
        # without learning signal has norm 0: linear up to 1, logarithmic above
        ax.set_yscale("symlog", linthresh=1.0)
    ax.legend(handles=[plt.Line2D([], [], color="k", marker="o", label="before clipping (grad_norm)"),
                       plt.Line2D([], [], color="k", marker="x", linestyle="--",
                                  label="after clipping (grad_norm_clipped)")], fontsize=8)
    ax.set_title("gradient norm")

    ax = axes.flat[7]
    for i, (label, paths, all_rows) in enumerate(runs):
        draw(ax, [metric_curve(rows, loss_key) for rows in all_rows], label, f"C{i}")
    ax.set_title("loss without Eq. 10's constant (loss_no_const)" if loss_key == "loss_no_const"
                 else "loss (with Eq. 10's constant)")

    for ax in axes.flat:
        integer_ticks(ax)
        ax.tick_params(labelbottom=True)  # sharex hides the top row's step numbers: keep them
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    save(fig, output)


def plot_passk(plt, groups, output: str):
    results = [(label, paths, [read_json(p) for p in paths]) for label, paths in groups]
    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 5), sharey=True, squeeze=False)
    for ax, (label, paths, jsons) in zip(axes.flat, results):
        n_max = 1
        for setting in [row["setting"] for row in jsons[0]["table"]]:
            curves = [pass_at_k_curve(result, setting) for result in jsons]
            color = SETTING_COLOR.get(setting.partition("-")[0], "k")
            if len(curves[0]) == 1:  # greedy: one rollout per problem, a single point at k = 1
                _, mean, _, _ = mean_band(curves)
                ax.plot([1], mean, marker="D", linestyle="none", color=color, label=setting)
            else:
                draw(ax, curves, setting, color)
                n_max = max(n_max, len(curves[0]))
        if n_max >= 8:  # the paper's pass@k curves: k on a log scale
            ax.set_xscale("log", base=2)
            ticks = [k for k in (2**i for i in range(n_max.bit_length())) if k <= n_max] + [n_max]
            ax.set_xticks(sorted(set(ticks)), [str(k) for k in sorted(set(ticks))])
        else:
            integer_ticks(ax)
        ax.set_title(group_label(label, paths, "evaluations"))
        ax.set_xlabel("k (samples per problem)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes.flat[0].set_ylabel("pass@k (%)")
    save(fig, output)


def plot_entropy(plt, groups, setting: str, min_count: int, output: str):
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, height_ratios=[3, 1])
    for i, (label, paths) in enumerate(groups):
        profiles = [entropy_profile(read_json(p), setting, min_count) for p in paths]
        draw(top, [mean for mean, _ in profiles], group_label(label, paths, "evaluations"), f"C{i}")
        draw(bottom, [count for _, count in profiles], label, f"C{i}", band=False)
    top.set_title(f"CoT entropy profile, {setting} (positions that at least {min_count} rollouts reach)")
    top.set_ylabel("mean entropy (nats, untempered)")
    bottom.set_ylabel("rollouts still\nin the CoT")
    bottom.set_xlabel("CoT position (tokens)")
    for ax in (top, bottom):
        integer_ticks(ax)
        ax.grid(alpha=0.3)
    top.legend(fontsize=8)
    save(fig, output)


def save(fig, output: str):
    fig.tight_layout()
    try:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)  # outputs/ by default: made when needed
        fig.savefig(output, dpi=100)
    except OSError as e:
        raise SystemExit(f"plot.py: cannot write {output} ({e})") from None
    print(f"wrote {output}")


# --------------------------------------------------------------------------- main

def get_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="training curves from train.py's metrics.jsonl")
    train.add_argument("runs", nargs="+", help="metrics.jsonl, OUT_DIR, or LABEL=RUN,RUN,... (mean over them)")
    train.add_argument("--output", default=os.path.join(OUTPUTS, "curves.png"))
    passk = sub.add_parser("passk", help="pass@k for k = 1..n from evaluate.py JSONs, one line per setting")
    passk.add_argument("runs", nargs="+", help="an evaluate.py JSON or LABEL=JSON,JSON,...; one panel each")
    passk.add_argument("--output", default=os.path.join(OUTPUTS, "passk.png"))
    entropy = sub.add_parser("entropy", help="mean CoT entropy at each CoT position from evaluate.py JSONs")
    entropy.add_argument("runs", nargs="+", help="an evaluate.py JSON or LABEL=JSON,JSON,...; one line each")
    entropy.add_argument("--setting", default="hard-sample", help="the paper's profile is of hard sampling (§8)")
    entropy.add_argument("--min-count", type=int, default=10, help="leave out positions fewer rollouts reach")
    entropy.add_argument("--output", default=os.path.join(OUTPUTS, "entropy.png"))
    if argv and argv[0] not in sub.choices and argv[0] not in ("-h", "--help"):
        argv = ["train", *argv]  # plot.py METRICS... (the first form this script had)
    return ap.parse_args(argv)


def import_pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("plot.py needs matplotlib, an optional dependency: pip install matplotlib") from None
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt
    return plt


def main(argv=None):
    args = get_args(sys.argv[1:] if argv is None else argv)
    plt = import_pyplot()
    groups = expand_runs(args.runs, "metrics.jsonl" if args.command == "train" else None)
    if args.command == "train":
        plot_train(plt, groups, args.output)
    elif args.command == "passk":
        plot_passk(plt, groups, args.output)
    else:
        plot_entropy(plt, groups, args.setting, args.min_count, args.output)
    plt.close("all")


if __name__ == "__main__":
    main()
