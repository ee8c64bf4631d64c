"""Shared test helpers: a toy tokenizer and a tiny random model that rollout.py can drive (no downloads)."""

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
