import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
from fractions import Fraction

import pytest

import data
from data import Problem, build_prompt, extract_boxed, is_correct, load_dataset, pass_at_k, reward


# --- pass@k -------------------------------------------------------------------

def test_pass_at_k_matches_enumeration():
    for n in range(1, 9):
        for c in range(n + 1):
            samples = [1] * c + [0] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(samples, k))
                brute = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12), (n, c, k)


def test_pass_at_k_edges_and_errors():
    assert pass_at_k(32, 0, 32) == 0.0
    assert pass_at_k(32, 1, 32) == 1.0
    assert pass_at_k(32, 8, 1) == pytest.approx(0.25)
    assert 0.0 < pass_at_k(10_000, 1, 5) < 1.0  # no overflow from huge binomials
    for n, c, k in [(4, 0, 5), (4, 5, 1), (4, -1, 1), (4, 1, 0)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


# --- extraction, checking, reward (Eq. 11) --------------------------------------
# (text after the prompt, gold label, expected reward). 100: correct, 10: boxed but wrong, 0: no boxed answer.

END = "The final answer is: \\boxed{"
GSM8K_CASES = [
    (f"Janet sells 16 - 3 - 4 = 9 eggs and makes 9 * 2 = 18 dollars. {END}18}}.", "18", 100),
    ("\\boxed{18}", "18", 100),
    (f"{END}17}}.", "18", 10),
    (f"{END}1,234}}.", "1234", 100),
    (f"{END}1234}}.", "1234", 100),
    (f"{END}1{{,}}234}}.", "1234", 100),
    (f"{END}1,000,000}}.", "1000000", 100),
    (f"{END}10}}.", "1000000", 10),
    (f"{END}\\$18}}.", "18", 100),
    (f"{END}18 \\text{{ dollars}}}}.", "18", 100),
    (f"{END}18.00}}.", "18", 100),
    (f"{END}18.5}}.", "18", 10),
    (f"{END}018}}.", "18", 100),
    (f"{END}+18}}.", "18", 100),
    (f"{END}-3}}.", "-3", 100),
    (f"{END}\u22123}}.", "-3", 100),  # unicode minus
    (f"{END}3}}.", "-3", 10),
    (f"{END}-3}}.", "3", 10),
    (f"{END}0.5}}.", "0.5", 100),
    (f"{END}\\frac{{1}}{{2}}}}.", "0.5", 100),
    (f"{END}\\frac12}}.", "0.5", 100),
    (f"{END}1/2}}.", "0.5", 100),
    (f"{END}36/2}}.", "18", 100),
    (f"{END}9 \\times 2}}.", "18", 100),
    (f"{END}50\\%}}.", "50", 100),
    (f"{END}x = 5}}.", "5", 100),
    (f"{END}x = 6}}.", "5", 10),
    (f"{END}eighteen}}.", "18", 10),
    (f"{END}18-}}.", "18", 10),
    (f"{END}3.14159}}.", "3.14159", 100),
    ("no boxed answer here, just 18", "18", 0),
    ("The final answer is: 18.", "18", 0),
    (f"{END}18", "18", 0),  # answer budget ran out before the brace closed
    (f"{END}}}.", "18", 0),  # empty box
    (f"{END} }}.", "18", 0),
    (f"First \\boxed{{12}}, then {END}18}}.", "18", 100),  # the last box counts
    (f"First \\boxed{{18}}, then {END}12}}.", "18", 10),
    (f"First \\boxed{{18}}, then {END}1", "18", 0),  # the last box is unclosed: no fallback to earlier ones
    (f"{END}\\boxed{{18}}}}.", "18", 100),
    ("\\fbox{18}", "18", 100),
    ("The answer is \\boxed 18.", "18", 100),
    ("The answer is \\boxed {18}.", "18", 100),
    (f"{END}18}}}}.", "18", 100),  # a stray closing brace after the box
    (f"{END}18}}.\n\nUser: what is 2+2? Assistant: \\boxedx", "18", 0),  # \boxedx is not \boxed
]
MATH_CASES = [
    (f"{END}\\frac{{1}}{{2}}}}.", "\\frac{1}{2}", 100),
    (f"{END}\\dfrac{{3}}{{4}}}}.", "\\frac{3}{4}", 100),
    (f"{END}\\dfrac{{3}}{{4}}}}.", "0.75", 100),
    (f"{END}0.75}}.", "\\frac{3}{4}", 100),
    (f"{END}\\frac34}}.", "\\frac{3}{4}", 100),
    (f"{END}\\frac{{3}}{{5}}}}.", "\\frac{3}{4}", 10),
    (f"{END}-\\frac{{1}}{{2}}}}.", "-\\frac12", 100),
    (f"{END}\\frac{{-1}}{{2}}}}.", "-\\frac{1}{2}", 100),
    (f"{END}\\frac{{1}}{{2}}}}.", "-\\frac12", 10),
    (f"{END}\\frac{{1}}{{2}}", "\\frac{1}{2}", 0),  # unbalanced
    (f"{END}\\frac{{\\sqrt{{\\frac{{1}}{{2}}}}}}{{2}}}}.", "\\frac{\\sqrt{2}}{4}", 100),  # nested braces
    (f"{END}90^\\circ}}.", "90", 100),
    (f"{END}90^{{\\circ}}}}.", "90^\\circ", 100),
    (f"{END}90}}.", "90^\\circ", 100),
    (f"{END}45^\\circ}}.", "90^\\circ", 10),
    (f"{END}[1,3)}}.", "[1,3)", 100),
    (f"{END}(1,3]}}.", "[1,3)", 10),
    (f"{END}(-\\infty, 2]}}.", "(-\\infty,2]", 100),
    (f"{END}(-\\infty, 2)}}.", "(-\\infty,2]", 10),
    (f"{END}x = 5}}.", "5", 100),
    (f"{END}5 \\text{{ cm}}}}.", "5", 100),
    (f"{END}5}}.", "5\\text{ cm}", 100),
    (f"{END}5 \\text{{ cm}}^2}}.", "5", 100),
    (f"{END}6 \\text{{ cm}}}}.", "5\\text{ cm}", 10),
    (f"{END}\\sqrt{{2}}/2}}.", "\\frac{\\sqrt{2}}{2}", 100),
    (f"{END}2\\sqrt{{2}}}}.", "\\sqrt{8}", 100),
    (f"{END}\\frac{{\\sqrt{{3}}}}{{2}}}}.", "\\frac{\\sqrt3}{2}", 100),
    (f"{END}0.866}}.", "\\frac{\\sqrt3}{2}", 10),
    (f"{END}\\left( 3, \\frac{{\\pi}}{{2}} \\right)}}.", "\\left( 3, \\frac{\\pi}{2} \\right)", 100),
    (f"{END}(3, \\pi/2)}}.", "\\left( 3, \\frac{\\pi}{2} \\right)", 100),
    (f"{END}(\\frac{{\\pi}}{{2}}, 3)}}.", "\\left( 3, \\frac{\\pi}{2} \\right)", 10),
    (f"{END}\\text{{(C)}}}}.", "\\text{(C)}", 100),
    (f"{END}C}}.", "\\text{(C)}", 100),
    (f"{END}B}}.", "\\text{(C)}", 10),
    (f"{END}\\text{{Evelyn}}}}.", "\\text{Evelyn}", 100),
    (f"{END}p - q}}.", "p - q", 100),
    (f"{END}q - p}}.", "p - q", 10),
    (f"{END}x^2+1}}.", "1+x^2", 100),
    (f"{END}6\\pi}}.", "6\\pi", 100),
    (f"{END}\\pi}}.", "6\\pi", 10),
    (f"{END}\\{{1,2\\}}}}.", "1,2", 100),  # escaped braces inside the box
    (f"{END}2, 1}}.", "1, 2", 100),
    (f"{END}1, 3}}.", "1, 2", 10),
    (f"{END}12\\%}}.", "12", 100),
    (f"{END}10^{{10}}}}.", "10000000000", 100),
    (f"{END}27}}.", "3^3", 100),
    (f"{END}\\infty}}.", "\\infty", 100),
    (f"{END}3 + 2i}}.", "3+2i", 100),
    (f"{END}3 - 2i}}.", "3+2i", 10),
    (f"{END}\\begin{{pmatrix}} 1 \\\\ 2 \\end{{pmatrix}}}}.", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", 100),
    (f"{END}\\begin{{pmatrix}} 1 \\\\ 3 \\end{{pmatrix}}}}.", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", 10),
    (f"{END}\\$1.50}}.", "1.5", 100),
    ("Since $x = \\boxed{7}$ and $y = 2$, the sum is 9.", "7", 100),
]


def test_case_tables_are_big_enough():
    assert len(GSM8K_CASES) >= 40 and len(MATH_CASES) >= 40
    for cases in (GSM8K_CASES, MATH_CASES):  # every outcome is exercised
        assert {r for _, _, r in cases} == {0, 10, 100}


@pytest.mark.parametrize("text,label,expected", GSM8K_CASES + MATH_CASES)
def test_reward_table(text, label, expected):
    assert reward(text, label) == expected
    pred = extract_boxed(text)
    assert (pred is not None) == (expected > 0)
    if pred is not None:
        assert is_correct(pred, label) == (expected == 100)


def test_extract_boxed_exact_content():
    assert extract_boxed("The final answer is: \\boxed{42}.") == "42"
    assert extract_boxed("\\boxed{\\frac{a}{b}} and \\boxed{\\sqrt{\\frac{1}{2}}}") == "\\sqrt{\\frac{1}{2}}"
    assert extract_boxed("\\boxed{ 7 }") == "7"
    assert extract_boxed("\\boxed{\\{1, 2\\}}") == "\\{1, 2\\}"
    assert extract_boxed("\\boxed{a \\} b") is None  # \} is literal: the box never closes
    assert extract_boxed("\\boxed{\\boxed{3}}") == "3"
    assert extract_boxed("\\boxed") is None
    assert extract_boxed("") is None


def test_checking_works_outside_the_main_thread():
    # Math-Verify's signal-based timeouts raise in other threads unless turned off; we turn them off there.
    result = []
    check = lambda: result.append((is_correct("\\frac{6}{4}", "1.5"), reward(f"{END}2}}.", "3")))
    thread = threading.Thread(target=check)
    thread.start()
    thread.join()
    assert result == [(True, 10.0)]


def test_adversarial_answer_is_bounded_by_the_timeout():
    start = time.time()
    assert reward(f"{END}9^{{9^{{9^{{9^{{9}}}}}}}}}}.", "5") == 10.0  # a power tower sympy would never finish
    assert time.time() - start < 6 * data.TIMEOUT_S


# --- arithmetic -----------------------------------------------------------------

def evaluate(expr: str) -> Fraction:
    """A tiny recursive-descent evaluator for + - * / and parentheses, in exact fractions."""
    tokens = re.findall(r"\d+|[-+*/()]", expr)
    assert "".join(tokens) == expr.replace(" ", ""), f"unexpected characters in {expr!r}"
    pos = 0

    def take():
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def atom():
        tok = take()
        if tok == "(":
            value = total()
            assert take() == ")"
            return value
        return Fraction(int(tok))

    def product():
        value = atom()
        while pos < len(tokens) and tokens[pos] in "*/":
            value = value * atom() if take() == "*" else value / atom()
        return value

    def total():
        value = product()
        while pos < len(tokens) and tokens[pos] in "+-":
            value = value + product() if take() == "+" else value - product()
        return value

    value = total()
    assert pos == len(tokens)
    return value


def solve_question(question: str) -> Fraction:
    """Read the word problem sentence by sentence, independently of the generator's code."""
    x = None
    for sentence in re.split(r"(?<=[.?]) ", question):
        if m := re.fullmatch(r"\w+ has (\d+) \w+\.", sentence):
            x = Fraction(int(m[1]))
        elif m := re.fullmatch(r"\w+ finds (\d+) more \w+\.", sentence):
            x += int(m[1])
        elif m := re.fullmatch(r"\w+ gives away (\d+) \w+\.", sentence):
            x -= int(m[1])
        elif m := re.fullmatch(r"\w+ buys (\d+) bags with (\d+) \w+ each\.", sentence):
            x += int(m[1]) * int(m[2])
        elif m := re.fullmatch(r"Then the number of \w+ (doubles|triples)\.", sentence):
            x *= 2 if m[1] == "doubles" else 3
        elif re.fullmatch(r"\w+ gives half of the \w+ to a friend\.", sentence):
            x /= 2
        else:
            assert re.fullmatch(r"How many \w+ does \w+ have now\?", sentence), sentence
        assert x >= 0
    return x


@pytest.mark.parametrize("difficulty", [1, 2, 4])
def test_arithmetic_answers_are_right(difficulty):
    for split in ("train", "validation", "test"):
        for problem, expr in data.arithmetic_problems(split, seed=3, difficulty=difficulty, n=300):
            value = evaluate(expr)
            assert value.denominator == 1 and value >= 0
            assert problem.answer == str(value.numerator) == str(solve_question(problem.question))
            assert expr.count("(") == difficulty  # one operation per step


def test_arithmetic_splits_sizes_disjoint_deterministic():
    splits = {s: load_dataset("arithmetic", s) for s in ("train", "validation", "test")}
    assert {s: len(p) for s, p in splits.items()} == {"train": 5000, "validation": 200, "test": 500}
    questions = {s: {p.question for p in ps} for s, ps in splits.items()}
    assert all(len(questions[s]) == len(splits[s]) for s in splits)  # no duplicates within a split
    assert not questions["train"] & questions["validation"]
    assert not questions["train"] & questions["test"]
    assert not questions["validation"] & questions["test"]
    # disjoint across seeds too: the split is a function of the question text
    assert not questions["train"] & {p.question for p in load_dataset("arithmetic", "test", seed=1)}
    assert load_dataset("arithmetic", "test") == splits["test"]
    assert load_dataset("arithmetic", "test", seed=1) != splits["test"]
    assert load_dataset("arithmetic", "test", difficulty=2) != splits["test"]
    assert load_dataset("arithmetic", "test", limit=7) == splits["test"][:7]
    assert max(int(p.answer) for p in splits["test"]) <= 30  # difficulty 1 keeps the numbers small


def test_arithmetic_is_the_same_in_a_fresh_process():
    code = "import data; print([p.question for p in data.load_dataset('arithmetic', 'validation', limit=5)])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.abspath(data.__file__)), env={"PYTHONHASHSEED": "123"}).stdout
    assert out.strip() == str([p.question for p in load_dataset("arithmetic", "validation", limit=5)])


def test_arithmetic_reports_an_exhausted_problem_space():
    with pytest.raises(ValueError, match="could only make"):
        data.arithmetic_problems("test", n=5000)  # difficulty 1 has ~3,000 distinct test questions


def test_arithmetic_bad_arguments():
    with pytest.raises(ValueError, match="splits"):
        load_dataset("arithmetic", "dev")
    with pytest.raises(ValueError, match="difficulty"):
        load_dataset("arithmetic", "test", difficulty=0)
    with pytest.raises(ValueError, match="no --data-path"):
        load_dataset("arithmetic", "test", data_path="x.jsonl")


# --- files --------------------------------------------------------------------

GSM8K_ROWS = [
    {"question": "Janet has 16 eggs and eats 3. How many are left?", "answer": "16 - 3 = <<16-3=13>>13\n#### 13"},
    {"question": "A shop sells 1,234 pens a day. How many?", "answer": "It sells 1,234.\n#### 1,234"},
    {"question": "It is cold: -5 plus 2?", "answer": "#### -3"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_gsm8k_jsonl_file(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", GSM8K_ROWS)
    problems = load_dataset("gsm8k", "test", data_path=path)
    assert problems == [Problem(GSM8K_ROWS[0]["question"], "13"), Problem(GSM8K_ROWS[1]["question"], "1234"),
                        Problem(GSM8K_ROWS[2]["question"], "-3")]
    assert load_dataset("gsm8k", "test", data_path=path, limit=2) == problems[:2]


def test_gsm8k_folder_and_validation_carve_out(tmp_path):
    rows = [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(250)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "test.jsonl", GSM8K_ROWS)
    train = load_dataset("gsm8k", "train", data_path=str(tmp_path))
    validation = load_dataset("gsm8k", "validation", data_path=str(tmp_path))
    assert [p.answer for p in train] == [str(i) for i in range(50)]
    assert [p.answer for p in validation] == [str(i) for i in range(50, 250)]
    assert len(load_dataset("gsm8k", "test", data_path=str(tmp_path))) == 3
    write_jsonl(tmp_path / "train.jsonl", rows[:200])
    with pytest.raises(ValueError, match="too few to hold out 200"):
        load_dataset("gsm8k", "train", data_path=str(tmp_path))


def test_single_file_train_and_validation_are_disjoint_hash_splits(tmp_path, capsys):
    """A lone file must never give validation problems that are also trained on (it used to give both
    splits the whole file)."""
    rows = [{"question": f"Problem number {i}?", "answer": f"#### {i}"} for i in range(300)]
    path = write_jsonl(tmp_path / "all.jsonl", rows)
    train = load_dataset("gsm8k", "train", data_path=path)
    validation = load_dataset("gsm8k", "validation", data_path=path)
    questions = lambda ps: {p.question for p in ps}  # noqa: E731
    assert not questions(train) & questions(validation)
    assert questions(train) | questions(validation) == {r["question"] for r in rows}
    assert 10 <= len(validation) <= 50  # about 1 in 10
    assert all(data.hash_split(p.question) == "validation" for p in validation)
    # fixed by the question, not by its place in the file: reversing the file keeps every split
    write_jsonl(tmp_path / "reversed.jsonl", rows[::-1])
    assert questions(load_dataset("gsm8k", "validation", data_path=str(tmp_path / "reversed.jsonl"))) \
        == questions(validation)
    err = capsys.readouterr().err
    assert f"data: {path} is one file; its validation split is the {len(validation)} problems" in err
    assert len(load_dataset("gsm8k", "test", data_path=path)) == 300  # as the test split, all of it
    one = write_jsonl(tmp_path / "one.jsonl", rows[:1])
    other = {"train": "validation", "validation": "train"}[data.hash_split(rows[0]["question"])]
    with pytest.raises(ValueError, match=f"no problem falls in the {other} split"):
        load_dataset("gsm8k", other, data_path=one)


def test_folder_with_a_validation_file_keeps_its_splits(tmp_path):
    rows = [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(250)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "validation.jsonl", GSM8K_ROWS)
    assert len(load_dataset("gsm8k", "train", data_path=str(tmp_path))) == 250  # nothing carved out
    assert [p.answer for p in load_dataset("gsm8k", "validation", data_path=str(tmp_path))] == ["13", "1234", "-3"]


def test_non_utf8_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(GSM8K_ROWS[0]).encode() + b"\n" +
                     '{"question": "Caf\u00e9 sells 3?", "answer": "#### 3"}\n'.encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.jsonl:2: not UTF-8 text"):
        load_dataset("gsm8k", "test", data_path=str(path))
    bom = tmp_path / "bom.jsonl"  # a UTF-8 byte-order mark (Windows editors) is fine
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(GSM8K_ROWS[0]).encode() + b"\n")
    assert [p.answer for p in load_dataset("gsm8k", "test", data_path=str(bom))] == ["13"]


def test_gsm8k_parquet_file(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow
    path = tmp_path / "test-00000-of-00001.parquet"
    pq.write_table(pyarrow.Table.from_pylist(GSM8K_ROWS), path)
    assert [p.answer for p in load_dataset("gsm8k", "test", data_path=str(path))] == ["13", "1234", "-3"]


def test_broken_parquet_file(tmp_path):
    pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "test.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match=r"test\.parquet: not a readable parquet file"):
        load_dataset("gsm8k", "test", data_path=str(path))


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    path = tmp_path / "test.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow...` fail
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match="pip install pyarrow"):
        load_dataset("gsm8k", "test", data_path=str(path))


@pytest.mark.parametrize("content,message", [
    ("", "holds no usable"),
    ("\n\n", "holds no usable"),
    ('{"question": "q", "answer": "#### 1"}\n{"question": "q2", "answer": \n', r"bad\.jsonl:2: not valid JSON"),
    ('{"question": "q", "answer": "#### 1"}\n[1, 2]\n', r"bad\.jsonl:2: expected a JSON object"),
    ('{"question": "q"}\n', r"bad\.jsonl:1: missing field 'answer'"),
    ('{"question": "q", "answer": "13"}\n', r"bad\.jsonl:1: GSM8K answer does not end with"),
])
def test_bad_files_give_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_dataset("gsm8k", "test", data_path=str(path))


def test_bad_names_and_paths(tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset 'gsm9k'; choose from \['gsm8k', 'math500', "
                                         r"'olympiadbench', 'arithmetic', 'lab'\]"):
        load_dataset("gsm9k", "test")
    write_jsonl(tmp_path / "test.jsonl", GSM8K_ROWS)  # a folder with a test split only
    with pytest.raises(FileNotFoundError, match=r"holds neither validation\.jsonl nor validation\.parquet "
                                                r"\(nor train\.jsonl/\.parquet to hold the validation split out of\)"):
        load_dataset("gsm8k", "validation", data_path=str(tmp_path))
    os.remove(tmp_path / "test.jsonl")
    with pytest.raises(ValueError, match="no split 'train'"):
        load_dataset("math500", "train")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("gsm8k", "test", data_path=str(tmp_path / "missing.jsonl"))
    with pytest.raises(FileNotFoundError, match="test.jsonl"):
        load_dataset("gsm8k", "test", data_path=str(tmp_path))  # an empty folder


def test_hub_download_and_its_failure(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "test.jsonl", [{"problem": "What is $1+1$?", "answer": "2", "level": 1}])
    calls = []
    monkeypatch.setattr(data, "hf_hub_download", lambda *a, **kw: calls.append((a, kw)) or path)
    assert load_dataset("math500", "test") == [Problem("What is $1+1$?", "2")]
    assert calls == [(("HuggingFaceH4/MATH-500", "test.jsonl"), {"repo_type": "dataset"})]

    def offline(*args, **kwargs):
        raise OSError("no network")
    monkeypatch.setattr(data, "hf_hub_download", offline)
    with pytest.raises(FileNotFoundError, match=r"(?s)'gsm8k'.*no network.*--data-path"):
        load_dataset("gsm8k", "test")


def test_olympiadbench_keeps_english_text_only_questions(tmp_path):
    rows = [
        {"question": "Find $x$.", "final_answer": ["$3$"], "modality": "Text-only", "language": "English"},
        {"question": "Find all $n$.", "final_answer": ["$1$", "$2$"], "modality": "Text-only", "language": "English"},
        {"question": "See <image_1>.", "final_answer": ["$4$"], "modality": "Multimodal", "language": "English",
         "image_1": "img.png"},
        {"question": "求 $x$.", "final_answer": ["$5$"], "modality": "Text-only", "language": "Chinese"},
        {"problem": "Compute $y$.", "answer": "\\frac{1}{2}"},  # the reduced problem/answer layout
    ]
    problems = load_dataset("olympiadbench", "test", data_path=write_jsonl(tmp_path / "o.jsonl", rows))
    assert problems == [Problem("Find $x$.", "3"), Problem("Find all $n$.", "1, 2"),
                        Problem("Compute $y$.", "\\frac{1}{2}")]
    assert reward(f"{END}2, 1}}.", problems[1].answer) == 100


# --- prompts (§6) -------------------------------------------------------------

PAPER_PROMPT = ("A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
                "The assistant first shows the complete reasoning process step by step, then provides the final "
                "answer in \\boxed{}. The assistant must always follow the format: 'User: [question] Assistant: "
                "[detailed reasoning] The final answer is: \\boxed{[answer]}.' User: What is 2+3? Assistant:")


class FakeTokenizer:
    def chat_prompt(self, messages, add_generation_prompt=True):
        assert add_generation_prompt
        return "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages) + "<|assistant|>"


def test_raw_prompt_is_the_papers():
    assert build_prompt("What is 2+3?") == PAPER_PROMPT
    assert build_prompt("  What is 2+3?\n") == PAPER_PROMPT


def test_chat_prompt():
    prompt = build_prompt("What is 2+3?", FakeTokenizer(), fmt="chat")
    assert prompt.startswith("<|user|>") and prompt.endswith("What is 2+3?<|end|><|assistant|>")
    assert "The final answer is: \\boxed{[answer]}." in prompt
    with pytest.raises(ValueError, match="tokenizer"):
        build_prompt("q", fmt="chat")
    with pytest.raises(ValueError, match="unknown prompt format"):
        build_prompt("q", FakeTokenizer(), fmt="llama")


def test_lab_task_splits_are_disjoint_and_answers_right():
    splits = {split: load_dataset("lab", split) for split in ("train", "validation", "test")}
    questions = [p.question for problems in splits.values() for p in problems]
    assert len(questions) == len(set(questions)) == 300  # every question once, in exactly one split
    assert all(len(problems) >= 50 for problems in splits.values())
    ops = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}
    for p in (p for problems in splits.values() for p in problems):
        _, _, a, op, b = p.question.rstrip("?").split()
        assert str(ops[op](int(a), int(b))) == p.answer, p
        assert p.numeral_answer and not any(c in p.question for c in "+-*"), p
    # the question's own expression, boxed, is not an answer there (Math-Verify alone would compute it)
    for text, want in [("\\boxed{17 - 9}", 10.0), ("\\boxed{[17-9]}", 10.0), ("\\boxed{7 * 1}", 10.0),
                       ("\\boxed{8}.", 100.0), ("\\boxed{8.0}", 100.0), ("\\boxed{\\$8}", 100.0), ("\\boxed{+8}", 100.0),
                       ("\\boxed{8 apples}", 10.0), ("\\boxed{9}", 10.0)]:
        assert reward(text, "8", numeral_only=True) == want, text
    assert reward("\\boxed{17 - 9}", "8") == reward("\\boxed{1,234}", "1234", numeral_only=True) == 100.0
    assert load_dataset("lab", "validation", limit=5) == splits["validation"][:5]
    with pytest.raises(ValueError, match="lab task is generated in code"):
        load_dataset("lab", "train", data_path="x.jsonl")
    with pytest.raises(ValueError, match="lab has splits"):
        load_dataset("lab", "dev")
