"""plan.py: exact parameter counts, the per-layer activation count against what autograd really saves, and the
plan's arithmetic (FSDP sharding, checkpointing, the micro-batch search) and flags."""

import argparse
import json

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from tools import plan
from model import Block, ModelConfig, Transformer, rope_frequencies

TINY = dict(model_type="llama", vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
            num_attention_heads=6, num_key_value_heads=2, head_dim=8)
TINY_CONFIGS = {
    "llama-gqa-tied": dict(TINY, tie_word_embeddings=True),
    "llama-gqa-untied": dict(TINY, tie_word_embeddings=False),
    "llama-mha-bias": dict(TINY, num_key_value_heads=6, attention_bias=True),
    "qwen2-bias-untied": dict(TINY, model_type="qwen2", tie_word_embeddings=False),
}


def args(**over):
    """plan.py's defaults, with `over` applied (flag names as argparse dests)."""
    return argparse.Namespace(**{**vars(plan.parse_args([])), **over})


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_parameter_count_equals_a_real_model(name, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY_CONFIGS[name]))
    cfg = plan.load_config(str(tmp_path))  # through the local-folder path
    model = Transformer(cfg)
    n = plan.count_params(cfg)
    assert n["total"] == sum(p.numel() for p in model.parameters())
    assert n["block"] == sum(p.numel() for p in model.layers[0].parameters())
    assert n["root"] + cfg.n_layers * n["block"] == n["total"]
    assert n["linear"] == sum(m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
                              for m in model.layers.modules() if isinstance(m, torch.nn.Linear))


@pytest.mark.parametrize("model, billions", [("meta-llama/Llama-3.2-3B-Instruct", 3.21),
                                             ("Qwen/Qwen2.5-3B-Instruct", 3.09),
                                             ("meta-llama/Llama-3.1-8B-Instruct", 8.03)])
def test_paper_models_have_their_published_sizes(model, billions):
    total = plan.count_params(plan.load_config(model.lower()))["total"]  # ids match case-insensitively
    assert abs(total / 1e9 - billions) / billions < 0.01


def saved_activation_bytes(cfg, rows, tokens, autocast, kernel):
    """Bytes autograd really saves in one Block's forward: distinct storages, without the weights (and their
    autocast copies) and the mask and rotary tables that every layer shares."""
    torch.manual_seed(0)
    block = Block(cfg)
    x = torch.randn(rows, tokens, cfg.dim, requires_grad=True)
    slots = torch.arange(tokens)
    mask = (slots[None, :] <= slots[:, None])[None, None].expand(rows, 1, tokens, tokens)
    angles = slots[:, None].float() * rope_frequencies(cfg)
    angles = torch.cat((angles, angles), -1)[None, None].expand(rows, 1, tokens, -1)
    cos, sin = angles.cos(), angles.sin()
    shared = {t.untyped_storage().data_ptr() for t in (cos, sin, mask)}
    seen = {}

    def pack(t):  # activations have a batch dimension: (rows, ...) or flattened (rows·tokens, ...)
        storage = t.untyped_storage()
        if (t.dim() >= 3 or t.shape[0] == rows * tokens) and storage.data_ptr() not in shared:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), sdpa_kernel(kernel), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        block(x, cos, sin, mask, None, 0)
    return sum(seen.values())


@pytest.mark.parametrize("kv_heads, bias", [(2, False), (6, True)])
@pytest.mark.parametrize("autocast", [False, True])
def test_layer_activations_match_what_autograd_saves(kv_heads, bias, autocast):
    """CPU's flash kernel, float32 and bf16 autocast: the count is exact, up to rounding of the tiny shapes."""
    cfg = ModelConfig(vocab_size=50, dim=48, n_layers=1, n_heads=6, n_kv_heads=kv_heads, head_dim=8,
                      hidden_dim=80, attn_bias=bias)
    got = saved_activation_bytes(cfg, 3, 20, autocast, SDPBackend.FLASH_ATTENTION)
    assert got == plan.layer_bytes(cfg, 3, 20, 2 if autocast else 4, "cpu")


def test_math_attention_kernel_count():
    """What CUDA runs for GQA with a mask (the math kernel), checked on CPU in float32."""
    cfg = ModelConfig(vocab_size=50, dim=48, n_layers=1, n_heads=6, n_kv_heads=2, head_dim=8, hidden_dim=80)
    got = saved_activation_bytes(cfg, 3, 20, False, SDPBackend.MATH)
    assert got == plan.layer_bytes(cfg, 3, 20, 4, "cuda")


def test_math_attention_kernel_keeps_float32_for_bf16_inputs():
    """Under CUDA autocast the math kernel gets bf16 q, k, v, and still saves float32 (it upcasts)."""
    cfg = ModelConfig(vocab_size=50, dim=48, n_layers=1, n_heads=6, n_kv_heads=2, head_dim=8, hidden_dim=80)
    rows, tokens = 3, 20
    q, k, v = (torch.randn(rows, h, tokens, 8, dtype=torch.bfloat16, requires_grad=True) for h in (6, 2, 2))
    mask = torch.ones(tokens, tokens, dtype=torch.bool).tril()[None, None].expand(rows, 1, tokens, tokens)
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), sdpa_kernel(SDPBackend.MATH):
        torch.nn.functional.scaled_dot_product_attention(q * 1, k * 1, v * 1, attn_mask=mask, enable_gqa=True)
    o_proj_input = rows * tokens * 2 * 6 * 8  # the bf16 copy o_proj saves, outside the kernel
    assert sum(seen.values()) == plan.attention_bytes(cfg, rows, tokens, 2, "cuda") - o_proj_input


def component(p, phase, prefix):
    [value] = [b for name, b in p[phase] if name.startswith(prefix)]
    return value


def test_fsdp_divides_the_sharded_state_by_the_world():
    cfg = plan.load_config("meta-llama/Llama-3.1-8B-Instruct")
    n = plan.count_params(cfg)["total"]
    ddp, fsdp = plan.plan(cfg, args(world=8)), plan.plan(cfg, args(world=8, fsdp=True))
    for prefix, per_param in [("fp32 weights", 4), ("fp32 gradients", 4), ("AdamW m and v", 8)]:
        assert component(ddp, "always", prefix) == per_param * n
        assert component(fsdp, "always", prefix) == per_param * n / 8
    assert not any(name.startswith("DDP") for name, _ in ddp["always"])  # gradient_as_bucket_view: no second copy
    assert fsdp["peak"] < ddp["peak"]
    assert fsdp["update"] == ddp["update"] and fsdp["rollout"][1:] == ddp["rollout"]  # per-rank work is the same
    blocks = plan.count_params(cfg)["block"] * cfg.n_layers  # plus, while generating, every block gathered in bf16
    assert fsdp["rollout"][0] == ("FSDP: all 32 blocks gathered for generation (compute dtype)", 2 * blocks)


def test_checkpointing_reduces_activations():
    cfg = plan.load_config("meta-llama/Llama-3.2-3B-Instruct")
    full, ckpt = plan.plan(cfg, args()), plan.plan(cfg, args(activation_checkpointing=True))
    assert ckpt["update"][0][1] < full["update"][0][1] / 5
    assert ckpt["peak"] < full["peak"]


def test_activations_scale_with_the_micro_batch_and_the_largest_fitting_one_is_found():
    cfg = plan.load_config("meta-llama/Llama-3.2-3B-Instruct")
    a = args(world=8, fsdp=True, samples_per_prompt=32)  # 8 rows per rank
    peaks = [plan.plan(cfg, args(**{**vars(a), "micro_batch": m}))["peak"] for m in range(1, 9)]
    assert peaks == sorted(peaks) and peaks[0] < peaks[-1]
    budget = (peaks[3] + peaks[4]) / 2 / plan.GiB  # between micro-batch 4 and 5
    assert plan.largest_micro_batch(cfg, args(**{**vars(a), "gpu_gib": budget})) == 4
    assert plan.largest_micro_batch(cfg, args(**{**vars(a), "gpu_gib": peaks[0] / plan.GiB / 2})) == 0
    assert plan.plan(cfg, args(**{**vars(a), "micro_batch": 64}))["micro_batch"] == 8  # capped at the rank's rows


def test_report_gives_a_verdict():
    cfg = plan.load_config("meta-llama/Llama-3.1-8B-Instruct")
    ddp = plan.report(cfg, args(model="8B", world=8))  # DDP: 16+ bytes per parameter on every rank
    assert "DOES NOT FIT" in ddp and "shard them with --fsdp" in ddp
    text = plan.report(cfg, args(model="8B", world=8, fsdp=True, gpu_gib=1000.0))
    assert "FITS" in text and "DOES NOT" not in text


@pytest.mark.parametrize("argv, message", [
    (["--world", "0"], "--world must be >= 1"),
    (["--micro-batch", "0"], "--micro-batch must be >= 1"),
    (["--samples-per-prompt", "1"], "--samples-per-prompt must be >= 2"),
    (["--gpu-gib", "-3"], "--gpu-gib must be > 0"),
    (["--fsdp"], "--fsdp shards over ranks"),
    (["--world", "3"], "must split evenly"),
    (["--measure"], "--measure runs on this machine's CPU"),
    (["--mode", "warm"], "invalid choice"),
])
def test_bad_flags_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit):
        plan.parse_args(argv)
    assert message in capsys.readouterr().err


def test_unknown_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit, match="plan.py: could not get config.json of 'nobody/no-such-model'"):
        plan.main(["--model", "nobody/no-such-model"])
    with pytest.raises(SystemExit, match="no config.json"):
        plan.main(["--model", str(tmp_path)])
