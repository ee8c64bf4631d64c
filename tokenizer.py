"""Byte-level BPE tokenizer (SmolLM2, Qwen 2.5, Llama 3) on tiktoken, read from a checkpoint folder.

Sources, in order: `tokenizer.json` (+ `tokenizer_config.json`, `config.json`), or Llama 3's
`original/tokenizer.model` (tiktoken's own format: "base64(token bytes) rank" per line).

tiktoken merges the adjacent pair whose *merged bytes* have the lowest rank, while tokenizer.json lists
merges in priority order. So a token's rank is its merge's position (256 single bytes first); a lookup
table maps ranks back to the checkpoint's ids. Added tokens (<|im_end|>, <|eot_id|>, ...) are never
made from plain text: only `encode(text, allow_special=True)` turns their text into their ids.

Prompts (§6): a raw prompt is `([bos_id] if add_bos else []) + encode(text)`; a chat prompt already
holds its BOS as text (Llama 3's <|begin_of_text|>), so it is `encode(chat_prompt(msgs), allow_special=True)`.
"""

import base64
import json
import os
import re
import unicodedata

import tiktoken

# The pre-tokenizer regexes (tiktoken applies one regex, then BPE inside each match).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# SmolLM2 = Digits(individual_digits) then the GPT-2 regex, as one regex: every digit is a piece of its
# own, and since a digit ends the text the GPT-2 regex sees, "\s+ not followed by \S" also stops at a digit.
DIGITS_GPT2_PATTERN = r"""\p{N}|'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+"""
LLAMA3_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
# original/tokenizer.model holds only the 128000 BPE tokens; these 256 follow them (names as in the
# Llama 3.1/3.2 tokenizer.json; Llama 3.0 had reserved names at 128004, 128005, 128008, 128010).
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                   "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
                   "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
                   *[f"<|reserved_special_token_{i}|>" for i in range(3, 248)]]
STOP_TOKENS = ["<|end_of_text|>", "<|endoftext|>", "<|eot_id|>", "<|im_end|>", "<|eom_id|>"]
NORMALIZERS = ("NFC", "NFD", "NFKC", "NFKD")
# Llama 3.1+ templates open with this block; 3.2's uses today's date when it can, we pin 3.1's date.
LLAMA3_DATE = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
DEFAULT_SYSTEM = {"qwen2": "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
                  "smollm2": "You are a helpful AI assistant named SmolLM, trained by Hugging Face"}


def byte_level_chars() -> list[str]:
    """GPT-2's byte -> character table that byte-level vocabularies are written in: printable bytes stand
    for themselves, the other 68 (space, controls, ...) become U+0100, U+0101, ... in byte order."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    moved = [b for b in range(256) if b not in keep]
    return [chr(b) if b in keep else chr(0x100 + moved.index(b)) for b in range(256)]


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _pattern(pre: dict | None) -> str:
    """The one regex equal to a tokenizer.json pre_tokenizer; the supported shapes are those of SmolLM2
    (Digits, ByteLevel), Qwen 2.5 and Llama 3 (Split, ByteLevel without regex) and GPT-2 (ByteLevel)."""
    steps = pre.get("pretokenizers", []) if pre and pre.get("type") == "Sequence" else [pre]
    parts = []
    for s in steps:
        kind = (s or {}).get("type")
        if kind == "ByteLevel" and not s.get("add_prefix_space"):
            parts += ["gpt2"] if s.get("use_regex", True) else []
        elif kind == "Split" and "Regex" in s.get("pattern", {}) and s.get("behavior") == "Isolated" \
                and not s.get("invert"):
            parts.append(s["pattern"]["Regex"])
        elif kind == "Digits" and s.get("individual_digits"):
            parts.append("digits")
        else:
            raise ValueError(f"unsupported pre_tokenizer step {s!r} (supported: ByteLevel without prefix "
                             "space, Split(Regex, Isolated), Digits(individual_digits))")
    if parts == ["digits", "gpt2"]:
        return DIGITS_GPT2_PATTERN
    if parts == ["gpt2"]:
        return GPT2_PATTERN
    if len(parts) == 1 and parts[0] != "digits":
        return parts[0]
    raise ValueError(f"unsupported pre_tokenizer combination {parts} in {pre!r}")


def _from_tokenizer_json(path: str) -> dict:
    tj = _read_json(path)
    model, norm = tj.get("model", {}), tj.get("normalizer")
    if model.get("type") != "BPE" or model.get("byte_fallback") or model.get("continuing_subword_prefix") \
            or model.get("end_of_word_suffix") or model.get("dropout"):
        raise ValueError(f"{path}: only plain byte-level BPE models are supported")
    if norm is not None and norm.get("type") not in NORMALIZERS:
        raise ValueError(f"{path}: unsupported normalizer {norm.get('type')!r} (supported: {NORMALIZERS})")
    added = {a["content"]: a["id"] for a in tj.get("added_tokens", [])}
    odd = [a["content"] for a in tj.get("added_tokens", []) if a["lstrip"] or a["rstrip"] or a["single_word"]]
    if odd:
        raise ValueError(f"{path}: added tokens with lstrip/rstrip/single_word are not supported: {odd}")
    byte_of = {c: b for b, c in enumerate(byte_level_chars())}
    try:
        as_bytes = {tok: bytes(byte_of[c] for c in tok) for tok in model["vocab"] if tok not in added}
    except KeyError as e:
        raise ValueError(f"{path}: vocabulary is not byte-level (character {e} has no byte)") from None
    # Ranks: single bytes, then each merge's result in merge order, then any token no merge makes.
    ranks = {bytes([b]): b for b in range(256)}
    for merge in model["merges"]:
        left, right = merge.split(" ") if isinstance(merge, str) else merge
        if left + right not in as_bytes:
            raise ValueError(f"{path}: merge {left!r} + {right!r} makes a token missing from the vocabulary")
        ranks.setdefault(as_bytes[left + right], len(ranks))
    for tok in sorted(as_bytes, key=model["vocab"].get):
        ranks.setdefault(as_bytes[tok], len(ranks))
    id_of_rank = [-1] * len(ranks)  # stays -1 for a byte the vocabulary lacks (SmolLM2 lacks 21)
    for tok, b in as_bytes.items():
        id_of_rank[ranks[b]] = model["vocab"][tok]
    post = tj.get("post_processor") or {}
    # Llama 3's post-processor (alone or in a Sequence) is the template "<|begin_of_text|> $A": it adds BOS.
    templates = [p["single"] for p in [post, *post.get("processors", [])] if p.get("type") == "TemplateProcessing"]
    starts_with_bos = bool(templates) and "SpecialToken" in templates[0][0]
    return dict(ranks=ranks, id_of_rank=id_of_rank, pattern=_pattern(tj.get("pre_tokenizer")), specials=added,
                normalizer=norm and norm["type"], add_bos=starts_with_bos,
                token_bytes={model["vocab"][t]: b for t, b in as_bytes.items()})


def _from_tiktoken_file(path: str) -> dict:
    with open(path, "rb") as f:
        ranks = {base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in f if line.strip())}
    return dict(ranks=ranks, id_of_rank=list(range(len(ranks))), pattern=LLAMA3_PATTERN, normalizer=None,
                specials={t: len(ranks) + i for i, t in enumerate(LLAMA3_SPECIALS)}, add_bos=True,
                token_bytes={rank: b for b, rank in ranks.items()})


class Tokenizer:
    """encode/decode/chat_prompt plus what generation needs:
    token_bytes[id]   raw bytes of every id (an added token: its text), for byte-level stop matching
    vocab_size        number of ids, added tokens included (a model's embedding may have more rows)
    special_ids       added token text -> id (all added tokens, special or not in tokenizer.json)
    bos_id, eos_id, pad_id (or None), stop_ids (ids that end a turn), add_bos (raw prompts start with BOS)
    family            'llama3' | 'qwen2' | 'smollm2' | 'chatml': which chat template chat_prompt renders
    """

    def __init__(self, ranks, id_of_rank, pattern, specials, normalizer, add_bos, token_bytes, config, model_type):
        ranks, id_of_rank = dict(ranks), list(id_of_rank)
        for b in range(256):  # tiktoken needs a rank for every single byte, even one with no id
            if bytes([b]) not in ranks:
                ranks[bytes([b])] = len(id_of_rank)
                id_of_rank.append(-1)
        self._bpe = tiktoken.Encoding("byte_level_bpe", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
        self._id_of_rank, self._normalizer = id_of_rank, normalizer
        self.special_ids: dict[str, int] = specials
        all_bytes = {**token_bytes, **{i: t.encode() for t, i in specials.items()}}
        self.vocab_size = max(all_bytes) + 1
        if len(all_bytes) != self.vocab_size:
            raise ValueError(f"token ids have gaps: {len(all_bytes)} tokens, largest id {self.vocab_size - 1}")
        self.token_bytes: list[bytes] = [all_bytes[i] for i in range(self.vocab_size)]
        by_length = sorted(specials, key=len, reverse=True)  # longest first, like HF's added-token matcher
        self._special_re = re.compile("(" + "|".join(map(re.escape, by_length)) + ")") if specials else None

        template = config.get("chat_template") or ""
        if "<|start_header_id|>" in specials:
            self.family = "llama3"
        elif "<|im_start|>" not in specials:
            raise ValueError("unknown chat format: neither <|start_header_id|> (Llama 3) nor <|im_start|> (ChatML)")
        elif model_type.startswith("qwen2") or "You are Qwen" in template:
            self.family = "qwen2"
        else:
            self.family = "smollm2" if "SmolLM" in template else "chatml"
        self._dated_system = self.family == "llama3" and (not template or "Cutting Knowledge Date" in template)
        fallback = {"bos_token": "<|begin_of_text|>" if "<|begin_of_text|>" in specials else None,
                    "eos_token": next((t for t in STOP_TOKENS if t in specials), None), "pad_token": None}
        self.bos_id, self.eos_id, self.pad_id = (self._id(config.get(k, fallback[k])) for k in fallback)
        if self.eos_id is None:
            raise ValueError("no eos_token in tokenizer_config.json and no known end-of-text token")
        self.add_bos = add_bos and self.bos_id is not None
        self.stop_ids = {self.eos_id} | {specials[t] for t in STOP_TOKENS if t in specials}

    def _id(self, token) -> int | None:
        token = token.get("content") if isinstance(token, dict) else token  # old configs: AddedToken dicts
        if token is not None and token not in self.special_ids:
            raise ValueError(f"tokenizer_config.json names {token!r}, which is not an added token")
        return None if token is None else self.special_ids[token]

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Text -> ids, no BOS. Added tokens' text is plain text unless allow_special."""
        parts = self._special_re.split(text) if allow_special and self._special_re else [text]
        ids = []
        for i, part in enumerate(parts):  # odd i: a special token (re.split keeps the captured separators)
            if i % 2:
                ids.append(self.special_ids[part])
                continue
            part = unicodedata.normalize(self._normalizer, part) if self._normalizer else part
            mapped = (self._id_of_rank[r] for r in self._bpe.encode_ordinary(part))
            ids += [t for t in mapped if t >= 0]  # -1: a byte missing from the vocabulary, dropped as HF does
        return ids

    def encode_prompt(self, text: str) -> list[int]:
        """A prompt's ids: special tokens allowed (a chat prompt has them), BOS first where the family wants it."""
        ids = self.encode(text, allow_special=True)
        return [self.bos_id] + ids if self.add_bos and ids[:1] != [self.bos_id] else ids

    def decode(self, ids) -> str:
        """Ids -> text; special tokens give their text, ids beyond the vocabulary nothing (as in HF)."""
        n = self.vocab_size
        return b"".join(self.token_bytes[i] for i in ids if 0 <= i < n).decode("utf-8", errors="replace")

    def chat_prompt(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The checkpoint's chat template, rendered in Python for system/user/assistant messages."""
        if not messages or any(m.get("role") not in ("system", "user", "assistant") or not isinstance(
                m.get("content"), str) for m in messages):
            raise ValueError("messages must be a non-empty list of {'role': system|user|assistant, 'content': str}")
        if self.family == "llama3":  # contents are stripped (the template's |trim)
            turn = lambda role, text: f"<|start_header_id|>{role}<|end_header_id|>\n\n{text}<|eot_id|>"  # noqa: E731
            text = "<|begin_of_text|>"
            if self._dated_system:  # 3.1+: the system turn always exists and starts with the dates
                system = messages[0]["content"].strip() if messages[0]["role"] == "system" else ""
                messages = messages[1:] if messages[0]["role"] == "system" else messages
                text += turn("system", LLAMA3_DATE + system)
            text += "".join(turn(m["role"], m["content"].strip()) for m in messages)
            return text + ("<|start_header_id|>assistant<|end_header_id|>\n\n" if add_generation_prompt else "")
        if messages[0]["role"] != "system" and self.family in DEFAULT_SYSTEM:
            messages = [{"role": "system", "content": DEFAULT_SYSTEM[self.family]}, *messages]
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def load_tokenizer(folder) -> Tokenizer:
    """Tokenizer of a Hugging Face checkpoint folder (tokenizer.json, or Llama 3's original/tokenizer.model)."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"checkpoint folder not found: {folder}")
    if os.path.isfile(os.path.join(folder, "tokenizer.json")):
        parts = _from_tokenizer_json(os.path.join(folder, "tokenizer.json"))
    elif os.path.isfile(os.path.join(folder, "original", "tokenizer.model")):
        parts = _from_tiktoken_file(os.path.join(folder, "original", "tokenizer.model"))
    else:
        raise FileNotFoundError(f"no tokenizer.json or original/tokenizer.model in {folder}")
    return Tokenizer(**parts, config=_read_json(os.path.join(folder, "tokenizer_config.json")),
                     model_type=_read_json(os.path.join(folder, "config.json")).get("model_type", ""))
