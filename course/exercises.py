"""The course's exercises: make a student copy of the repository, and grade one.

    python course/exercises.py list                    # the exercises
    python course/exercises.py make --out /tmp/student # a copy with the exercise functions' bodies removed
    python course/exercises.py grade /tmp/student      # grade the exercise files there, print the scores
    python course/exercises.py grade /tmp/student --exercise 1   # only exercise 1, with every failing check
    python course/exercises.py grade                   # the same on this repository: full marks

The student copy is the set of files git tracks in this repository, in which the body of each function below
is replaced by `raise NotImplementedError("Exercise N — Eq. K: ...")`; its signature and docstring stay.
Students edit the real files, so `train.py` then runs on *their* code. Nothing is hidden: this repository is
the solution key.

Each exercise has its own grader, course/graders/test_exNN_<name>.py, which calls that exercise's function and
no other exercise's, and checks it against independent references (hand-computed values, torch.distributions,
brute force, autograd on a naive form). `grade DIR` trusts nothing in DIR but the exercise files (rloo.py,
rollout.py, data.py, train.py, model.py): for each exercise it builds a fresh temporary tree from *this*
repository (its graders, conftest and every other file), copies DIR's exercise files into it, and runs that
exercise's grader there in its own pytest process, with no configuration file and a time limit (--timeout).
An exercise scores its points times the share of its grader's tests that pass. `grade` exits 0 whatever the
score, and 2 when it cannot grade (no such folder, an exercise file missing, pytest not producing its report).
"""

import argparse
import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRADERS = "course/graders"  # relative to the repository root, as git lists files
TIMEOUT_S = 120             # per exercise; a grader takes a few seconds, a student's endless loop must not hang


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
             "A = r - mean of the other G-1 rewards of the same prompt; ValueError if G < 2",
             "the leave-one-out baseline, and why a group whose rewards are all equal gives no signal", 10, 15),
    Exercise(2, "rloo.py", "rloo_loss", "Eq. 13-14",
             "L = -(1/total) sum A * log pi, advantages detached",
             "the REINFORCE surrogate loss and how micro-batch losses add up to the step's", 10, 15),
    Exercise(3, "rollout.py", "noise_scale", "§2",
             "sigma x the root mean square of all entries of the embedding matrix, in float32, as a float",
             "why the noise is scaled to the embeddings", 5, 10),
    Exercise(4, "rollout.py", "gaussian_log_prob", "Eq. 10",
             "log N(x; mean, sigma^2 I) summed over the last dim, constant included",
             "the closed-form density that makes a continuous CoT input an RL action", 10, 15),
    Exercise(5, "rollout.py", "soft_mean", "Eq. 3, 5",
             "mu = softmax(logits / tau) E, in float32, outside autocast",
             "the soft/fuzzy CoT input: a probability-weighted mixture of embeddings", 10, 20),
    Exercise(6, "rollout.py", "teacher_forced_logits", "§4",
             "one forward over [prompt; recorded steps]; position P+s-1 predicts step s; "
             "E from getattr(model, 'module', model)",
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
             "one draw per row: the first token whose cumulative probability exceeds u x the row's total",
             "sampling without a host sync, from one random number per row", 10, 20, advanced=True),
    Exercise(11, "rollout.py", "StopMatcher.__init__", "§3",
             "the byte-level KMP table (m+1, V), done_state and brace_delta",
             "detecting the stop text on the device, a whole token at a time", 20, 45, advanced=True),
    Exercise(12, "model.py", "apply_rope", "RoPE",
             "rotate the two halves of each head: x*cos + rotate_half(x)*sin",
             "rotary position embeddings in the Hugging Face layout", 10, 20, advanced=True),
]


# --------------------------------------------------------------------------- make: the student copy

def repo_files(root: str, untracked: bool = False) -> list[str]:
    """The files git tracks in `root`, and with `untracked` also the untracked files .gitignore does not exclude
    (paths relative to root). A tracked file deleted from the working tree is left out."""
    listing = ["git", "ls-files", "-z"] + (["--cached", "--others", "--exclude-standard"] if untracked else [])
    try:
        proc = subprocess.run(listing, cwd=root, capture_output=True)
    except OSError:
        raise SystemExit("git is not installed: the student copy and the grading tree are the files git lists "
                         "in the repository; install git")
    if proc.returncode != 0:
        said = (proc.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[0]
        raise SystemExit(f"{root} is not a git checkout git can read ({said}): the student copy and the grading "
                         "tree are the files git lists there; run this from a clone of the repository")
    out = proc.stdout.decode()
    return sorted(f for f in set(out.split("\0")) if f and os.path.isfile(os.path.join(root, f)))


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
    """Write the student copy of `root` (the files git tracks: run outputs lying around stay out) into the new
    (or empty) folder `out`; returns the files written."""
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
    total: int              # 0 when the grader timed out before pytest could count its tests
    errors: list[str]       # the exception type of each failed test, e.g. "NotImplementedError"
    messages: list[str]     # and its message, e.g. "AssertionError: rloo_advantages(...): got ..., expected ..."
    failed_tests: list[str]  # and its name, e.g. "test_hand_computed"
    report: str             # pytest's output: every failing check in full

    @property
    def points(self) -> float:
        return self.exercise.points * self.passed / self.total if self.total else 0.0


def _failure_message(element) -> str:
    """One line for a junit <failure>/<error>: 'NotImplementedError: Exercise 1 — ...', or the grader's own
    'AssertionError: <check>: got ..., expected ...' without the introspection pytest appends after it; for a
    grader that could not even be imported, the traceback's last 'E' line (e.g. the student's SyntaxError)."""
    message = element.get("message") or element.tag
    if message == "collection failure":
        raised = [line[1:].strip() for line in (element.text or "").splitlines() if line.startswith("E ")]
        message = next((line for line in reversed(raised) if ":" in line), "CollectionError")
    return " ".join(message.split("\nassert ", 1)[0].split())


def _exception_type(message: str) -> str:
    if message.startswith("assert"):
        return "AssertionError"
    head = message.split(":", 1)[0].strip()
    return head.split(".")[-1] if head.replace(".", "").isidentifier() else "Error"


def submitted_sources(folder: str) -> dict[str, bytes]:
    """The exercise files of the submission in `folder`: the only thing grading takes from it."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder} is not a folder")
    sources = {}
    for name in sorted({ex.file for ex in EXERCISES}):
        path = os.path.join(folder, name)
        if os.path.islink(path) or not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing or not a plain file: a submission is a student copy "
                                    "(python course/exercises.py make) with the exercise files filled in")
        with open(path, "rb") as f:
            sources[name] = f.read()
    return sources


def _end_process_group(proc: subprocess.Popen):
    """Kill the grader's process group: pytest, and anything the submission's code started and left running."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_grader(ex: Exercise, sources: dict[str, bytes], instructor_files: list[str], timeout_s: float) -> Result:
    """`ex`'s grader in its own pytest process, in a fresh tree of this repository's files with the submission's
    exercise files in place of ours; no configuration file but an empty one, no plugins but pytest's own."""
    with tempfile.TemporaryDirectory(prefix="grade-", ignore_cleanup_errors=True) as tmp:
        tree, report, log = os.path.join(tmp, "tree"), os.path.join(tmp, "junit.xml"), os.path.join(tmp, "log")
        for name in instructor_files:
            os.makedirs(os.path.dirname(os.path.join(tree, name)), exist_ok=True)
            shutil.copy2(os.path.join(REPO, name), os.path.join(tree, name))
        for name, source in sources.items():
            with open(os.path.join(tree, name), "wb") as f:
                f.write(source)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
        env.update(PYTHONDONTWRITEBYTECODE="1", PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
        cmd = [sys.executable, "-m", "pytest", "-q", "-c", os.devnull, "--rootdir", tree, "--confcutdir", tree,
               "-p", "no:cacheprovider", f"--junitxml={report}", "-o", "junit_family=xunit1", ex.grader]
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                proc.wait(timeout=timeout_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _end_process_group(proc)
        with open(log, errors="replace") as f:
            output = f.read()
        if timed_out:
            why = (f"Timeout: exercise {ex.number}'s grader ran past {timeout_s:g} s (an endless loop?); every "
                   "test of it counts as failed")
            return Result(ex, 0, 0, ["Timeout"], [why], [""], output)
        if not os.path.exists(report):
            raise RuntimeError(f"pytest wrote no report for {ex.grader} (exit {proc.returncode}):\n{output}")
        cases = list(ET.parse(report).getroot().iter("testcase"))  # a grader that cannot be imported: one error
    # a case's first <failure>/<error> (a failed test can also fail its teardown: one failure all the same)
    firsts = [(c, next((el for el in c if el.tag in ("failure", "error")), None)) for c in cases]
    failed = [(c, el) for c, el in firsts if el is not None]
    messages = [_failure_message(el) for _, el in failed]
    total = sum(1 for c in cases if not any(el.tag == "skipped" for el in c))
    return Result(ex, total - len(failed), total, [_exception_type(m) for m in messages], messages,
                  [c.get("name", "") for c, _ in failed], output)


def grade(folder: str = REPO, numbers: list[int] | None = None, timeout_s: float = TIMEOUT_S) -> list[Result]:
    """Grade the exercise files in `folder` (all exercises, or those `numbers`); one Result per exercise."""
    sources = submitted_sources(os.path.abspath(folder))
    instructor_files = repo_files(REPO, untracked=True)  # the instructor's working tree, uncommitted edits too
    chosen = [ex for ex in EXERCISES if numbers is None or ex.number in numbers]
    return [run_grader(ex, sources, instructor_files, timeout_s) for ex in chosen]


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


def first_failures(results: list[Result], folder: str, limit: int = 600) -> str:
    """For each exercise the student has started and not yet got right: its first failing check (what it
    called, what came back, what was expected) and the command that shows every failing check in full."""
    blocks = []
    for r in results:
        started = [(test, message) for test, error, message in zip(r.failed_tests, r.errors, r.messages)
                   if error != "NotImplementedError"]
        if not started:
            continue
        test, message = started[0]
        message = message if len(message) <= limit else message[:limit] + " …"
        where = f"; the first, {test}" if test else ""
        blocks.append(f"exercise {r.exercise.number}, {r.exercise.function}: {len(r.errors)} failing "
                      f"test{'s' if len(r.errors) != 1 else ''}{where}:\n    {message}\n"
                      f"  every failing test in full: python course/exercises.py grade {folder} "
                      f"--exercise {r.exercise.number}")
    return "\n".join(blocks)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print the exercises")
    mk = sub.add_parser("make", help="write a student copy of the repository")
    mk.add_argument("--out", required=True, help="a new or empty folder outside the repository")
    gr = sub.add_parser("grade", help="grade a student copy (default: this repository, the solutions)")
    gr.add_argument("folder", nargs="?", default=REPO)
    gr.add_argument("--exercise", type=int, nargs="+", metavar="N",
                    help="grade only these exercises, and print every failing check of theirs in full")
    gr.add_argument("--timeout", type=float, default=TIMEOUT_S, metavar="S",
                    help=f"seconds each exercise's grader may run; past it the exercise scores 0 (default "
                         f"{TIMEOUT_S})")
    gr.add_argument("--json", help="also write the scores to this JSON file")
    args = ap.parse_args(argv)
    if args.command == "grade":
        unknown = sorted(set(args.exercise or []) - {ex.number for ex in EXERCISES})
        if unknown:
            ap.error(f"no exercise {', '.join(map(str, unknown))}; `python course/exercises.py list` lists them")
        if args.timeout <= 0:
            ap.error(f"--timeout must be positive, not {args.timeout:g}")

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
            untracked = sorted(set(repo_files(REPO, untracked=True)) - set(files))
            if untracked:
                print(f"left out {len(untracked)} untracked file(s) (git add them to hand them out): "
                      f"{', '.join(untracked[:10])}{' …' if len(untracked) > 10 else ''}")
        else:
            folder = os.path.abspath(args.folder)
            results = grade(folder, args.exercise, args.timeout)
            print(table(results))
            failures = first_failures(results, folder)
            if failures:
                print("\n" + failures)
            for r in results if args.exercise else []:
                print(f"\n---- exercise {r.exercise.number}, pytest's report of {r.exercise.grader} ----\n"
                      f"{r.report.rstrip()}")
            if args.json:
                with open(args.json, "w") as f:
                    json.dump([{"exercise": r.exercise.number, "function": r.exercise.function,
                                "passed": r.passed, "total": r.total, "points": r.points,
                                "max_points": r.exercise.points, "errors": r.errors, "messages": r.messages,
                                "failed_tests": r.failed_tests} for r in results], f, indent=1)
    except (OSError, ValueError, LookupError, RuntimeError, SyntaxError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
