"""evaluate.py: the six settings end to end on a tiny model, the table against the JSON, pass@k by hand,
batch-independent seeds, the default model, and clear errors for bad flags."""

import dataclasses
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import evaluate
import data
from data import pass_at_k
from model import ModelConfig, Transformer, save_model
from rollout import STEP_ANSWER, STEP_COT, STEP_PAD, STEP_PREFILL, Rollout
from tokenizer import byte_level_chars
from toy import SPECIALS, write_byte_level_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Only the characters of the stop text, the prefills and digits (~30 tokens): the encoder drops every other
# prompt character, and the prefills still read exactly as in rollout.py.
CHARS = sorted(set("The final answer is: \\boxed{}0123456789"))
QUESTIONS = [("Tom has 7 apples and eats 4. How many apples are left?", "3"),
             ("Anna has 9 pens and gives away 6. How many pens are left?", "3"),
             ("Ben has 2 bags with 3 coins each. How many coins?", "6")]
ALL = ",".join(evaluate.SETTINGS)


def write_tiny_folder(folder):
    """A random 2-layer Llama in Hugging Face layout with a tiny byte-level tokenizer, as train.py writes one."""
    byte_char = byte_level_chars()
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    vocab.update({byte_char[ord(c)]: len(SPECIALS) + i for i, c in enumerate(CHARS)})
    write_byte_level_tokenizer(folder, vocab)
    # A random model, nudged so that after "{" it tends to say "3" or "5" and then "}": answers such as
    # \boxed{3} come out often, and whether they do depends on the (sampled) CoT before them.
    torch.manual_seed(1)
    model = Transformer(ModelConfig(vocab_size=len(vocab), dim=32, n_layers=2, n_heads=4, n_kv_heads=2,
                                    head_dim=8, hidden_dim=64, tie_embeddings=False, max_seq_len=4096))
    for name, p in model.named_parameters():
        nn.init.normal_(p, std=0.6 if "layers" in name else 1.0)
    token = lambda c: vocab[byte_char[ord(c)]]  # noqa: E731
    with torch.no_grad():
        E, W = model.embed_tokens.weight, model.lm_head.weight
        unit = lambda c: 32 ** 0.5 * E[token(c)] / E[token(c)].norm()  # noqa: E731
        W[:len(SPECIALS)] = 0  # logit 0 for the special tokens, so answers do not stop at once
        W[token("3")] += 6 * unit("{")
        W[token("5")] += 6 * unit("{")
        W[token("}")] += 12 * (unit("3") + unit("5"))
    save_model(model, folder)
    return folder


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = root / "test.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": f"Some steps.\n#### {a}"}) + "\n"
                            for q, a in QUESTIONS + [("Unused extra problem?", "1")]))
    return str(write_tiny_folder(root / "model")), str(data), root


def tiny_argv(tiny, out, *extra):
    folder, data, _ = tiny
    return ["--model", folder, "--dataset", "gsm8k", "--data-path", data, "--settings", ALL, "--n-samples", "4",
            "--k", "1,2", "--limit", "3", "--max-cot-tokens", "12", "--max-answer-tokens", "6",
            "--output", str(out), *extra]


# --------------------------------------------------------------------------- end to end, table == JSON

def recompute(result, ks):
    """Every table number from the JSON's per-sample fields, independently of evaluate.summarize."""
    rows = {}
    for name in result["config"]["settings"]:
        per_problem = [p["generations"][name] for p in result["problems"]]
        n = len(per_problem[0])
        row = {}
        for k in ks:  # greedy (n = 1): all k draws are the same rollout, so pass@k is the accuracy
            row[f"pass@{k}"] = 100 * sum(pass_at_k(n, sum(s["correct"] for s in ss), k) if n > 1 else
                                         float(ss[0]["correct"]) for ss in per_problem) / len(per_problem)
        flat = [s for ss in per_problem for s in ss]
        row["cot_len"] = sum(s["cot_len"] for s in flat) / len(flat)
        row["extraction_rate"] = 100 * sum(s["extracted"] is not None for s in flat) / len(flat)
        rows[name] = row
    return rows


def test_end_to_end_in_process_table_adds_up(tiny, tmp_path, capsys):
    result = evaluate.main(tiny_argv(tiny, tmp_path / "r.json"))
    on_disk = json.load(open(tmp_path / "r.json"))
    assert on_disk == json.loads(json.dumps(result))
    assert (tmp_path / "r.md").read_text().endswith(on_disk["markdown"] + "\n")  # the table next to the JSON
    err = capsys.readouterr().err
    for name, (_, _, sampled) in evaluate.SETTINGS.items():  # a bar per setting in decode steps (was: 0/1 batch)
        steps = re.search(rf"{name}: 100%\S* (\d+)/\1 \[.*(step/s|s/step), 3/3 problems\]", err)
        assert steps and int(steps[1]) > 12 + 6, name  # at least the CoT and answer budgets: steps, not calls
    assert on_disk["table"] == json.loads(json.dumps(result["table"]))
    assert [r["setting"] for r in on_disk["table"]] == list(evaluate.SETTINGS)
    assert [p["label"] for p in on_disk["problems"]] == [a for _, a in QUESTIONS]  # --limit 3
    assert on_disk["config"]["model_folder"] == os.path.abspath(tiny[0]) and on_disk["config"]["torch_version"]
    for p in on_disk["problems"]:
        for name, (mode, tau, sampled) in evaluate.SETTINGS.items():
            samples = p["generations"][name]
            assert len(samples) == (4 if sampled else 1)
            for s in samples:
                assert s["answer"].startswith(("The final answer is: \\boxed{", " \\boxed{"))  # the prefill (§3)
                assert s["reward"] in (0, 10, 100) and s["correct"] == (s["reward"] == 100)
                assert (s["extracted"] is None) == (s["reward"] == 0)
                assert 1 <= s["cot_len"] <= 12
    want = recompute(on_disk, [1, 2])
    for row in on_disk["table"]:
        for key, value in want[row["setting"]].items():
            assert row[key] == pytest.approx(value), (row["setting"], key)
        assert f"| {row['setting']} | {row['samples']} | {row['pass@1']:.1f} | {row['pass@2']:.1f} |" in on_disk["markdown"]
    t = {r["setting"]: r for r in on_disk["table"]}
    assert (f"fuzzy inference, greedy / sample pass@1 / pass@2: {t['fuzzy-greedy']['pass@1']:.1f} / "
            f"{t['fuzzy-sample']['pass@1']:.1f} / {t['fuzzy-sample']['pass@2']:.1f}") in on_disk["markdown"]
    assert on_disk["config"]["settings_spec"]["soft-sample"]["sigma_abs"] > 0 == \
        on_disk["config"]["settings_spec"]["soft-greedy"]["sigma_abs"]
    for name, profile in on_disk["entropy_profile"].items():  # counts against the cot_len of every sample
        lens = [s["cot_len"] for p in on_disk["problems"] for s in p["generations"][name]]
        assert profile["count"] == [sum(n > t for n in lens) for t in range(max(lens))], name
        assert all(m is not None and 0 <= m <= math.log(len(CHARS) + len(SPECIALS)) for m in profile["mean"])
    rewards = {s["reward"] for p in on_disk["problems"] for ss in p["generations"].values() for s in ss}
    assert rewards == {0, 10, 100}, f"the fixture model should give all three rewards, got {rewards}"


def test_greedy_settings_are_deterministic_and_seeds_ignore_batching(tiny, tmp_path):
    """Seeds are per problem: one prompt per call or all at once gives the same generations."""
    a = evaluate.main(tiny_argv(tiny, tmp_path / "a.json", "--batch-size", "1"))
    b = evaluate.main(tiny_argv(tiny, tmp_path / "b.json", "--batch-size", "64"))
    # exact, though the batch shape changes float32's rounding: a token flips only at a near-tie, and these
    # generations stay the same with a random error of 16 float32 roundoffs (of the terms' size) added to every
    # matmul (checked once by hand), far more than another CPU or thread count makes
    assert [p["generations"] for p in a["problems"]] == [p["generations"] for p in b["problems"]]
    c = evaluate.main(tiny_argv(tiny, tmp_path / "c.json", "--seed", "5"))
    cots = lambda r, s: [x["cot"] for p in r["problems"] for x in p["generations"][s]]  # noqa: E731
    assert cots(c, "hard-greedy") == cots(b, "hard-greedy") and cots(c, "hard-sample") != cots(b, "hard-sample")


def test_end_to_end_subprocess_chat_format(tiny, tmp_path):
    """Also the GPU default precision, float32 weights under bf16 autocast, here on the CPU."""
    out = tmp_path / "sub.json"
    argv = tiny_argv(tiny, out, "--prompt-format", "chat", "--dtype", "autocast")
    argv[argv.index("--settings") + 1] = "hard-greedy,fuzzy-sample"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "evaluate.py"), *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "| hard-greedy | 1 |" in proc.stdout and "| fuzzy-sample | 4 |" in proc.stdout
    result = json.load(open(out))
    assert result["config"]["prompt_format"] == "chat" and [r["setting"] for r in result["table"]] == ["hard-greedy", "fuzzy-sample"]
    assert result["config"]["dtype"] == "autocast"


def test_summarize_pass_at_k_by_hand():
    gen = lambda *cs: [{"correct": c, "extracted": "1" if c else None, "cot_len": 10} for c in cs]  # noqa: E731
    row = evaluate.summarize("x", [gen(1, 1, 0, 0), gen(0, 0, 0, 0), gen(1, 0, 0, 0)], [1, 2, 4])
    assert row["pass@1"] == pytest.approx(100 * (0.5 + 0 + 0.25) / 3)
    # n=4: c=2 -> 1 - C(2,2)/C(4,2) = 5/6; c=1 -> 1 - C(3,2)/C(4,2) = 1/2
    assert row["pass@2"] == pytest.approx(100 * (5 / 6 + 0 + 1 / 2) / 3)
    assert row["pass@4"] == pytest.approx(100 * 2 / 3) and row["extraction_rate"] == pytest.approx(100 * 3 / 12)
    greedy = evaluate.summarize("g", [gen(1), gen(0)], [1, 32])
    assert greedy["pass@1"] == greedy["pass@32"] == 50.0 and greedy["samples"] == 1
    assert math.isclose(pass_at_k(4, 2, 2), 5 / 6)


# --------------------------------------------------------------------------- the real default model

@pytest.mark.slow
def test_default_model_runs_all_six_settings(tmp_path):
    from default_model import DEFAULT_NAME, resolve_model
    try:
        resolve_model(DEFAULT_NAME)
    except FileNotFoundError as e:
        pytest.skip(f"default model unavailable: {e}")
    result = evaluate.main(["--model", DEFAULT_NAME, "--dataset", "arithmetic", "--limit", "2", "--n-samples", "2",
                            "--k", "1,2", "--max-cot-tokens", "8", "--max-answer-tokens", "8",
                            "--output", str(tmp_path / "d.json")])
    assert [r["setting"] for r in result["table"]] == list(evaluate.PAPER_SETTINGS)  # the default: §7's six
    assert all(len(p["generations"]["soft-sample"]) == 2 for p in result["problems"])
    assert all(0 <= r["pass@1"] <= r["pass@2"] <= 100 for r in result["table"])


# --------------------------------------------------------------------------- bad flags

@pytest.mark.parametrize("flags, message", [
    (["--settings", "hard-greedy,warm-sample"], "unknown setting 'warm-sample'"),
    (["--n-samples", "4", "--k", "1,8"], "every --k must be in 1..4"),
    (["--k", "1,two"], "--k must be comma-separated integers"),
    (["--limit", "0"], "--limit must be >= 1"),
    (["--n-samples", "0"], "--n-samples must be >= 1"),
    (["--batch-size", "-2"], "--batch-size must be >= 1"),
    (["--sigma", "-1"], "--sigma must be a finite number >= 0"),
    (["--sigma", "nan"], "--sigma must be a finite number >= 0, got nan"),
    (["--sigma", "inf"], "--sigma must be a finite number >= 0, got inf"),
    (["--output", "r.md"], "--output is the JSON"),
    (["--device", "tpu"], "--device must be auto, cpu, cuda or cuda:N"),
])
def test_bad_flags_give_clear_errors(flags, message, capsys):
    with pytest.raises(SystemExit) as e:
        evaluate.get_args(flags)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_empty_dataset_and_missing_model_are_clear(tiny, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(SystemExit, match="no usable gsm8k problems"):  # one line, no traceback
        evaluate.main(["--model", tiny[0], "--data-path", str(empty), "--output", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="model folder not found"):
        evaluate.main(["--model", str(tmp_path / "nope"), "--data-path", tiny[1], "--output", str(tmp_path / "x.json")])


# --------------------------------------------------------------------------- defaults and the output file

def test_defaults_per_dataset_and_explicit_flags_win():
    arithmetic = evaluate.get_args(["--dataset", "arithmetic", "--device", "cpu"])
    train = data.DATASET_DEFAULTS["arithmetic"]  # the CPU-sized values train.py uses
    assert (arithmetic.max_cot_tokens, arithmetic.prompt_format, arithmetic.n_samples, arithmetic.k) == \
        (train["max_cot_tokens"], train["prompt_format"], train["samples_per_prompt"], [1, train["samples_per_prompt"]])
    for dataset in ("gsm8k", "math500", "olympiadbench"):  # the paper's evaluation (§3, §6, §7)
        args = evaluate.get_args(["--dataset", dataset])
        assert (args.max_cot_tokens, args.prompt_format, args.n_samples, args.k) == (512, "raw", 32, [1, 32])
    mine = evaluate.get_args(["--dataset", "arithmetic", "--max-cot-tokens", "64", "--prompt-format", "raw",
                              "--n-samples", "2", "--batch-size", "3"])
    assert (mine.max_cot_tokens, mine.prompt_format, mine.n_samples, mine.k, mine.batch_size) == \
        (64, "raw", 2, [1, 2], 3)
    assert arithmetic.batch_size == evaluate.CPU_BATCH_ROWS <= 16  # small calls on CPU: the bar moves


def test_default_output_is_named_after_model_and_dataset_and_git_ignored(tmp_path):
    assert evaluate.get_args([]).output == os.path.join("results", "eval_smollm2-135m-instruct_gsm8k.json")
    hub = evaluate.get_args(["--model", "meta-llama/Llama-3.2-3B", "--split", "validation"])
    assert hub.output == os.path.join("results", "eval_meta-llama-Llama-3.2-3B_gsm8k_validation.json")
    (tmp_path / "run" / "best").mkdir(parents=True)
    local = evaluate.get_args(["--model", str(tmp_path / "run" / "best"), "--dataset", "arithmetic"])
    assert local.output == os.path.join("results", "eval_run-best_arithmetic.json")
    assert evaluate.get_args(["--model", "a b/c?*", "--dataset", "../x"]).output == \
        os.path.join("results", "eval_a-b-c_x.json")  # no spaces, wildcards or parent folders in the name
    check = lambda path: subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode  # noqa: E731
    if check(".gitignore") == 128:
        pytest.skip("not a git checkout")
    assert check("results/eval_run-best_arithmetic.json") == 0 and check("results/eval_run-best_arithmetic.md") == 0
    assert check("results/report.md") == 1  # curated reports under results/ can still be committed


def test_unwritable_output_fails_before_any_work(tiny, tmp_path, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("work started before --output was checked")
    monkeypatch.setattr(evaluate, "resolve_model", no_work)
    monkeypatch.setattr(evaluate, "load_model", no_work)
    monkeypatch.setattr(evaluate, "load_dataset", no_work)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit, match=r"--output .*a_file.*cannot write in"):
        evaluate.main(tiny_argv(tiny, tmp_path / "a_file" / "r.json"))
    (tmp_path / "r.json").mkdir()
    with pytest.raises(SystemExit, match="is a folder"):
        evaluate.main(tiny_argv(tiny, tmp_path / "r.json"))


def test_data_problems_are_reported_before_the_model_loads(tiny, tmp_path, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the data was checked")
    monkeypatch.setattr(evaluate, "resolve_model", no_model)
    monkeypatch.setattr(evaluate, "load_model", no_model)
    with pytest.raises(SystemExit, match="unknown dataset 'gsm9k'"):
        evaluate.main(["--model", tiny[0], "--dataset", "gsm9k", "--output", str(tmp_path / "r.json")])
    with pytest.raises(SystemExit, match="does not exist"):
        evaluate.main(["--model", tiny[0], "--data-path", str(tmp_path / "no.jsonl"),
                       "--output", str(tmp_path / "r.json")])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_keeps_finished_settings_and_a_rerun_skips_them(tiny, tmp_path, monkeypatch, capsys, sig):
    out, ran, real = tmp_path / "r.json", [], evaluate.run_setting

    def interrupted(model, tok, prompts, labels, name, args):
        ran.append(name)
        if name == "soft-sample":  # a real signal, as from Ctrl-C or `kill`, in the middle of the 2nd setting
            assert signal.getsignal(sig) not in (signal.SIG_DFL, signal.SIG_IGN), "it would end pytest"
            os.kill(os.getpid(), sig)
        return real(model, tok, prompts, labels, name, args)
    monkeypatch.setattr(evaluate, "run_setting", interrupted)
    argv = tiny_argv(tiny, out)
    argv[argv.index("--settings") + 1] = "hard-greedy,soft-sample,fuzzy-greedy"
    try:
        evaluate.main(argv)
        pytest.fail("the interrupted run did not stop")
    except KeyboardInterrupt:  # caught here, so that it cannot end the whole test session
        pytest.fail("the interrupt escaped evaluate.main instead of saving and exiting")
    except SystemExit as e:
        assert e.code == 130 and ran == ["hard-greedy", "soft-sample"]
    assert "interrupted during soft-sample" in capsys.readouterr().err
    saved = json.load(open(out))
    assert saved["config"]["settings"] == ["hard-greedy"] and [r["setting"] for r in saved["table"]] == ["hard-greedy"]
    assert "| hard-greedy |" in (tmp_path / "r.md").read_text()
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".part")]  # no temporary file left behind
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or sig == signal.SIGINT  # handler restored

    ran.clear()
    monkeypatch.setattr(evaluate, "run_setting", lambda *a: ran.append(a[4]) or real(*a))
    resumed = evaluate.main(argv)
    assert ran == ["soft-sample", "fuzzy-greedy"] and "already holds hard-greedy: skipping" in capsys.readouterr().err
    fresh = evaluate.main(tiny_argv(tiny, tmp_path / "fresh.json", "--settings", argv[argv.index("--settings") + 1]))
    assert resumed["problems"] == fresh["problems"] and resumed["entropy_profile"] == fresh["entropy_profile"]
    assert [r["setting"] for r in resumed["table"]] == ["hard-greedy", "soft-sample", "fuzzy-greedy"]


def test_rerun_refuses_another_configuration_and_recomputes_k(tiny, tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    evaluate.main(tiny_argv(tiny, out, "--settings", "hard-sample"))
    with pytest.raises(SystemExit, match=r"another configuration \(max_cot_tokens 12 there, 10 now; sigma 0.33 there, "
                                         r"0.5 now\); use another --output, or --overwrite"):
        evaluate.main(tiny_argv(tiny, out, "--settings", "hard-sample", "--max-cot-tokens", "10", "--sigma", "0.5"))
    with pytest.raises(SystemExit, match="other problems"):
        evaluate.main(tiny_argv(tiny, out, "--settings", "hard-sample", "--limit", "2"))

    def no_model(*args, **kwargs):
        raise AssertionError("a finished setting was run again")
    with monkeypatch.context() as m:  # everything asked for is done: only the table is recomputed, for the new --k
        m.setattr(evaluate, "load_model", no_model)
        again = evaluate.main(tiny_argv(tiny, out, "--settings", "hard-sample", "--k", "1,3,4", "--batch-size", "5"))
    assert [k for k in again["table"][0] if k.startswith("pass@")] == ["pass@1", "pass@3", "pass@4"]
    any_correct = [any(s["correct"] for s in p["generations"]["hard-sample"]) for p in again["problems"]]
    assert again["table"][0]["pass@4"] == pytest.approx(100 * sum(any_correct) / 3)  # n = k = 4: any sample right
    evaluate.main(tiny_argv(tiny, out, "--settings", "hard-greedy", "--max-cot-tokens", "10", "--overwrite"))
    assert json.load(open(out))["config"]["settings"] == ["hard-greedy"]
    (tmp_path / "other.json").write_text('{"not": "ours"}')
    with pytest.raises(SystemExit, match="exists but is not an evaluate.py result"):
        evaluate.main(tiny_argv(tiny, tmp_path / "other.json"))


# --------------------------------------------------------------------------- the CoT entropy profile (§8)

def hand_built_rollout(kinds, entropy):
    """A Rollout with only the step kinds and entropies the profile reads (every other field None)."""
    fields = {f.name: None for f in dataclasses.fields(Rollout)}
    return Rollout(**{**fields, "step_kinds": torch.tensor(kinds), "entropy": torch.tensor(entropy)})


def test_entropy_profile_of_hand_built_rollouts():
    C, P, A, D = STEP_COT, STEP_PREFILL, STEP_ANSWER, STEP_PAD
    first = hand_built_rollout([[C, C, C, P, A], [C, P, A, A, D], [C, C, P, A, D]],
                               [[1.0, 2.0, 3.0, 9.0, 9.0], [4.0, 9.0, 9.0, 9.0, 9.0], [5.0, 6.0, 9.0, 9.0, 9.0]])
    second = hand_built_rollout([[C, C, C, C, P], [C, P, A, D, D]],
                                [[7.0, 8.0, 1.0, 2.0, 9.0], [0.5, 9.0, 9.0, 9.0, 9.0]])
    sums, counts = torch.zeros(6, dtype=torch.float64), torch.zeros(6, dtype=torch.long)
    for r in (first, second):
        evaluate.add_entropy_by_position(sums, counts, r)
    profile = evaluate.entropy_profile(sums, counts)
    # by hand: position 0 of every CoT (5 rows), position 1 of the CoTs with >= 2 steps, ... (9 = not CoT)
    assert profile["count"] == [5, 3, 2, 1]
    assert profile["mean"] == pytest.approx([(1 + 4 + 5 + 7 + 0.5) / 5, (2 + 6 + 8) / 3, (3 + 1) / 2, 2])
    broken = hand_built_rollout([[C, C, P]], [[float("nan"), 1.0, 9.0]])  # a NaN is written as null, not NaN
    sums, counts = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.long)
    evaluate.add_entropy_by_position(sums, counts, broken)
    assert evaluate.entropy_profile(sums, counts) == {"mean": [None, 1.0], "count": [1, 1]}


# --------------------------------------------------------------------------- issue 24: one-line errors, context, lock

def run_evaluate(argv):
    return subprocess.run([sys.executable, "evaluate.py", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_bad_input_is_one_line_not_a_traceback(tiny, tmp_path):
    arch = tmp_path / "arch"
    shutil.copytree(tiny[0], arch)
    config = json.loads((arch / "config.json").read_text())
    (arch / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    garbage = tmp_path / "garbage.json"
    garbage.write_text("not json")
    common = ["--data-path", tiny[1], "--limit", "1", "--settings", "hard-greedy"]
    for argv, said in [(["--model", str(arch), "--output", str(tmp_path / "a.json")], "unsupported architecture"),
                       (["--model", tiny[0], "--output", str(garbage)], "is not an evaluate.py result"),
                       (["--model", tiny[0], "--dataset", "nosuchset", "--output", str(tmp_path / "b.json")],
                        "unknown dataset"),
                       (["--model", tiny[0], "--max-cot-tokens", "100000", "--output", str(tmp_path / "c.json")],
                        "more than the model's context")]:
        result = run_evaluate([*common, *argv] if "--dataset" not in argv else [*argv, "--limit", "1"])
        assert result.returncode == 1 and said in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_second_evaluate_on_the_same_output_is_refused(tiny, tmp_path):
    from checkpoint import RunLock
    output = str(tmp_path / "x.json")
    held = RunLock(output + ".lock", output)
    result = run_evaluate(["--model", tiny[0], "--data-path", tiny[1], "--limit", "1", "--output", output])
    held.release()
    assert result.returncode == 1 and f"being written by PID {os.getpid()}" in result.stderr
