"""Data: datasets, the prompt (§6), answer extraction, Math-Verify checking, the reward (§5, Eq. 11), pass@k (§7).

    from data import load_dataset, build_prompt, reward, pass_at_k
    problems = load_dataset("gsm8k", "test")             # list[Problem(question, answer)]
    prompt = build_prompt(problems[0].question)           # the paper's raw-text prompt
    reward("... The final answer is: \\boxed{18}.", "18")  # 100.0

Datasets (a local `data_path` replaces the download: a folder holds `{split}.jsonl` or `{split}.parquet`; a
single file is the test split, or is split by question hash, 9 to 1, into train and validation):
- gsm8k: openai/gsm8k ("main"), train (7,273) / validation (the last 200 of the official train file) / test
  (1,319). The label is the number after "####", commas removed.
- math500: HuggingFaceH4/MATH-500, test (500).
- olympiadbench: math-ai/olympiadbench, test: the 675 English, text-only maths questions with final answers
  (OlympiadBench's OE_TO_maths_en_COMP, the set the paper uses); rows with images are dropped.
- arithmetic: word problems generated here, no download (train 5,000 / validation 200 / test 500).
- lab: the course labs' task (course/README.md), generated here: the 300 questions "What is a plus b?",
  "What is (a+b) minus b?", "What is a times b?" for a, b in 1..10, split by question hash into train /
  validation / test. The default model answers ~55 % of them greedily but ~5 % when it samples at τ = 1,
  so RL has a signal from its first step and learns within minutes on a CPU.
Hub files are downloaded once into the Hugging Face cache and read from there afterwards, offline too.
"""

import functools
import hashlib
import json
import math
import os
import random
import re
import sys
import threading
from dataclasses import dataclass

from huggingface_hub import hf_hub_download
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify


@dataclass(frozen=True)
class Problem:
    question: str
    answer: str                   # the gold label, e.g. "18" or "\frac{\sqrt{3}}{2}"
    numeral_answer: bool = False  # only a numeral answer counts (the lab task: see is_correct)


# -----------------------------------------------------------------------------
# datasets

# name -> (Hub repo, {split: file in the repo})
HUB = {
    "gsm8k": ("openai/gsm8k", {"train": "main/train-00000-of-00001.parquet",
                               "test": "main/test-00000-of-00001.parquet"}),
    "math500": ("HuggingFaceH4/MATH-500", {"test": "test.jsonl"}),
    "olympiadbench": ("math-ai/olympiadbench", {"test": "test.jsonl"}),
}
GSM8K_VALIDATION = 200  # held out from the end of GSM8K's train file for model selection (§5)
VALIDATION_EVERY = 10  # a single --data-path file gives 1 in 10 of its problems to validation
ARITHMETIC_SIZES = {"train": 5000, "validation": 200, "test": 500}
LAB_SPLITS = ("test", "validation", "train", "train", "train")  # a lab question's split: LAB_SPLITS[hash % 5]

# Per-dataset defaults. gsm8k: the paper's values (§3, §5). arithmetic: the offline default, sized so the
# 135M default model shows steps, reward and a validation score on a 2-core CPU within minutes.
DATASET_DEFAULTS = {
    "gsm8k": dict(steps=4000, samples_per_prompt=32, prompts_per_step=2, max_cot_tokens=128, lr=6e-6, sigma=0.33,
                  warmup_steps=20, eval_every=100, val_size=200, prompt_format="raw"),
    "arithmetic": dict(steps=60, samples_per_prompt=8, prompts_per_step=2, max_cot_tokens=48, lr=3e-5, sigma=0.33,
                       warmup_steps=20, eval_every=15, val_size=40, prompt_format="chat"),  # raw: ~0% at 135M
    "lab": dict(steps=25, samples_per_prompt=16, prompts_per_step=2, max_cot_tokens=8, lr=3e-5, sigma=1.0,
                warmup_steps=3, eval_every=5, val_size=50, prompt_format="chat"),  # tuned: course/README.md
}
FALLBACK_DEFAULTS = dict(DATASET_DEFAULTS["gsm8k"], max_cot_tokens=512)  # MATH-style sets (§3)


def load_dataset(name: str, split: str, data_path: str | None = None, limit: int | None = None,
                 seed: int = 0, difficulty: int = 1) -> list[Problem]:
    """The problems of one split, in file order. `seed` and `difficulty` only apply to "arithmetic"."""
    if name == "arithmetic":
        if data_path is not None:
            raise ValueError("the arithmetic task is generated in code; it takes no --data-path")
        problems = [p for p, _ in arithmetic_problems(split, seed=seed, difficulty=difficulty)]
        return problems[:limit]
    if name == "lab":
        if data_path is not None:
            raise ValueError("the lab task is generated in code; it takes no --data-path")
        return lab_problems(split)[:limit]
    if name not in HUB:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(HUB) + ['arithmetic', 'lab']}")
    repo, files = HUB[name]
    carve = name == "gsm8k" and split in ("train", "validation")  # both come from GSM8K's train file
    file_split = "train" if carve else split
    if file_split not in files:
        raise ValueError(f"dataset {name!r} has no split {split!r}; it has {sorted(files)}"
                         + (" and 'validation'" if name == "gsm8k" else ""))
    by_hash = False  # split a single file into train / validation by question hash
    if data_path is None:
        try:
            path = hf_hub_download(repo, files[file_split], repo_type="dataset")
        except Exception as e:  # offline with an empty cache, a moved file, a Hub outage...
            raise FileNotFoundError(f"could not get dataset {name!r} ({repo}/{files[file_split]}): {e}\n"
                                    f"Download it once with network access, or pass --data-path to a "
                                    f"local .jsonl/.parquet copy.") from e
    elif os.path.isdir(data_path):
        if carve and _split_file(data_path, "validation"):  # the folder brings its own validation split
            carve, file_split = False, split
        path = _split_file(data_path, file_split)
        if path is None:
            raise FileNotFoundError(f"{data_path} holds neither {split}.jsonl nor {split}.parquet" + (
                f" (nor {file_split}.jsonl/.parquet to hold the {split} split out of)" if file_split != split else ""))
    elif os.path.isfile(data_path):
        # One file is the whole test split; as train and validation it is split by question hash, so that
        # model selection never runs on training problems.
        path, carve, by_hash = data_path, False, split in ("train", "validation")
    else:
        raise FileNotFoundError(f"--data-path {data_path} does not exist")

    problems = []
    for where, row in _read_rows(path):
        problem = _to_problem(name, row, where)
        if problem is not None:
            problems.append(problem)
    if not problems:
        raise ValueError(f"{path} holds no usable {name} problems")
    if carve:
        cut = len(problems) - GSM8K_VALIDATION
        if cut <= 0:
            raise ValueError(f"{path} has {len(problems)} problems, too few to hold out {GSM8K_VALIDATION}")
        problems = problems[:cut] if split == "train" else problems[cut:]
    if by_hash:
        problems = [p for p in problems if hash_split(p.question) == split]
        print(f"data: {path} is one file; its {split} split is the {len(problems)} problems whose question hash "
              f"puts them there (1 in {VALIDATION_EVERY} go to validation; a folder with train.jsonl and "
              f"validation.jsonl keeps its own splits)", file=sys.stderr)
        if not problems:
            raise ValueError(f"{path}: no problem falls in the {split} split (1 in {VALIDATION_EVERY} go to "
                             f"validation); give a folder with train.jsonl and validation.jsonl instead")
    return problems[:limit]


def hash_split(question: str) -> str:
    """"train" or "validation" for a question of a single-file dataset, fixed by its hash (as arithmetic_split)."""
    return "validation" if _hash_bucket(question, VALIDATION_EVERY) == 0 else "train"


def _hash_bucket(question: str, buckets: int) -> int:
    """A bucket in 0..buckets-1 fixed by the question text: the same in every process and for every seed."""
    return int(hashlib.sha256(question.encode()).hexdigest(), 16) % buckets


def _split_file(folder: str, split: str) -> str | None:
    """The folder's {split}.jsonl or {split}.parquet, or None."""
    found = [os.path.join(folder, split + ext) for ext in (".jsonl", ".parquet")]
    return next((f for f in found if os.path.isfile(f)), None)


def _read_rows(path: str):
    """Yield (location for error messages, row dict) from a JSONL or parquet file."""
    if path.endswith(".parquet"):
        try:
            import pyarrow.parquet  # only for parquet files, so not a run-time requirement
        except ImportError:
            raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow "
                              f"(or convert the file to JSONL)") from None
        try:
            rows = pyarrow.parquet.read_table(path).to_pylist()
        except Exception as e:  # pyarrow's own errors do not say which file
            raise ValueError(f"{path}: not a readable parquet file ({e})") from None
        for i, row in enumerate(rows):
            yield f"{path}, row {i}", row
        return
    with open(path, "rb") as f:  # bytes, so that a non-UTF-8 line can be named
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not UTF-8 text ({e}); JSONL files must be UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield f"{path}:{lineno}", row


def _field(row: dict, names: tuple[str, ...], where: str):
    for n in names:
        if row.get(n) is not None:
            return row[n]
    raise ValueError(f"{where}: missing field {' or '.join(map(repr, names))}")


def _to_problem(name: str, row: dict, where: str) -> Problem | None:
    if name == "gsm8k":
        question, solution = _field(row, ("question",), where), str(_field(row, ("answer",), where))
        if "####" not in solution:
            raise ValueError(f"{where}: GSM8K answer does not end with '#### <number>'")
        return Problem(question, solution.split("####")[-1].strip().replace(",", ""))
    if name == "olympiadbench":
        # Keep the paper's subset: English text-only maths (image questions carry <image_N> tags).
        if row.get("modality", "Text-only") != "Text-only" or row.get("language", "English") != "English" \
                or any(row.get(f"image_{i}") for i in range(1, 10)):
            return None
        answer = _field(row, ("final_answer", "answer"), where)
        answers = answer if isinstance(answer, list) else [answer]  # several answers: "a, b"
        return Problem(_field(row, ("question", "problem"), where),
                       ", ".join(str(a).strip().strip("$").strip() for a in answers))
    return Problem(_field(row, ("problem", "question"), where), str(_field(row, ("answer",), where)))


# -----------------------------------------------------------------------------
# arithmetic: a procedural task small enough for SmolLM2-135M to earn reward at difficulty 1

NAMES = ["Tom", "Anna", "Ben", "Lucy", "Sam", "Mia", "Leo", "Emma", "Max", "Zoe", "Noah", "Lily"]
ITEMS = ["apples", "pencils", "stickers", "marbles", "cookies", "books", "coins", "stamps", "cards",
         "balloons", "shells", "flowers"]


def arithmetic_problem(rng: random.Random, difficulty: int) -> tuple[Problem, str]:
    """One problem with `difficulty` operations on numbers up to 10·difficulty, and the arithmetic expression
    it encodes, e.g. ("Tom has 8 apples. Tom buys 3 bags with 4 apples each. ...", "((8 + 3 * 4) - 5)").
    Every count along the way is a non-negative integer."""
    hi = 10 * difficulty
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    x = rng.randint(2, hi)
    expr, sentences = str(x), [f"{name} has {x} {item}."]
    for _ in range(difficulty):
        op = rng.choice(["add", "sub", "bags", "times", "half"] if x % 2 == 0 else ["add", "sub", "bags", "times"])
        if op == "add":
            n = rng.randint(2, hi)  # counts in the text are >= 2, so "1 apples" never appears
            x, expr, s = x + n, f"({expr} + {n})", f"{name} finds {n} more {item}."
        elif op == "sub" and x > 2:
            n = rng.randint(2, min(hi, x - 1))
            x, expr, s = x - n, f"({expr} - {n})", f"{name} gives away {n} {item}."
        elif op in ("bags", "sub"):  # "sub" lands here when too few are left to give away
            k, m = rng.randint(2, 4), rng.randint(2, max(5, hi // 2))
            x, expr, s = x + k * m, f"({expr} + {k} * {m})", f"{name} buys {k} bags with {m} {item} each."
        elif op == "times":
            k = rng.choice([2, 3])
            x, expr, s = x * k, f"({expr} * {k})", f"Then the number of {item} {['doubles', 'triples'][k - 2]}."
        else:
            x, expr, s = x // 2, f"({expr} / 2)", f"{name} gives half of the {item} to a friend."
        sentences.append(s)
    sentences.append(f"How many {item} does {name} have now?")
    return Problem(" ".join(sentences), str(x)), expr


def arithmetic_split(question: str) -> str:
    """The split a question text belongs to, fixed by its hash: splits are disjoint for every seed."""
    bucket = _hash_bucket(question, 20)
    return "test" if bucket < 2 else "validation" if bucket == 2 else "train"


def arithmetic_problems(split: str, seed: int = 0, difficulty: int = 1, n: int | None = None):
    """`n` distinct (Problem, expression) pairs of `split`, the same for the same (split, seed, difficulty)."""
    if split not in ARITHMETIC_SIZES:
        raise ValueError(f"arithmetic has splits {sorted(ARITHMETIC_SIZES)}, not {split!r}")
    if difficulty < 1:
        raise ValueError(f"difficulty must be >= 1, got {difficulty}")
    n = ARITHMETIC_SIZES[split] if n is None else n
    rng = random.Random(f"arithmetic/{split}/{seed}/{difficulty}")  # str seeds hash the same in every process
    out, seen = [], set()
    for _ in range(20 * n + 10_000):  # ~10x what a split needs; asking for more problems than exist ends
        if len(out) == n:
            break
        problem, expr = arithmetic_problem(rng, difficulty)
        if problem.question not in seen and arithmetic_split(problem.question) == split:
            seen.add(problem.question)
            out.append((problem, expr))
    if len(out) < n:
        raise ValueError(f"could only make {len(out)} distinct {split} problems at difficulty {difficulty}")
    return out


def lab_problems(split: str) -> list[Problem]:
    """The lab task's `split`: a + b, a × b or (a + b) − b for a, b in 1..10, the operation in words, the numbers
    as numerals, in a fixed shuffled order (operations mixed), e.g.
    Problem("What is 7 plus 5?", "12"), Problem("What is 12 minus 5?", "7"), Problem("What is 7 times 5?", "35").
    Only a numeral answer counts (numeral_answer): Math-Verify reads a boxed "7 * 5" as 35, and a model that copies
    the question into the box as an expression scores 100 without computing anything. Words in the question
    did not stop that: the model learned to write "17 - 9" for "17 minus 9" (course/README.md, "Labs")."""
    if split not in LAB_SPLITS:
        raise ValueError(f"lab has splits {sorted(set(LAB_SPLITS))}, not {split!r}")
    problems = [p for a in range(1, 11) for b in range(1, 11)
                for p in (Problem(f"What is {a} plus {b}?", str(a + b), True),
                          Problem(f"What is {a + b} minus {b}?", str(a), True),
                          Problem(f"What is {a} times {b}?", str(a * b), True))]
    problems = [p for p in problems if LAB_SPLITS[_hash_bucket(p.question, len(LAB_SPLITS))] == split]
    random.Random(f"lab/{split}").shuffle(problems)
    return problems


# -----------------------------------------------------------------------------
# prompt (§6)

RAW_PROMPT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first shows the complete reasoning process step by step, then provides the final "
    "answer in \\boxed{}. The assistant must always follow the format: 'User: [question] Assistant: "
    "[detailed reasoning] The final answer is: \\boxed{[answer]}.' User: QUESTION Assistant:"
)
# The chat variant keeps the paper's instructions, addressed to the assistant, in the user turn.
CHAT_PROMPT = (
    "Solve the following problem. First show the complete reasoning process step by step, then provide "
    "the final answer in \\boxed{}. Always follow the format: '[detailed reasoning] The final answer is: "
    "\\boxed{[answer]}.'\n\nQUESTION"
)


def build_prompt(question: str, tokenizer=None, fmt: str = "raw") -> str:
    """The text the model continues: "raw" is the paper's prompt (§6), "chat" goes through the chat template."""
    if fmt == "raw":
        return RAW_PROMPT.replace("QUESTION", question.strip())
    if fmt == "chat":
        if tokenizer is None:
            raise ValueError("the chat prompt format needs a tokenizer (for its chat template)")
        message = {"role": "user", "content": CHAT_PROMPT.replace("QUESTION", question.strip())}
        return tokenizer.chat_prompt([message], add_generation_prompt=True)
    raise ValueError(f"unknown prompt format {fmt!r}; use 'raw' or 'chat'")


# -----------------------------------------------------------------------------
# answers, checking, reward (§5, Eq. 11), pass@k (§7)

def extract_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (or \\fbox{...}) in `text`, braces balanced; None if there is
    none, if its braces never close (a truncated answer), or if it is empty. Escaped braces \\{ \\} do not
    count. Like Math-Verify, `\\boxed 42` (no braces) gives the following word, here "42"."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = start + (6 if text.startswith("\\boxed", start) else 5)
    if i < len(text) and text[i] not in "{ \t\n":  # e.g. \boxedx is another command
        return None
    while i < len(text) and text[i] in " \t\n":
        i += 1
    if i < len(text) and text[i] != "{":
        word = text[i:].split(maxsplit=1)[0].rstrip(".,;$")
        return word or None
    depth, j = 0, i
    while j < len(text):
        if text[j] == "\\":
            j += 2  # skip the escaped character: \{ and \} are literal braces
            continue
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j].strip() or None
        j += 1
    return None


# Math-Verify bounds parsing and comparison with signal.alarm, which only works in the main thread; in
# other threads we must turn it off (it raises otherwise), so callers there get no protection from hangs.
TIMEOUT_S = 2
EXTRACTION = (LatexExtractionConfig(), ExprExtractionConfig())


def _timeout() -> int | None:
    return TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


@functools.lru_cache(maxsize=65536)  # labels repeat for every sample of a group, and so do answers
def _parse(boxed_content: str) -> tuple:
    # Math-Verify reads LaTeX; boxing the string makes it take the whole thing as the answer.
    return tuple(parse("\\boxed{" + boxed_content + "}", list(EXTRACTION), parsing_timeout=_timeout()))


NUMERAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)")
NUMERAL_FORMATTING = re.compile(r"\\?\$|,|\\[,!;]|\s")  # allowed around a numeral: "$1,234.", "\\$8"


def is_numeral(text: str) -> bool:
    return NUMERAL.fullmatch(NUMERAL_FORMATTING.sub("", text).removesuffix(".")) is not None


def is_correct(pred: str, label: str, numeral_only: bool = False) -> bool:
    """Whether Math-Verify judges the extracted answer `pred` equal to the gold `label` (both LaTeX or
    plain text: e.g. the answer "1,234" for the label "1234", "0.75" for "\\dfrac{3}{4}", "90" for "90^\\circ").
    Model text is only parsed, never run: LaTeX goes to a grammar-based parser, and sympy's eval-based
    parse_expr only ever sees strings of digits and + - * / ^ ( ) (Math-Verify's regex for plain expressions).

    Math-Verify computes what it parses, so "9 \\times 2" counts for 18, as in the paper. `numeral_only` (the lab
    task) also asks for a numeral: there the 135M model learns to box the question's own "17 - 9" instead of
    answering it (course/README.md, "Labs")."""
    if numeral_only and not is_numeral(pred):
        return False
    gold, answer = _parse(label), _parse(pred)
    return bool(gold and answer) and verify(list(gold), list(answer), timeout_seconds=_timeout())


def reward(completion_text: str, label: str, numeral_only: bool = False) -> float:
    """Eq. 11: 100 if the last boxed answer is correct, 10 if there is one but it is wrong, 0 otherwise.
    `completion_text` is what follows the prompt (CoT, prefill, answer), e.g.
    "... The final answer is: \\boxed{42}."; `numeral_only`: see is_correct."""
    pred = extract_boxed(completion_text)
    if pred is None:
        return 0.0
    return 100.0 if is_correct(pred, label, numeral_only) else 10.0


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (§7): 1 - C(n-c, k) / C(n, k), computed as
    1 - prod_{i=n-c+1}^{n} (1 - k/i) so that no huge binomials appear.

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 2), pass_at_k(4, 3, 2)  # 1/4; 1 - C(3,2)/C(4,2); every pair holds one
    (0.25, 0.5, 1.0)
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))
