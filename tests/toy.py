"""Shared test helpers: a toy tokenizer and a tiny random model that rollout.py can drive (no downloads)."""

import json
import os

import torch
import torch.nn as nn

from model import ModelConfig, Transformer

PIECES = [b"<eos>", b"The final answer is:", b"The", b" final", b" answer", b" is", b":", b" is:", b" ",
          b" 1", b" 2", b"3", b" +", b"{", b"}", b"{}", b" \\boxed", b"\\boxed", b" x", b"y", b"\n",
          b"answer", b"\xe2\x82", b"\xac"]  # the last two: a euro sign split across tokens


class ToyTokenizer:
    """Just what rollout.py needs: token bytes, greedy longest-match encode, decode, special ids."""
    token_bytes = PIECES
    vocab_size = len(PIECES)
    eos_id = pad_id = 0
    stop_ids = {0}

    def encode(self, text):
        data, ids = text.encode(), []
        while data:
            best = max((i for i, p in enumerate(PIECES) if i and data.startswith(p)), key=lambda i: len(PIECES[i]))
            ids.append(best)
            data = data[len(PIECES[best]):]
        return ids

    def decode(self, ids):
        return b"".join(PIECES[i] for i in ids).decode("utf-8", errors="replace")


def tiny_model(seed=0, vocab=len(PIECES)):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
                      hidden_dim=64, tie_embeddings=True)
    model = Transformer(cfg)
    for p in model.parameters():
        nn.init.normal_(p, std=0.3)
    return model.eval()


PROMPTS = [[9, 12, 10], [2, 3, 4, 5, 6, 7, 9], [18]]  # ragged


def error_at_scale(got, want) -> float:
    """max |got - want| over tensors (or lists of them), as a fraction of the largest |want| entry anywhere.

    Float32 rounds a sum to within ~eps (1.2e-7) times the size of its *terms*, not of the result, and the error
    differs with the CPU's kernels, the thread count and the batch shape. An entry that cancels to ~0 (a gradient,
    a logit) thus carries the absolute error of the large ones, which an elementwise rtol does not allow for."""
    got, want = ([got], [want]) if isinstance(want, torch.Tensor) else (got, want)
    scale = max(w.abs().max().item() for w in want)
    return max((g.double() - w.double()).abs().max().item() for g, w in zip(got, want)) / scale


SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # SmolLM2's special tokens, ids 0, 1, 2


def write_byte_level_tokenizer(folder: str, vocab: dict[str, int]):
    """tokenizer.json (byte-level BPE over `vocab`, no merges: one token per byte) and tokenizer_config.json with
    SmolLM2's specials and chat template, as a Hugging Face folder has them."""
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, t in enumerate(SPECIALS)]
    tok_json = {"version": "1.0", "added_tokens": added, "normalizer": None,
                "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
                "post_processor": None, "decoder": {"type": "ByteLevel"},
                "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                          "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                          "vocab": vocab, "merges": []}}
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "tokenizer.json"), "w") as f:
        json.dump(tok_json, f)
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "chat_template": "SmolLM"}, f)
