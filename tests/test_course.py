"""course/exercises.py: a student copy fails every exercise with NotImplementedError, the repository itself
gets full marks, and the stubbing keeps signatures, docstrings and every other line as they are."""

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
    proc = subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def grade_json(folder, tmp_path):
    report = tmp_path / f"grade_{os.path.basename(folder)}.json"
    table = run_cli("grade", str(folder), "--json", str(report))
    return table, json.loads(report.read_text())


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


def test_grade_of_a_folder_without_graders_is_an_error(tmp_path):
    proc = subprocess.run([*CLI, "grade", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "graders missing" in proc.stderr


@pytest.mark.slow
def test_walkthrough_runs_top_to_bottom():
    """course/walkthrough.py imports the real modules; with --tiny it runs in seconds, so it cannot rot."""
    proc = subprocess.run([sys.executable, os.path.join(REPO, "course", "walkthrough.py"), "--tiny"], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "torch.distributions" in proc.stdout and "advantages:" in proc.stdout and "gradient norm" in proc.stdout
    assert "from the CoT steps" in proc.stdout
    assert "Warning" not in proc.stderr, proc.stderr
