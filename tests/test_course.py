"""course/exercises.py: a student copy fails every exercise with NotImplementedError, the repository itself
gets full marks, the stubbing keeps signatures, docstrings and every other line as they are, and grading trusts
nothing in a submission but its exercise files."""

import ast
import json
import os
import subprocess
import sys

import pytest

from course import exercises
from course.exercises import EXERCISES, REPO, find_function

CLI = [sys.executable, os.path.join(REPO, "course", "exercises.py")]


def run_cli(*args, cwd=REPO):
    proc = subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def grade_json(folder, tmp_path, *options):
    report = tmp_path / f"grade_{os.path.basename(folder)}.json"
    table = run_cli("grade", str(folder), "--json", str(report), *options)
    return table, json.loads(report.read_text())


def solved_copy(tmp_path, **overrides):
    """A student copy with this repository's solutions in its exercise files, and for each `file=code` that
    code appended to that file (a later `def` replaces the solution's function)."""
    student = tmp_path / "student"
    run_cli("make", "--out", str(student))
    for name in {ex.file for ex in EXERCISES}:
        (student / name).write_bytes(open(os.path.join(REPO, name), "rb").read())
    for name, code in overrides.items():
        with open(student / f"{name}.py", "a") as f:
            f.write("\n\n" + code)
    return student


@pytest.mark.slow
def test_student_copy_fails_every_exercise_with_not_implemented(tmp_path):
    student = tmp_path / "student"
    run_cli("make", "--out", str(student))
    for ex in EXERCISES:  # the function is there, with its signature and docstring, and only raises
        ours = find_function(ast.parse(open(os.path.join(REPO, ex.file)).read()), ex.function)
        theirs = find_function(ast.parse((student / ex.file).read_text()), ex.function)
        assert ast.dump(theirs.args) == ast.dump(ours.args)
        assert ast.get_docstring(theirs) == ast.get_docstring(ours)
        raise_stmt = theirs.body[-1]
        assert isinstance(raise_stmt, ast.Raise) and raise_stmt.exc.func.id == "NotImplementedError"
        assert raise_stmt.exc.args[0].value.startswith(f"Exercise {ex.number} — {ex.equation}: ")
    for name in ("tokenizer.py", "README.md", "course/exercises.py", EXERCISES[0].grader):  # copied verbatim
        assert (student / name).read_bytes() == open(os.path.join(REPO, name), "rb").read()

    table, scores = grade_json(student, tmp_path)
    assert [s["exercise"] for s in scores] == [ex.number for ex in EXERCISES]
    for s in scores:
        assert s["total"] > 0 and s["passed"] == 0 and s["points"] == 0, s
        assert s["errors"] == ["NotImplementedError"] * s["total"], s
        # and it is its own exercise's stub that raised: no grader calls another exercise's function
        assert all(m.startswith(f"NotImplementedError: Exercise {s['exercise']} — ") for m in s["messages"]), s
    assert f"total: 0.0 / {sum(ex.points for ex in EXERCISES)} points" in table


@pytest.mark.slow
def test_repository_gets_full_marks(tmp_path):
    table, scores = grade_json(REPO, tmp_path)
    for s in scores:
        assert s["total"] > 0 and s["passed"] == s["total"] and s["points"] == s["max_points"], s
    assert f"total: {sum(ex.points for ex in EXERCISES)}.0 / {sum(ex.points for ex in EXERCISES)} points" in table


SOURCE = '''import math


class Box:
    """A box."""

    def area(self, w: float,
             h: float = 1.0) -> float:
        """w × h."""
        a = w * h  # the area
        return a


def scale(x):
    # x: a number; doubles it
    y = 2 * x

    return y  # done


def untouched():
    return 1
'''


def test_stub_source_keeps_everything_but_the_bodies():
    box = exercises.Exercise(1, "f.py", "Box.area", "Eq. 12", "w times h", "", 1, 1)
    scale = exercises.Exercise(2, "f.py", "scale", "§2", "twice x", "", 1, 1)
    out = exercises.stub_source(SOURCE, [box, scale], "f.py")
    assert out == SOURCE.replace(
        "        a = w * h  # the area\n        return a\n",
        "        raise NotImplementedError('Exercise 1 — Eq. 12: w times h')\n").replace(
        "    y = 2 * x\n\n    return y  # done\n",
        "    raise NotImplementedError('Exercise 2 — §2: twice x')\n")
    one_line = exercises.Exercise(4, "f.py", "untouched", "", "", "", 1, 1)
    with pytest.raises(ValueError, match="header's line"):
        exercises.stub_source(SOURCE.replace("def untouched():\n    return 1", "def untouched(): return 1"),
                              [one_line], "f.py")
    with pytest.raises(LookupError, match="Box.volume"):
        exercises.stub_source(SOURCE, [exercises.Exercise(3, "f.py", "Box.volume", "", "", "", 1, 1)], "f.py")


def test_make_refuses_a_used_folder_or_one_inside_the_repository(tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        exercises.make(str(tmp_path / "used"))
    assert os.listdir(tmp_path / "used") == ["notes.txt"]
    with pytest.raises(ValueError, match="inside the repository"):
        exercises.make(os.path.join(REPO, "student-copy"))
    assert not os.path.exists(os.path.join(REPO, "student-copy"))


def test_grade_of_a_folder_without_the_exercise_files_is_an_error(tmp_path):
    proc = subprocess.run([*CLI, "grade", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "data.py is missing" in proc.stderr, proc.stderr


RIGGED_REPORT = """
import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    outcome.get_result().outcome = "passed"
"""


@pytest.mark.slow
def test_a_rigged_submission_gets_its_honest_score(tmp_path):
    """Nothing a submission ships but its exercise files takes effect: not a conftest.py that passes every
    test, not a pytest.ini loading a plugin that does, not a sitecustomize.py, not an emptied grader."""
    student = tmp_path / "student"
    run_cli("make", "--out", str(student))       # every exercise still a stub: its honest score is 0
    with open(student / "course" / "graders" / "conftest.py", "a") as f:
        f.write(RIGGED_REPORT)
    (student / "conftest.py").write_text(RIGGED_REPORT)
    (student / "rig.py").write_text(RIGGED_REPORT)
    (student / "pytest.ini").write_text("[pytest]\naddopts = -p rig\n")
    ran = tmp_path / "sitecustomize_ran"
    (student / "sitecustomize.py").write_text(f"open({str(ran)!r}, 'w').close()\n")
    (student / EXERCISES[0].grader).write_text("def test_nothing():\n    pass\n")

    table, scores = grade_json(student, tmp_path)
    assert f"total: 0.0 / {sum(ex.points for ex in EXERCISES)} points" in table, table
    for s in scores:
        assert s["total"] > 0 and s["passed"] == 0 and s["errors"] == ["NotImplementedError"] * s["total"], s
    assert not ran.exists()


@pytest.mark.slow
def test_an_endless_loop_costs_only_its_exercise(tmp_path):
    student = solved_copy(tmp_path, data="def reward(completion_text, label, numeral_only=False):\n"
                                         "    while True:\n        pass\n")
    table, scores = grade_json(student, tmp_path, "--exercise", "7", "8", "--timeout", "20")
    pass_at_k, reward = scores
    assert pass_at_k["exercise"] == 7 and pass_at_k["points"] == pass_at_k["max_points"], pass_at_k
    assert reward["exercise"] == 8 and reward["points"] == 0 and reward["errors"] == ["Timeout"], reward
    assert "ran past 20 s" in reward["messages"][0]


@pytest.mark.slow
def test_a_wrong_answer_shows_what_came_back_what_was_expected_and_where_to_see_more(tmp_path):
    """Eq. 12 with the sample's own reward in the baseline's mean: the grade names the call, both values, and
    the command that prints every failing check."""
    student = solved_copy(tmp_path, rloo="def rloo_advantages(rewards):\n"
                                         "    return rewards - rewards.mean(-1, keepdim=True)\n")
    table = run_cli("grade", str(student), "--exercise", "1")
    assert "rloo_advantages([[3.0, 1.0]]): got tensor([[ 1., -1.]]), expected tensor([[ 2., -2.]])" in table
    first = table.split("the first, ")[1].splitlines()[1]  # the first failing check's line under the table
    assert first.strip().startswith("AssertionError: rloo_advantages([[100.0, 10.0, 0.0, 10.0]"), table
    assert "got tensor([[ 70., -20., -30., -20.]" in first and "expected tensor([[ 93.3333," in first, first
    assert f"python course/exercises.py grade {student} --exercise 1" in table


def test_every_error_a_grader_expects_is_asked_for():
    """A grader that expects an exception checks what the stub's message or the function's docstring asks."""
    for ex in EXERCISES:
        grader = open(os.path.join(REPO, ex.grader)).read()
        docstring = ast.get_docstring(find_function(ast.parse(open(os.path.join(REPO, ex.file)).read()),
                                                    ex.function)) or ""
        for error in ("ValueError", "TypeError", "IndexError", "RuntimeError"):
            if error in grader:
                assert error in ex.message or error in docstring, (ex.number, error)


def test_make_copies_only_the_files_git_tracks(tmp_path):
    """Run outputs lying untracked in the checkout (a plot, a results file) stay out of the student copy."""
    root = tmp_path / "repo"
    for name in exercises.repo_files(REPO):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(open(os.path.join(REPO, name), "rb").read())
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    (root / "curves.png").write_bytes(b"an untracked plot")
    (root / "results").mkdir(exist_ok=True)
    (root / "results" / "ood.json").write_text("{}")
    written = exercises.make(str(tmp_path / "student"), root=str(root))
    assert "rloo.py" in written and "curves.png" not in written and "results/ood.json" not in written
    assert not (tmp_path / "student" / "curves.png").exists()
    assert not (tmp_path / "student" / "results" / "ood.json").exists()


def test_make_outside_a_git_checkout_says_so(tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "rloo.py").write_text("")
    with pytest.raises(SystemExit, match="not a git checkout"):
        exercises.make(str(tmp_path / "student"), root=str(tmp_path / "repo"))


@pytest.mark.slow
def test_walkthrough_runs_top_to_bottom():
    """course/walkthrough.py imports the real modules; with --tiny it runs in seconds, so it cannot rot."""
    proc = subprocess.run([sys.executable, os.path.join(REPO, "course", "walkthrough.py"), "--tiny"], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "torch.distributions" in proc.stdout and "advantages:" in proc.stdout and "gradient norm" in proc.stdout
    assert "from the CoT steps" in proc.stdout
    # the random model boxes no answer: every reward is 0, and the gradient shown is from stand-in advantages
    assert "no reward spread in this group" in proc.stdout
    assert "demonstration advantages [1.0, -1.0, 1.0, -1.0] instead of these RLOO ones" in proc.stdout
    assert "with the demonstration advantages, not RLOO's, gradient norm" in proc.stdout
    assert "Warning" not in proc.stderr, proc.stderr
