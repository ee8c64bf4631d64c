"""plot.py: the numbers behind every curve (mean and min–max over runs, pass@k curves, entropy profiles) against
brute force, the reading of metrics.jsonl and evaluate.py JSONs, and a PNG from each kind of figure, built from
fabricated runs: a one-step run, and 30-step runs with three seeds per mode."""

import itertools
import json
import math
import os
import random
import shutil
import subprocess
import sys

import pytest

import plot
from plot import entropy_profile, expand_runs, mean_band, metric_curve, pass_at_k_curve, read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = ["hard-greedy", "hard-sample", "soft-greedy", "soft-sample", "fuzzy-greedy", "fuzzy-sample"]


# --------------------------------------------------------------------------- fabricated runs

def write_metrics(folder, steps: int, seed: int, mode: str = "hard", eval_every: int = 10):
    """A metrics.jsonl as train.py writes it: the step-0 validation, one line per step (validation merged in),
    a non-finite value logged as null, the closing summary line."""
    rng = random.Random(f"{mode}{seed}")
    gain = {"hard": 0.6, "soft": 0.3, "fuzzy": 0.4}[mode]
    lines = [{"step": 0, "val_accuracy": 0.05 + 0.01 * seed, "val_extraction_rate": 0.9}]
    for t in range(1, steps + 1):
        grad_norm = rng.uniform(5e3, 3e4)
        row = {"step": t, "reward": 15 + gain * t + rng.gauss(0, 3), "accuracy": 0.05 + gain * t / 100,
               "no_signal_groups": max(0.0, 0.6 - t / 100 + rng.gauss(0, 0.05)),
               "cot_len": 40 + rng.gauss(0, 2), "cot_entropy": 1.6 - (gain - 0.3) * t / 30 + rng.gauss(0, 0.05),
               "loss": 1800 + rng.gauss(0, 50), "loss_no_const": rng.gauss(0, 3), "grad_norm": grad_norm,
               "grad_norm_clipped": 1.0, "sigma_abs": 0.01}
        if t % eval_every == 0 or t == steps:
            row["val_accuracy"] = 0.05 + gain * t / 100 + 0.01 * seed
        lines.append(row)
    if steps >= 3:
        lines[2] = {**lines[2], "grad_norm": None, "grad_norm_clipped": None, "nonfinite": ["grad_norm"]}
    lines.append({"step": steps, "summary": "done: best greedy validation accuracy ...", "best_step": steps})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder / "metrics.jsonl"


def write_evaluation(path, seed: int, n_problems: int = 12, n: int = 8, cot: int = 30, skill: float = 0.3):
    """An evaluate.py JSON: per problem, per setting, the samples with `correct`; per setting the entropy profile
    {"mean": [...], "count": [...]} over CoT positions."""
    rng = random.Random(seed)
    problems = []
    for i in range(n_problems):
        p = min(1.0, max(0.0, rng.gauss(skill, 0.3)))  # each problem has its own difficulty
        problems.append({"question": f"q{i}", "label": "1", "generations": {
            s: [{"correct": rng.random() < p, "reward": 0.0, "cot_len": cot} for _ in range(n if "sample" in s else 1)]
            for s in SETTINGS}})
    table = []
    for s in SETTINGS:
        count = [n * n_problems if t < cot // 2 else n * n_problems * (cot - t) // cot for t in range(cot)]
        mean = [1.5 + 0.5 * math.sin(t / 4) + 0.1 * seed + (0.3 if "hard" in s else 0) for t in range(cot)]
        table.append({"setting": s, "samples": n if "sample" in s else 1, "entropy_profile": {"mean": mean,
                                                                                             "count": count}})
    path.write_text(json.dumps({"config": {}, "table": table, "problems": problems}))
    return path


# --------------------------------------------------------------------------- the numbers

def test_mean_band_equals_a_brute_force_over_runs_of_different_lengths():
    rng = random.Random(0)
    curves = [{s: rng.gauss(0, 1) for s in range(n) if rng.random() < 0.8} for n in (5, 9, 12)]
    xs, mean, lo, hi = mean_band(curves)
    assert xs == sorted(set().union(*curves))
    for x, m, a, b in zip(xs, mean, lo, hi):
        have = [c[x] for c in curves if x in c]
        total = 0.0
        for v in have:
            total += v
        assert m == pytest.approx(total / len(have)) and a == min(have) and b == max(have)
    assert mean_band([{3: 2.0}]) == ([3], [2.0], [2.0], [2.0])


def brute_force_pass_at_k(correct: list[bool], k: int) -> float:
    """The share of the k-subsets of the samples that hold a correct one."""
    subsets = list(itertools.combinations(correct, k))
    return sum(any(s) for s in subsets) / len(subsets)


def test_pass_at_k_curve_equals_brute_force_enumeration(tmp_path):
    result = json.loads(write_evaluation(tmp_path / "e.json", seed=1, n_problems=7, n=6).read_text())
    for setting in ("hard-sample", "fuzzy-sample", "soft-greedy"):
        curve = pass_at_k_curve(result, setting)
        n = len(result["problems"][0]["generations"][setting])
        assert list(curve) == list(range(1, n + 1))
        for k, value in curve.items():
            expected = [brute_force_pass_at_k([s["correct"] for s in p["generations"][setting]], k)
                        for p in result["problems"]]
            assert value == pytest.approx(100 * sum(expected) / len(expected))
    assert list(pass_at_k_curve(result, "soft-greedy")) == [1]  # greedy: one rollout per problem, one point
    with pytest.raises(SystemExit, match="no setting 'warm-sample'.*hard-greedy"):
        pass_at_k_curve(result, "warm-sample")


def test_entropy_profile_is_read_from_either_place_and_thin_positions_are_left_out(tmp_path):
    result = json.loads(write_evaluation(tmp_path / "e.json", seed=0, n_problems=2, n=4, cot=10).read_text())
    row = next(r for r in result["table"] if r["setting"] == "hard-sample")
    mean, count = entropy_profile(result, "hard-sample", min_count=3)
    assert list(count.values()) == row["entropy_profile"]["count"] and min(count) == 1  # positions from 1
    assert mean == {t + 1: m for t, (m, c) in enumerate(zip(row["entropy_profile"]["mean"],
                                                            row["entropy_profile"]["count"])) if c >= 3}
    assert 0 < len(mean) < len(count)  # the last positions, which fewer than 3 rollouts reach, are dropped
    top_level = {"entropy_profile": {"hard-sample": row["entropy_profile"]},
                 "table": [{"setting": r["setting"]} for r in result["table"]]}
    assert entropy_profile(top_level, "hard-sample", 3) == (mean, count)
    with pytest.raises(SystemExit, match="no entropy profile for 'hard-greedy'.*hard-sample"):
        entropy_profile(top_level, "hard-greedy", 3)
    with pytest.raises(SystemExit, match="reached by --min-count 9 rollouts .at most 8.: lower --min-count"):
        entropy_profile(result, "hard-sample", 9)


def test_read_metrics_skips_the_summary_a_truncated_last_line_and_null_values(tmp_path):
    path = write_metrics(tmp_path / "run", steps=4, seed=0)
    with open(path, "a") as f:
        f.write('{"step": 5, "rew')  # a crash cut the last line short
    rows = read_metrics(str(path))
    assert list(rows) == [0, 1, 2, 3, 4] and not any("summary" in r for r in rows.values())
    assert 2 not in metric_curve(rows, "grad_norm") and set(metric_curve(rows, "grad_norm")) == {1, 3, 4}
    assert set(metric_curve(rows, "val_accuracy")) == {0, 4}
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(SystemExit, match="metrics.jsonl:2: not JSON"):
        read_metrics(str(path))


def test_run_specs_expand_labels_folders_and_globs(tmp_path):
    for seed in range(3):
        write_metrics(tmp_path / f"hard-s{seed}", steps=2, seed=seed)
    groups = expand_runs([f"hard={tmp_path}/hard-s*", str(tmp_path / "hard-s1" / "metrics.jsonl")], "metrics.jsonl")
    assert groups == [("hard", [str(tmp_path / f"hard-s{s}" / "metrics.jsonl") for s in range(3)]),
                      ("hard-s1", [str(tmp_path / "hard-s1" / "metrics.jsonl")])]
    with pytest.raises(SystemExit, match="no such file"):
        expand_runs([f"x={tmp_path}/hard-s0,{tmp_path}/nothing"], "metrics.jsonl")


def test_missing_matplotlib_is_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(SystemExit, match="pip install matplotlib"):
        plot.main(["train", str(write_metrics(tmp_path / "run", steps=1, seed=0))])


# --------------------------------------------------------------------------- the figures

@pytest.fixture
def pyplot():
    pytest.importorskip("matplotlib")
    yield
    import matplotlib.pyplot as plt
    plt.close("all")


def assert_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_one_step_run_draws_a_marked_point_on_every_panel(tmp_path, pyplot, monkeypatch):
    out = tmp_path / "one.png"
    axes_seen = []
    monkeypatch.setattr(plot, "save", lambda fig, output: (axes_seen.extend(fig.axes), fig.savefig(output)))
    plot.main([str(write_metrics(tmp_path / "run", steps=1, seed=0)), "--output", str(out)])  # no subcommand
    assert_png(out)
    for ax in axes_seen:
        markers = [line.get_marker() for line in ax.lines]
        assert markers and all(m in ("o", "x") for m in markers), ax.get_title()  # every curve shows its point
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ax.get_title()


def test_training_curves_of_three_modes_by_three_seeds(tmp_path, pyplot, monkeypatch):
    specs = []
    for mode in ("hard", "soft", "fuzzy"):
        for seed in range(3):
            write_metrics(tmp_path / f"{mode}-s{seed}", steps=30, seed=seed, mode=mode)
        specs.append(f"{mode}={tmp_path}/{mode}-s*")
    figures = []
    monkeypatch.setattr(plot, "save", lambda fig, output: (figures.append(fig), fig.savefig(output)))
    plot.main(["train", *specs, "--output", str(tmp_path / "curves.png")])
    assert_png(tmp_path / "curves.png")
    reward = figures[0].axes[0]
    assert [line.get_label() for line in reward.lines] == [f"{m} (3 runs, mean, min–max)" for m in
                                                           ("hard", "soft", "fuzzy")]
    assert len(reward.collections) == 3  # a min–max band per mode
    runs = [read_metrics(str(tmp_path / f"hard-s{s}" / "metrics.jsonl")) for s in range(3)]
    assert list(reward.lines[0].get_ydata()) == pytest.approx(
        [sum(r[t]["reward"] for r in runs) / 3 for t in range(1, 31)])
    grad = figures[0].axes[6]
    assert grad.get_yscale() == "symlog" and {line.get_linestyle() for line in grad.lines} == {"-", "--"}
    assert "loss_no_const" in figures[0].axes[7].get_title()


def test_pass_at_k_and_entropy_figures(tmp_path, pyplot):
    base = [write_evaluation(tmp_path / f"base-{s}.json", seed=s, n=32, skill=0.2) for s in range(2)]
    trained = write_evaluation(tmp_path / "fuzzy.json", seed=5, n=32, skill=0.4)
    plot.main(["passk", f"base={base[0]},{base[1]}", f"fuzzy-trained={trained}", "--output",
               str(tmp_path / "passk.png")])
    assert_png(tmp_path / "passk.png")
    plot.main(["entropy", f"base={base[0]},{base[1]}", f"fuzzy-trained={trained}", "--setting", "hard-sample",
               "--output", str(tmp_path / "entropy.png")])
    assert_png(tmp_path / "entropy.png")


# --------------------------------------------------------------------------- what plot.py refuses, and where it writes

@pytest.mark.parametrize("text", [
    "",
    "hello world\n",                           # one line of text (read as a line cut short by a crash)
    "garbage\nmore garbage\n",
    '{"a": 1}\n{"b": 2}\n',                    # JSON without a step
    '{"step": "one", "reward": 5}\n{"step": "two", "reward": 6}\n',
    '[1, 2]\n[3, 4]\n',
    '{"step": 1, "learning_rate": 2}\n',       # a step, but nothing plot.py draws
])
def test_a_metrics_file_with_nothing_to_plot_is_an_error_not_an_empty_figure(text, tmp_path, pyplot):
    path = tmp_path / "metrics.jsonl"
    path.write_text(text)
    with pytest.raises(SystemExit) as e:
        plot.main(["train", str(path), "--output", str(tmp_path / "curves.png")])
    assert isinstance(e.value.code, str) and str(path) in e.value.code and "\n" not in e.value.code  # exit 1
    assert not (tmp_path / "curves.png").exists()


@pytest.mark.slow  # a subprocess each: the command line as a user meets it
@pytest.mark.parametrize("command, text", [
    ("train", '{"step": "one", "reward": 5}\n{"step": "two", "reward": 6}\n'),  # a string step
    ("passk", '{"step": 1, "reward": 5}\n{"step": 2, "reward": 6}\n'),          # a metrics.jsonl to passk
    ("passk", '{"step": 1, "reward": 5}\n'),
    ("entropy", '{"config": {}, "table": [{"set": "arc_easy", "accuracy": 25.0}]}'),  # an ood.py JSON
])
def test_a_wrong_file_is_a_one_line_error_with_exit_1_not_a_traceback(command, text, tmp_path, pyplot):
    path = tmp_path / "given.jsonl"
    path.write_text(text)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "plot.py"), command, str(path), "--output",
                           str(tmp_path / "figure.png")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"plot.py: {path}") and proc.stderr.count("\n") == 1, proc.stderr


def test_a_figure_without_output_goes_to_the_git_ignored_outputs_folder(tmp_path, pyplot, monkeypatch):
    metrics = write_metrics(tmp_path / "run", steps=2, seed=0)
    monkeypatch.chdir(tmp_path / "run")
    plot.main(["train", str(metrics)])
    assert sorted(os.listdir(tmp_path / "run")) == ["metrics.jsonl", "outputs"]
    assert_png(tmp_path / "run" / "outputs" / "curves.png")
    if shutil.which("git") is None:
        pytest.skip("no git")
    for command in ("train", "passk", "entropy"):  # ood.py's default, outputs/ood.json, is in the same folder
        default = plot.get_args([command, "x"]).output
        ignored = subprocess.run(["git", "check-ignore", "-q", default], cwd=ROOT).returncode  # 128: not a checkout
        if ignored == 128:
            pytest.skip("not a git checkout")
        assert ignored == 0, f"git status would show {default}"
