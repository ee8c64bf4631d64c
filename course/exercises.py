"""The course's exercises: make a student copy of the repository, and grade one.

    python course/exercises.py list                    # the exercises
    python course/exercises.py make --out /tmp/student # a copy with the exercise functions' bodies removed
    python course/exercises.py grade /tmp/student      # run each exercise's grader there, print the scores
    python course/exercises.py grade                   # the same on this repository: full marks

The student copy is the whole repository (the files git tracks, plus untracked files that .gitignore does not
exclude) in which the body of each function below is replaced by
`raise NotImplementedError("Exercise N — Eq. K: ...")`; its signature and docstring stay. Students edit the
real files, so `train.py` then runs on *their* code. Nothing is hidden: this repository is the solution key.

Each exercise has its own grader, course/graders/test_exNN_<name>.py (copied into the student copy), which
calls that exercise's function and no other exercise's, and checks it against independent references
(hand-computed values, torch.distributions, brute force, autograd on a naive form). `grade` runs all graders
in one pytest process with DIR first on sys.path, and scores each exercise by the share of its tests that
pass. It exits 0 whatever the score, and 2 on an internal error (no such folder, a grader missing, pytest
not producing its report).
"""

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRADERS = "course/graders"  # relative to the repository root, as git lists files
TIMEOUT_S = 600             # a grade run takes ~20 s; a student's endless loop must not hang it


@dataclass(frozen=True)
class Exercise:
    number: int
    file: str         # relative to the repository root
    function: str     # qualified name: "f" or "Class.method"
    equation: str     # where the paper notes (docs/paper.md) state it; RoPE is the model's, not the paper's
    task: str         # the one line the stub raises
    goal: str         # what the student learns
    points: int
    minutes: int
    advanced: bool = False

    @property
    def grader(self) -> str:
        name = "_".join(part.strip("_") for part in self.function.split(".")).lower()  # Class.__init__: class_init
        return f"{GRADERS}/test_ex{self.number:02d}_{name}.py"

    @property
    def message(self) -> str:
        return f"Exercise {self.number} — {self.equation}: {self.task}"


# The exercise table (course/README.md explains each one in detail).
EXERCISES = [
    Exercise(1, "rloo.py", "rloo_advantages", "Eq. 12",
             "A = r - mean of the other G-1 rewards of the same prompt",
             "the leave-one-out baseline, and why a group whose rewards are all equal gives no signal", 10, 15),
    Exercise(2, "rloo.py", "rloo_loss", "Eq. 13-14",
             "L = -(1/total) sum A * log pi, advantages detached",
             "the REINFORCE surrogate loss and how micro-batch losses add up to the step's", 10, 15),
    Exercise(3, "rollout.py", "noise_scale", "§2",
             "sigma x the root mean square of all entries of the embedding matrix, as a float",
             "why the noise is scaled to the embeddings", 5, 10),
    Exercise(4, "rollout.py", "gaussian_log_prob", "Eq. 10",
             "log N(x; mean, sigma^2 I) summed over the last dim, constant included",
             "the closed-form density that makes a continuous CoT input an RL action", 10, 15),
    Exercise(5, "rollout.py", "soft_mean", "Eq. 3, 5",
             "mu = softmax(logits / tau) E, in float32, outside autocast",
             "the soft/fuzzy CoT input: a probability-weighted mixture of embeddings", 10, 20),
    Exercise(6, "rollout.py", "teacher_forced_logits", "§4",
             "one forward over [prompt; recorded steps]; position P+s-1 predicts step s",
             "teacher forcing: recomputing every step's distribution in one pass, no backprop through time",
             15, 30),
    Exercise(7, "data.py", "pass_at_k", "§7",
             "1 - C(n-c, k) / C(n, k) without huge binomials; ValueError on bad n, c, k",
             "the unbiased pass@k estimator", 10, 15),
    Exercise(8, "data.py", "reward", "Eq. 11",
             "100 correct boxed answer / 10 boxed but wrong / 0 no boxed answer",
             "the outcome reward: only the final answer is judged", 5, 10),
    Exercise(9, "train.py", "lr_at", "§5",
             "linear warm-up over args.warmup_steps, then cosine decay to 0 at args.steps",
             "the learning-rate schedule of the paper's training recipe", 5, 10),
    Exercise(10, "rollout.py", "categorical", "§2",
             "one categorical draw per row by inverting the CDF at the row's uniform u",
             "sampling without a host sync, from one random number per row", 10, 20, advanced=True),
    Exercise(11, "rollout.py", "StopMatcher.__init__", "§3",
             "the byte-level KMP table (m+1, V), done_state and brace_delta",
             "detecting the stop text on the device, a whole token at a time", 20, 45, advanced=True),
    Exercise(12, "model.py", "apply_rope", "RoPE",
             "rotate the two halves of each head: x*cos + rotate_half(x)*sin",
             "rotary position embeddings in the Hugging Face layout", 10, 20, advanced=True),
]


# --------------------------------------------------------------------------- make: the student copy

def repo_files(root: str) -> list[str]:
    """Tracked files plus untracked files that .gitignore does not exclude (paths relative to root)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=root,
                             capture_output=True, check=True).stdout.decode()
        files = [f for f in out.split("\0") if f]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: copy the tree, minus run outputs
        skip = {".git", "__pycache__", ".pytest_cache", "results"}
        files = []
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if d not in skip and not d.startswith("out")]
            files += [os.path.relpath(os.path.join(folder, n), root) for n in names if not n.endswith(".pyc")]
    return sorted(f for f in set(files) if os.path.isfile(os.path.join(root, f)))  # a deleted file is listed too


def find_function(tree: ast.Module, qualname: str):
    node, parts = tree, qualname.split(".")
    for part in parts:
        node = next((n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                     and n.name == part), None)
        if node is None:
            return None
    return node if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None


def stub_source(source: str, exercises: list[Exercise], filename: str) -> str:
    """`source` with the body of each exercise's function replaced by a `raise NotImplementedError`.

    The body's statements after the docstring are located with `ast` and cut out of the text line by line,
    so the rest of the file keeps its formatting and comments."""
    lines = source.splitlines(keepends=True)
    tree = ast.parse(source, filename)
    cuts = []
    for ex in exercises:
        fn = find_function(tree, ex.function)
        if fn is None:
            raise LookupError(f"{filename}: exercise {ex.number}'s function {ex.function} is not there")
        body = fn.body
        has_doc = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str)
        # 1-based first line to cut: after the docstring, or the first statement (comments above it stay:
        # without a docstring they are the function's description)
        first = body[0].end_lineno + 1 if has_doc else body[0].lineno
        if lines[body[0].lineno - 1][:body[0].col_offset].strip():
            raise ValueError(f"{filename}: {ex.function}'s body starts on its header's line; cannot stub it")
        last = body[-1].end_lineno
        indent = " " * (body[0].col_offset)
        stub = f"{indent}raise NotImplementedError({ex.message!r})\n"
        cuts.append((first, max(last, first - 1), stub))
    for first, last, stub in sorted(cuts, reverse=True):   # bottom-up, so earlier line numbers stay valid
        lines[first - 1:last] = [stub]
    new = "".join(lines)
    ast.parse(new, filename)  # the copy must still be valid Python
    return new


def make(out: str, root: str = REPO) -> list[str]:
    """Write the student copy of `root` into the new (or empty) folder `out`; returns the files written."""
    out = os.path.abspath(out)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise FileExistsError(f"{out} exists and is not an empty folder; choose another --out")
    if os.path.commonpath([out, os.path.abspath(root)]) == os.path.abspath(root):
        raise ValueError(f"{out} is inside the repository {root}; choose a folder outside it")
    by_file: dict[str, list[Exercise]] = {}
    for ex in EXERCISES:
        by_file.setdefault(ex.file, []).append(ex)
    files = repo_files(root)
    missing = [f for f in list(by_file) + [ex.grader for ex in EXERCISES] if f not in files]
    if missing:
        raise FileNotFoundError(f"not in {root}: {', '.join(missing)}")
    # stub everything first, so a failure leaves no half-written copy behind
    stubbed = {}
    for name, exs in by_file.items():
        with open(os.path.join(root, name), encoding="utf-8") as f:
            stubbed[name] = stub_source(f.read(), exs, name)
    for name in files:
        dest = os.path.join(out, name)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if name in stubbed:
            with open(dest, "w", encoding="utf-8") as f:
                f.write(stubbed[name])
            shutil.copymode(os.path.join(root, name), dest)
        else:
            shutil.copy2(os.path.join(root, name), dest)
    return files


# --------------------------------------------------------------------------- grade: run the graders

@dataclass
class Result:
    exercise: Exercise
    passed: int
    total: int
    errors: list[str]     # the exception type of each failed test, e.g. "NotImplementedError"
    messages: list[str]   # and its message, e.g. "NotImplementedError: Exercise 1 — Eq. 12: ..."

    @property
    def points(self) -> float:
        return self.exercise.points * self.passed / self.total if self.total else 0.0


def _exception_type(element) -> str:
    """The exception type of a junit <failure>/<error>: 'NotImplementedError' from the message
    'NotImplementedError: ...'; for a grader that could not even be imported, the traceback's last 'E' line."""
    message = element.get("message") or ""
    if message == "collection failure":
        raised = [line[1:].strip() for line in (element.text or "").splitlines() if line.startswith("E ")]
        message = next((line for line in reversed(raised) if ":" in line), "CollectionError")
    if message.startswith("assert"):
        return "AssertionError"
    head = message.split(":", 1)[0].strip()
    return head.split(".")[-1] if head.replace(".", "").isidentifier() else "Error"


def grade(folder: str = REPO) -> list[Result]:
    """Run every exercise's grader against `folder` in one pytest process; one Result per exercise."""
    folder = os.path.abspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder} is not a folder")
    missing = [ex.grader for ex in EXERCISES if not os.path.isfile(os.path.join(folder, ex.grader))]
    if missing:
        raise FileNotFoundError(f"graders missing in {folder}: {', '.join(missing)}")
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "junit.xml")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([folder] + [p for p in
                   os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]), PYTHONDONTWRITEBYTECODE="1")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", folder,
               "--continue-on-collection-errors", f"--junitxml={report}", "-o", "junit_family=xunit1",
               *[ex.grader for ex in EXERCISES]]
        try:
            proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"the graders ran past {TIMEOUT_S} s in {folder}: an endless loop in an exercise?")
        if not os.path.exists(report):
            raise RuntimeError(f"pytest wrote no report (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        by_file: dict[str, list] = {}   # grader path -> its junit <testcase> elements (xunit1 names the file)
        for case in ET.parse(report).getroot().iter("testcase"):
            by_file.setdefault(os.path.normpath(case.get("file", "")), []).append(case)
    results = []
    for ex in EXERCISES:
        cases = by_file.get(os.path.normpath(ex.grader), [])  # a grader that cannot be imported: one error case
        bad = [el for c in cases for el in c if el.tag in ("failure", "error")]
        failed = sum(1 for c in cases if any(el.tag in ("failure", "error") for el in c))
        total = sum(1 for c in cases if not any(el.tag == "skipped" for el in c))
        messages = [(el.get("message") or el.tag).splitlines()[0] for el in bad]
        results.append(Result(ex, total - failed, total, [_exception_type(el) for el in bad], messages))
    return results


def table(results: list[Result]) -> str:
    rows = [f"{'#':>3}  {'function':<28} {'where':<10} {'tests':>7}  {'points':>11}  failures"]
    for r in results:
        ex = r.exercise
        why = ", ".join(sorted(set(r.errors))) if r.errors else ""
        tests = f"{r.passed}/{r.total}" if r.total else "0/?"
        rows.append(f"{ex.number:>3}  {ex.function:<28} {ex.equation:<10} {tests:>7}  "
                    f"{r.points:>5.1f} / {ex.points:<3}  {why}")
    got, best = sum(r.points for r in results), sum(r.exercise.points for r in results)
    rows.append(f"total: {got:.1f} / {best} points")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print the exercises")
    mk = sub.add_parser("make", help="write a student copy of the repository")
    mk.add_argument("--out", required=True, help="a new or empty folder outside the repository")
    gr = sub.add_parser("grade", help="grade a student copy (default: this repository, the solutions)")
    gr.add_argument("folder", nargs="?", default=REPO)
    gr.add_argument("--json", help="also write the scores to this JSON file")
    args = ap.parse_args(argv)

    try:
        if args.command == "list":
            for ex in EXERCISES:
                tag = " (advanced)" if ex.advanced else ""
                print(f"{ex.number:>3}. {ex.file} {ex.function} [{ex.equation}] {ex.points} points, "
                      f"~{ex.minutes} min{tag}\n     {ex.task}\n     goal: {ex.goal}\n     grader: {ex.grader}")
        elif args.command == "make":
            files = make(args.out)
            print(f"wrote {len(files)} files to {os.path.abspath(args.out)}; "
                  f"{len(EXERCISES)} functions now raise NotImplementedError. Grade it with:\n"
                  f"  python course/exercises.py grade {os.path.abspath(args.out)}")
        else:
            results = grade(args.folder)
            print(table(results))
            if args.json:
                with open(args.json, "w") as f:
                    json.dump([{"exercise": r.exercise.number, "function": r.exercise.function,
                                "passed": r.passed, "total": r.total, "points": r.points,
                                "max_points": r.exercise.points, "errors": r.errors, "messages": r.messages}
                               for r in results], f, indent=1)
    except (OSError, ValueError, LookupError, RuntimeError, SyntaxError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
