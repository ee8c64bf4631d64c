"""The repository stands alone: every `§N` and `Eq. N` cited in its code and docs resolves to a heading of
docs/paper.md, and no file points at a path outside the repository."""

import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_NOTES = os.path.join(ROOT, "docs", "paper.md")
THIS_FILE = os.path.relpath(os.path.abspath(__file__), ROOT)  # its examples and patterns are not citations

DASH = r"\s*[-–]\s*"
SECTION = re.compile(rf"§\s*(\d+)(?:{DASH}§?\s*(\d+))?")                # §5, §4-§5, §4–5
EQUATION = re.compile(rf"\bEqs?\.\s*(\d+)(?:{DASH}(\d+))?")              # Eq. 10, Eq. 12-14, Eqs. 5–6
# A path into the tree beside the repository (../shared/data/..., ../other/x), this machine's /work/..., or the
# specification files that live beside the repository, not in it (PAPER.md, PEERS.md; the repository's own notes
# are docs/paper.md). A bare "../x" is no folder outside: tests use such strings as bad input.
OUTSIDE = re.compile(r"(?<![\w.])\.\./[\w.-]+/|/work/|(?<![\w/.-])(?:PAPER|PEERS)\.md\b")


def repo_files() -> list[str]:
    """Tracked files plus new ones git would track (not ignored); every file under ROOT without git."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
        files = [f for f in out.splitlines() if os.path.isfile(os.path.join(ROOT, f))]  # minus deleted ones
    except (OSError, subprocess.CalledProcessError):
        files = [os.path.relpath(os.path.join(d, f), ROOT) for d, _, names in os.walk(ROOT) for f in names
                 if not any(p.startswith(".") and p != "." or p == "__pycache__"
                            for p in os.path.relpath(d, ROOT).split(os.sep))]
    return sorted(f for f in files if f != THIS_FILE)


def read_text(path: str) -> str | None:
    try:
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError:  # a binary file (a figure): it cites nothing
        return None


def expand(match) -> range:
    first, last = int(match.group(1)), int(match.group(2) or match.group(1))
    return range(first, last + 1)


def citations(text: str) -> tuple[set[int], set[int]]:
    """(sections, equations) cited in `text`; a range cites every number in it."""
    return ({n for m in SECTION.finditer(text) for n in expand(m)},
            {n for m in EQUATION.finditer(text) for n in expand(m)})


def anchors(notes: str) -> tuple[set[int], set[int]]:
    """(sections, equations) that docs/paper.md defines: headings "## §N ..." and "### Eq. N"."""
    headings = [line.lstrip("#").strip() for line in notes.splitlines() if line.startswith("#")]
    return ({int(m.group(1)) for h in headings if (m := re.match(r"§(\d+)\b", h))},
            {int(m.group(1)) for h in headings if (m := re.fullmatch(r"Eq\. (\d+)", h))})


def unresolved(files: dict[str, str], notes: str) -> list[str]:
    have_sections, have_equations = anchors(notes)
    missing = []
    for path, text in files.items():
        for lineno, line in enumerate(text.splitlines(), 1):
            sections, equations = citations(line)
            missing += [f"{path}:{lineno}: §{n}" for n in sorted(sections - have_sections)]
            missing += [f"{path}:{lineno}: Eq. {n}" for n in sorted(equations - have_equations)]
    return missing


def test_citation_parser_reads_single_numbers_ranges_and_both_spellings():
    assert citations("PAPER.md §2-§4, docs/paper.md §7, (§3, Eq. 11)") == ({2, 3, 4, 7}, {11})
    assert citations("Eq. 12-14 and Eq. 5–6; Eqs. 9 – 10; §4–5") == ({4, 5}, {5, 6, 9, 10, 12, 13, 14})
    assert citations("no citation: section 3, equation 4, Equity. 5") == (set(), set())


def test_a_citation_the_notes_lack_is_reported_with_its_line():
    notes = "# Notes\n## §1 Notation\n### Eq. 3\n## §2 Inputs\n### Eq. 5\nsee Eq. 7 (not a heading)\n"
    assert anchors(notes) == ({1, 2}, {3, 5})
    files = {"a.py": '"""PAPER.md §1, Eq. 3"""\nx = 1  # §2 (Eq. 5-6)\n', "b.md": "§3\n"}
    assert unresolved(files, notes) == ["a.py:2: Eq. 6", "b.md:1: §3"]


def test_every_section_and_equation_cited_in_the_repo_resolves_in_the_paper_notes():
    with open(PAPER_NOTES, encoding="utf-8") as f:
        notes = f.read()
    sections, equations = anchors(notes)
    assert sections >= set(range(1, 9)) and equations >= {3, 10, 11, 12, 13, 14}  # the notes are not empty
    files = {p: read_text(p) or "" for p in repo_files() if p.endswith((".py", ".md"))}
    assert "rloo.py" in files and "README.md" in files
    assert unresolved(files, notes) == []


def outside_references(path: str, text: str) -> list[str]:
    """"path:line: 'match'" for each reference in `text` to something outside the repository (a relative
    "../" link from a subfolder that stays inside the repository, e.g. course/ -> ../docs/, is fine)."""
    inside = lambda ref: ref.startswith("../") and not os.path.normpath(os.path.join(os.path.dirname(path), ref)).startswith("..")
    return [f"{path}:{lineno}: {m.group(0)!r}" for lineno, line in enumerate(text.splitlines(), 1)
            for m in OUTSIDE.finditer(line) if not inside(m.group(0))]


@pytest.mark.parametrize("line, bad", [("--data-path ../shared/data/gsm8k", True), ("see PAPER.md §5", True),
                                       ("(PEERS.md)", True), ("/work/shared/x", True), ("../other/x.py", True),
                                       ("see docs/paper.md §5", False), ('cd "$(dirname "$0")/.."', False),
                                       ('"--dataset", "../x"', False), ("writes results/report.md", False)])
def test_outside_references_are_recognised(line, bad):
    assert bool(outside_references("bench.py", line)) == bad
    assert not outside_references("course/README.md", "[notes](../docs/paper.md)")
    assert outside_references("course/README.md", "[x](../../shared/x.md)")


def test_no_file_refers_to_a_path_outside_the_repository():
    problems = [p for path in repo_files() for p in outside_references(path, read_text(path) or "")]
    assert problems == []
