"""A plain-PyTorch Llama 3.x / SmolLM2 / Qwen 2.5 decoder that reads Hugging Face checkpoints.

    model = load_model("smollm2-135m-instruct")          # or a local folder, or a Hub repo id
    logits = model(tokens=ids)                           # (B, T) token ids
    logits = model(embeds=soft_inputs)                   # (B, T, d) input embeddings: the soft-token entry point
    logits = model.decode_step(embeds, slot, pad_lens)   # one input per row at a cache slot: static shapes

Module names mirror Hugging Face's (minus the leading "model."), so a checkpoint's tensors load by
name and `save_model` writes a folder that `transformers` loads back.

Ragged batches are LEFT-padded: row b has `pad_lens[b]` padding slots before its first real token.
Every row then shares one cache write position (slot), which keeps the KV cache a plain preallocated
tensor; a row's rotary position is `slot - pad_lens[b]`, and the attention mask hides padding slots.
"""

import json
import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

SUPPORTED = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}  # SmolLM2 is model_type llama
CACHE_LEN_MULTIPLE = 64  # a compiled decode step rounds its cache length up to this (setup_cache)


@dataclass
class ModelConfig:
    model_type: str = "llama"
    vocab_size: int = 49152
    dim: int = 576
    n_layers: int = 30
    n_heads: int = 9
    n_kv_heads: int = 3
    head_dim: int = 64
    hidden_dim: int = 1536
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # Llama 3.1+: {"rope_type": "llama3", "factor": 32.0, ...}
    max_seq_len: int = 8192
    tie_embeddings: bool = True
    attn_bias: bool = False  # Qwen 2.5 has biases on q, k and v
    bos_token_id: int | None = None
    eos_token_id: int | list | None = None

    @classmethod
    def from_hf(cls, hf: dict) -> "ModelConfig":
        model_type = hf.get("model_type")
        if model_type not in SUPPORTED:
            raise ValueError(f"unsupported architecture model_type={model_type!r} "
                             f"(architectures={hf.get('architectures')}); supported: {sorted(SUPPORTED)}")
        scaling = hf.get("rope_scaling")
        if scaling is None and isinstance(hf.get("rope_parameters"), dict):  # newer transformers key
            scaling = hf["rope_parameters"] if hf["rope_parameters"].get("rope_type", "default") != "default" else None
        if scaling is not None and scaling.get("rope_type", scaling.get("type")) not in ("llama3", "default"):
            raise ValueError(f"unsupported rope_scaling {scaling}")
        theta = hf.get("rope_theta", (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0))
        return cls(
            model_type=model_type,
            vocab_size=hf["vocab_size"],
            dim=hf["hidden_size"],
            n_layers=hf["num_hidden_layers"],
            n_heads=hf["num_attention_heads"],
            n_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
            head_dim=hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"],
            hidden_dim=hf["intermediate_size"],
            norm_eps=hf.get("rms_norm_eps", 1e-6),
            rope_theta=float(theta),
            rope_scaling=scaling,
            max_seq_len=hf.get("max_position_embeddings", 8192),
            tie_embeddings=hf.get("tie_word_embeddings", False),
            attn_bias=model_type == "qwen2" or hf.get("attention_bias", False),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=hf.get("eos_token_id"),
        )

    def to_hf(self, dtype: torch.dtype) -> dict:
        hf = {
            "architectures": [SUPPORTED[self.model_type]], "model_type": self.model_type,
            "vocab_size": self.vocab_size, "hidden_size": self.dim, "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads, "num_key_value_heads": self.n_kv_heads,
            "head_dim": self.head_dim, "intermediate_size": self.hidden_dim, "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta, "rope_scaling": self.rope_scaling,
            "max_position_embeddings": self.max_seq_len, "tie_word_embeddings": self.tie_embeddings,
            "hidden_act": "silu", "bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_id,
            "torch_dtype": str(dtype).removeprefix("torch."),
        }
        if self.model_type == "llama":
            hf["attention_bias"] = self.attn_bias
        return hf


# --------------------------------------------------------------------------- rotary embeddings

def rope_frequencies(cfg: ModelConfig) -> torch.Tensor:
    """Inverse frequencies (head_dim/2,), with Llama 3.1's long-context rescaling when configured."""
    inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float64) / cfg.head_dim)
    s = cfg.rope_scaling
    if s and s.get("rope_type", s.get("type")) == "llama3":
        # Wavelengths longer than old_len/low_freq_factor are slowed down by `factor`, shorter than
        # old_len/high_freq_factor are kept, and the band between is interpolated smoothly.
        factor, old_len = s["factor"], s["original_max_position_embeddings"]
        low, high = s.get("low_freq_factor", 1.0), s.get("high_freq_factor", 4.0)
        wavelen = 2 * math.pi / inv_freq
        smooth = ((old_len / wavelen - low) / (high - low)).clamp(0, 1)
        inv_freq = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    return inv_freq.float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding: rotate each (x_i, x_{i + hd/2}) pair of a head by its position's angle."""
    # x: (B, H, T, hd); cos/sin: (B, 1, T, hd). Hugging Face layout: rotate the two halves of each head.
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


# --------------------------------------------------------------------------- blocks

class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()  # normalise in float32, as the reference implementations do
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class KVCache(nn.Module):
    """Preallocated keys and values for one layer: (B, n_kv_heads, max_len, head_dim), written at slots."""

    def __init__(self, batch: int, max_len: int, n_kv_heads: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (batch, n_kv_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, start: int | torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        if isinstance(start, torch.Tensor):  # decode_step: one token at slot `start`, and every slot is read
            self.k.index_copy_(2, start.view(1), k.to(self.k.dtype))
            self.v.index_copy_(2, start.view(1), v.to(self.v.dtype))
            return self.k, self.v
        end = start + k.shape[2]
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


class PrefixKV:
    """One layer's keys and values of shared prompts in a training pass (Transformer.forward's `prefix`). The
    prompt pass (start 0) records them; the continuation pass attends to [prompt; itself]. Nothing is written
    in place, so autograd, and activation checkpointing's recomputation, see the same tensors."""

    def __init__(self):
        self.k = self.v = None

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor):
        if start == 0:
            self.k, self.v = k, v
            return k, v
        return torch.cat([self.k, k], 2), torch.cat([self.v, v], 2)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=cfg.attn_bias)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=cfg.attn_bias)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=cfg.attn_bias)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(self, x, cos, sin, mask, cache: KVCache | None, start_pos: int):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)     # (B, H, T, hd)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(start_pos, k, v)  # (B, Hkv, start_pos + T, hd)
        # grouped-query attention: each key/value head serves n_heads / n_kv_heads query heads
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.n_heads != self.n_kv_heads)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.down_proj = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # SwiGLU


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, cache, start_pos):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, start_pos)
        return x + self.mlp(self.post_attention_layernorm(x))


# --------------------------------------------------------------------------- the model

class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight  # W_d = E (docs/paper.md §1)
        self.register_buffer("inv_freq", rope_frequencies(cfg), persistent=False)
        self.caches: list[KVCache] | None = None
        self.gradient_checkpointing = False
        self.fp32_logits = True  # under autocast, compute the head in float32 (see forward)
        self.compiled_decode_step = None  # see compile_decode_step

    def setup_cache(self, batch: int, max_len: int):
        """Preallocate one KV cache per layer; `None` for max_len=0 frees them."""
        p = self.embed_tokens.weight
        if self.compiled_decode_step is not None:  # a few cache lengths, so a few compilations, not one per batch
            max_len = -(-max_len // CACHE_LEN_MULTIPLE) * CACHE_LEN_MULTIPLE
        # under autocast (fp32 weights, bf16 compute) keys and values are bf16: store them so, at half the memory
        autocast = torch.is_autocast_enabled(p.device.type)
        dtype = torch.get_autocast_dtype(p.device.type) if autocast else p.dtype
        self.caches = None if max_len == 0 else [
            KVCache(batch, max_len, self.cfg.n_kv_heads, self.cfg.head_dim, dtype, p.device)
            for _ in self.layers]

    def forward(self, tokens=None, embeds=None, start_pos: int = 0, pad_lens=None, use_cache: bool = False,
                last: int | None = None, prefix: tuple | None = None):
        """tokens (B, T) or embeds (B, T, d) -> logits (B, T, V) in float32.

        start_pos: the cache slot of the first input (all rows share slots; see the module docstring).
        pad_lens:  (B,) number of left-padding slots per row, or None for an unpadded batch.
        use_cache: read/write the caches made by `setup_cache` (incremental decoding).
        last:      compute logits for the last `last` positions only (saves a (B, T, V) tensor).
        prefix:    (prompt_embeds (U, P, d), prompt_pad_lens (U,), prompt_of_row (B,)) for a teacher-forced
                   training pass: row b continues prompt prompt_of_row[b]. Each of the U prompts goes through the
                   blocks once and its keys/values (with their gradients) serve all its rows; the output then
                   covers each row's whole sequence [prompt; inputs] (B, P + T, V), or its `last` positions.
                   pad_lens is implied.
        """
        x = self.embed_tokens(tokens) if embeds is None else embeds.to(self.embed_tokens.weight.dtype)
        T = x.shape[1]
        caches = self.caches if use_cache else None
        if prefix is not None:  # the prompts first, recording each layer's keys and values
            prompt_embeds, prompt_pad_lens, prompt_of_row = prefix
            caches = [PrefixKV() for _ in self.layers]
            prompt_x = self.blocks(prompt_embeds.to(x.dtype), 0, prompt_pad_lens, caches)   # (U, P, d)
            for cache in caches:  # row b attends to its prompt's keys: the gradient sums over the G rows
                # index_select, not [prompt_of_row]: indexing's backward sums the repeats in a thread-dependent
                # order, index_select's in a fixed one (a seed reproduces at any thread count)
                cache.k, cache.v = cache.k.index_select(0, prompt_of_row), cache.v.index_select(0, prompt_of_row)
            start_pos, pad_lens = prompt_x.shape[1], prompt_pad_lens[prompt_of_row]
        x = self.blocks(x, start_pos, pad_lens, caches)
        if prefix is not None:  # [prompt; inputs] per row, keeping only the positions that get logits
            keep = prompt_x.shape[1] if last is None else max(0, last - T)
            x = torch.cat([prompt_x[:, prompt_x.shape[1] - keep:].index_select(0, prompt_of_row), x], 1)
            T = x.shape[1]
        if last is not None:
            x = x[:, T - last:]
        x = self.norm(x)
        # The head runs outside autocast: bf16 logits have 8 significant bits (steps of 0.125 around 20), so
        # rounding alone would tie or flip the argmax that greedy decoding and fuzzy CoT (τ = 1e-4) follow. In
        # float32 only the blocks' bf16 rounding is left, and it moves the logits little enough to flip near-ties
        # only (README, "Precision"). With bf16 *weights* it stays bf16.
        if self.fp32_logits:
            with torch.autocast(x.device.type, enabled=False):
                logits = self.lm_head(x.to(self.lm_head.weight.dtype))
        else:
            logits = self.lm_head(x)
        return logits.to(torch.promote_types(logits.dtype, torch.float32))  # float32, or float64 for a float64 model

    def decode_step(self, embeds: torch.Tensor, slot: torch.Tensor, pad_lens: torch.Tensor) -> torch.Tensor:
        """One input per row, embeds (B, 1, d), written at cache slot `slot` (a 0-dim tensor) -> logits (B, V).

        The step of incremental decoding, with static shapes: attention reads every slot of the cache (the mask
        hides those not written yet), and the slot is a tensor, so every call has the same shapes and
        `compile_decode_step` compiles it once per batch size and cache length."""
        step = self.compiled_decode_step or self  # (eager through __call__: forward hooks see every step)
        return step(embeds=embeds, start_pos=slot, pad_lens=pad_lens, use_cache=True)[:, -1]

    def compile_decode_step(self):
        """torch.compile the forward that decode_step runs (`--compile`): the norms, rotary embeddings, masks and
        activations become a few fused kernels; the matrix products are the same library calls as in eager."""
        self.compiled_decode_step = torch.compile(self.forward, fullgraph=True, dynamic=False)

    def blocks(self, x, start_pos: int | torch.Tensor, pad_lens, caches):
        """The transformer blocks on hidden states x (B, T, d) at cache slots start_pos.., -> (B, T, d).
        A tensor start_pos (decode_step) reads every cache slot, so that shapes never change."""
        B, T, _ = x.shape
        if pad_lens is None:
            pad_lens = torch.zeros(B, dtype=torch.long, device=x.device)
        if isinstance(start_pos, torch.Tensor):
            slots = torch.arange(caches[0].k.shape[2], device=x.device)        # (S,) every slot of the cache
            query_slots = start_pos.view(1)                                     # (1,)
        else:
            slots = torch.arange(start_pos + T, device=x.device)               # (S,) every key slot so far
            query_slots = slots[start_pos:]                                     # (T,)
        # mask (B, 1, T, S): causal, and never attend to a row's padding slots
        mask = (slots[None, None, :] <= query_slots[None, :, None]) & (slots[None, None, :] >= pad_lens[:, None, None])
        mask = mask[:, None]
        # padding queries see no key at all; let them see themselves so softmax stays finite
        mask = mask | (slots[None, None, None, :] == query_slots[None, None, :, None])
        positions = (query_slots[None, :] - pad_lens[:, None]).clamp(min=0)    # (B, T) rotary positions
        angles = positions[..., None].float() * self.inv_freq                  # (B, T, hd/2)
        angles = torch.cat((angles, angles), dim=-1)[:, None]                   # (B, 1, T, hd)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        if caches is None:
            mask = mask[..., start_pos:]  # without a cache the keys are just this call's inputs
        for i, layer in enumerate(self.layers):
            cache = None if caches is None else caches[i]
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, mask, cache, start_pos, use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask, cache, start_pos)
        return x


# --------------------------------------------------------------------------- loading and saving

def _read_safetensors(folder: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    elif os.path.exists(os.path.join(folder, "model.safetensors")):
        files = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json in {folder}")
    tensors = {}
    for name in files:
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            raise FileNotFoundError(f"checkpoint shard {path} is listed in the index but missing")
        try:
            tensors.update(load_file(path))
        except Exception as e:  # truncated or corrupt file: say which one
            raise ValueError(f"cannot read safetensors file {path}: {e}") from e
    return tensors


def pick_device(name: str) -> str:
    """auto | cpu | cuda | cuda:N -> a device string; ValueError with the reason otherwise (before any loading)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return name


def load_model(path_or_id: str, device="cpu", dtype=torch.float32) -> Transformer:
    """Load a Hugging Face checkpoint folder, Hub repo id or `smollm2-135m-instruct`."""
    if os.path.isdir(path_or_id):
        folder = path_or_id
    else:
        from default_model import resolve_model  # the offline default, or a Hub download
        folder = resolve_model(path_or_id)
    config_path = os.path.join(folder, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"no config.json in {folder}")
    with open(config_path) as f:
        try:
            cfg = ModelConfig.from_hf(json.load(f))
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"malformed {config_path}: {e!r}") from e
    tensors = {k.removeprefix("model."): v for k, v in _read_safetensors(folder).items()}
    if cfg.tie_embeddings:
        tensors.pop("lm_head.weight", None)
    with torch.device("meta"):
        model = Transformer(cfg)
    expected = {k: v.shape for k, v in model.state_dict().items() if not (cfg.tie_embeddings and k == "lm_head.weight")}
    missing, unexpected = sorted(expected.keys() - tensors.keys()), sorted(tensors.keys() - expected.keys())
    if missing or unexpected:
        raise ValueError(f"checkpoint {folder} does not match {cfg.model_type} config: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, shape in expected.items():
        if tensors[name].shape != shape:
            raise ValueError(f"tensor {name} has shape {tuple(tensors[name].shape)}, config expects {tuple(shape)}")
    model.load_state_dict({k: v.to(dtype) for k, v in tensors.items()}, strict=False, assign=True)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    model.inv_freq = rope_frequencies(cfg)  # buffers made on "meta" are not in the state dict
    return model.to(device)


def save_model(model: Transformer, folder: str, max_shard_bytes: int = 5 * 2**30):
    """Write config.json + safetensors (sharded above max_shard_bytes) in Hugging Face layout."""
    from safetensors.torch import save_file
    os.makedirs(folder, exist_ok=True)
    state = {"model." + k if not k.startswith("lm_head") else k: v.detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    if model.cfg.tie_embeddings:
        state.pop("lm_head.weight")
    shards, size = [{}], 0
    for name, t in state.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    names = ["model.safetensors"] if len(shards) == 1 else \
        [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, shard in zip(names, shards):
        save_file(shard, os.path.join(folder, name), metadata={"format": "pt"})
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
                 "weight_map": {k: n for n, s in zip(names, shards) for k in s}}
        with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(model.cfg.to_hf(model.embed_tokens.weight.dtype), f, indent=2)
