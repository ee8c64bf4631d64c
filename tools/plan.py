"""The memory each GPU needs to train with train.py, planned from config.json alone (nothing is allocated).

    python tools/plan.py --model meta-llama/Llama-3.1-8B-Instruct --world 8 --fsdp      # the paper's 8B on 8 × 80 GB
    python tools/plan.py --model Qwen/Qwen2.5-3B-Instruct --world 8 --activation-checkpointing
    python tools/plan.py --measure        # check: measured peak of two training steps of the default model on CPU vs the plan

--model is a local folder, a Hub id (only its config.json is fetched; HF_HUB_OFFLINE is honoured), the offline
default `smollm2-135m-instruct`, or one of the paper's three models, whose config values are written below so
the plan needs no network. Parameters are counted exactly by building model.py's Transformer on the meta device.

What is counted, per GPU (Ψ = parameters; W = ranks; N = rows per rank = B·G/W; m = micro-batch rows;
P = prompt, S = CoT + prefill + answer steps, T = P + S; c = 2 bytes under bf16 autocast (GPU), 4 in float32 (CPU)):
  always      fp32 weights 4Ψ, gradients 4Ψ (train.py allocates them up front), AdamW m and v 8Ψ: 16Ψ under DDP,
              16Ψ/W under FSDP (parameters, gradients and optimizer state sharded), plus
              DDP (W > 1): nothing more: train.py passes gradient_as_bucket_view=True, so the gradients are
                          views into the reducer's buckets rather than a second flat copy;
              FSDP: the root unit (embeddings, final norm, untied head) gathered in fp32 (train.py keeps the
                    root in fp32) for the whole forward and backward, two blocks gathered in c bytes (the one
                    computing and the one prefetched), and the
                    unsharded fp32 gradients of the root and one block before their reduce-scatter;
              bf16 autocast under DDP: autocast's cached bf16 copy of every nn.Linear weight and bias (2 bytes each);
              on GPU: a 1 GiB reserve for the CUDA context and cuBLAS/NCCL workspaces (assumed, not measured).
  rollout     (no gradient, rollout.generate) under FSDP every block gathered in c bytes (train.py gathers the
              whole model once per rollout); KV cache 2·layers·N·kv_heads·(P + S)·head_dim·c (model.setup_cache),
              the decode step's working set of 5 (N, V) float32 tensors (logits, log-softmax, its exp, and the
              sampler's float64 CDF or the tempered softmax's two temporaries) plus the stop matcher's (22, V) table,
              and the recorded trajectory (soft/fuzzy: h̃ and μ (N, S, d) float32, top-64 logits and ids).
  update      (rollout.log_prob with gradient, per micro-batch of m rows) the tensors autograd saves per layer:
              float32 residual stream x, its normalised form, x after attention and its normalised form (4 × 4d
              per token, float32 even under autocast because the residual adds a bf16 output to a float32 input;
              and the two RMSNorms' rsqrt, 2 × 4);
              the inputs of the projections (under autocast each nn.Linear casts its input separately: q, k, v,
              gate, up → 5 × c·d; in float32 two shared tensors → 2 × 4d); attention (see attention_bytes);
              SwiGLU's gate, silu(gate), up and their product (4 × c·hidden). With activation checkpointing only
              each layer's input x (4d per token) is kept, plus one layer recomputed in the backward.
              The head: log_prob's (m, S, V) float32 tensors, which dominate for big vocabularies: soft/fuzzy
              (anchored_surrogate) at most 7 alive at once (logits, the logits at generation, p, s, s − s_argmax,
              the coefficient, coef·logits), hard 4 (logits, two log-softmaxes, a temporary).
  optimizer   AdamW's temporaries: on GPU (foreach) one fp32 copy of the local parameters (√v); on CPU
              (per parameter) two copies of the largest one.
Peak = always + max(rollout, update, optimizer). Not counted: the prompt prefill (one layer over B prompts at a
time) and allocator fragmentation.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time


import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from model import ModelConfig, Transformer
from rollout import JACOBIAN_TOP_K  # generation-time logits recorded per soft/fuzzy CoT step

GiB = 2**30
PREFILL_TOKENS = 12        # "The final answer is: \boxed{" (rollout.PREFILL_BUDGET) is 9 tokens for SmolLM2; room for others
DECODE_VOCAB_TENSORS = 5   # (N, V) float32 tensors alive at once in one generate step (see the docstring)
HEAD_VOCAB_TENSORS = {"hard": 4, "soft": 7, "fuzzy": 7}  # (m, S, V) float32 tensors alive at once in log_prob
CUDA_RESERVE = 1 * GiB     # CUDA context, cuBLAS and NCCL workspaces: an assumption, not a measurement

# The paper's three models (docs/paper.md §5: B = 2 × G = 32 on one node of 8 × H100), their config.json values.
# Parameter counts (tests/test_plan.py): 3.21B, 3.09B, 8.03B.
PAPER_MODELS = {
    "meta-llama/Llama-3.2-3B-Instruct": dict(
        model_type="llama", hidden_size=3072, num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8,
        head_dim=128, intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True, rms_norm_eps=1e-5,
        rope_theta=500000.0, max_position_embeddings=131072,
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192}),
    "Qwen/Qwen2.5-3B-Instruct": dict(
        model_type="qwen2", hidden_size=2048, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
        intermediate_size=11008, vocab_size=151936, tie_word_embeddings=True, rms_norm_eps=1e-6,
        rope_theta=1000000.0, max_position_embeddings=32768),
    "meta-llama/Llama-3.1-8B-Instruct": dict(
        model_type="llama", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
        head_dim=128, intermediate_size=14336, vocab_size=128256, tie_word_embeddings=False, rms_norm_eps=1e-5,
        rope_theta=500000.0, max_position_embeddings=131072,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192}),
}


# --------------------------------------------------------------------------- the model: config and parameters

def load_config(model: str) -> ModelConfig:
    """A local folder's config.json, a paper model's (written above), the default model's, or a Hub id's."""
    paper = {k.lower(): v for k, v in PAPER_MODELS.items()}
    if os.path.isdir(model):
        path = os.path.join(model, "config.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no config.json in {model}")
    elif model.lower() in paper:
        return ModelConfig.from_hf(paper[model.lower()])
    else:
        from default_model import DEFAULT_NAME, resolve_model
        if model == DEFAULT_NAME:
            path = os.path.join(resolve_model(model), "config.json")
        else:
            from huggingface_hub import hf_hub_download
            offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
            try:
                path = hf_hub_download(model, "config.json", local_files_only=offline)
            except Exception as e:
                raise FileNotFoundError(f"could not get config.json of {model!r} ({type(e).__name__}: {e}); give a "
                                        f"local folder, or one of: {', '.join(PAPER_MODELS)}") from None
    with open(path) as f:
        try:
            return ModelConfig.from_hf(json.load(f))
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"malformed {path}: {e!r}") from None


def count_params(cfg: ModelConfig) -> dict:
    """Exact parameter counts of model.py's Transformer, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = Transformer(cfg)
    numel = lambda module: sum(p.numel() for p in module.parameters())  # a tied head is counted once
    linears = [m for m in model.layers.modules() if isinstance(m, torch.nn.Linear)]
    return {"total": numel(model),
            "block": numel(model.layers[0]),
            "root": numel(model) - sum(numel(b) for b in model.layers),  # embeddings, final norm, untied head
            "linear": sum(numel(m) for m in linears),                    # what autocast casts to bf16
            "largest": max(p.numel() for p in model.parameters())}


# --------------------------------------------------------------------------- activations

def attention_bytes(cfg: ModelConfig, rows: int, tokens: int, c: int, device: str) -> int:
    """What scaled_dot_product_attention and o_proj save for the backward in one layer.

    CPU: the flash kernel (measured: it takes the boolean mask and GQA) saves q, k, v, the output, the
    log-sum-exp and the mask converted to a (rows, 1, T, T) float. CUDA: flash takes no mask and the
    memory-efficient kernel no GQA, so with both the math kernel runs: q, k and v expanded to all heads and
    the (rows, heads, T, T) probabilities, in float32 even for bf16 inputs (it upcasts unless
    torch.backends.cuda.allow_fp16_bf16_reduction_math_sdp is set). Not measured on a GPU; the math kernel's
    count is checked on CPU (tests/test_plan.py)."""
    q, kv, H = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim, cfg.n_heads
    gqa = cfg.n_heads != cfg.n_kv_heads
    if device == "cuda" and gqa:  # q, k, v expanded and the probabilities, float32; o_proj's input, a copy
        per_token = 4 * (3 * q + H * tokens) + c * q
    else:                         # q, k, v, output (o_proj's input is a view of it); log-sum-exp; the mask
        per_token = c * (2 * q + 2 * kv) + 4 * H + c * tokens
    return rows * tokens * per_token


def layer_bytes(cfg: ModelConfig, rows: int, tokens: int, c: int, device: str) -> int:
    """Bytes autograd saves in one Block's forward (see the module docstring)."""
    autocast = c < 4
    residual = 4 * 4 * cfg.dim + 2 * 4                          # x, norm(x), x + attn, its norm: float32; 2 rsqrt
    projection_inputs = (5 if autocast else 2) * c * cfg.dim    # q/k/v and gate/up inputs
    mlp = 4 * c * cfg.hidden_dim                                # gate, silu(gate), up, silu(gate)·up
    return rows * tokens * (residual + projection_inputs + mlp) + attention_bytes(cfg, rows, tokens, c, device)


# --------------------------------------------------------------------------- the plan

def plan(cfg: ModelConfig, a) -> dict:
    """{"always": [(component, bytes)], "rollout": [...], "update": [...], "optimizer": [...], "peak": bytes}."""
    n = count_params(cfg)
    W, N = a.world, a.prompts_per_step * a.samples_per_prompt // a.world
    m = min(a.micro_batch, N)  # train.py's micro-batches never hold more than the rank's rows
    c = 4 if a.device == "cpu" else 2
    S = a.max_cot_tokens + PREFILL_TOKENS + a.max_answer_tokens
    T = a.prompt_len + S
    V, d, L = cfg.vocab_size, cfg.dim, cfg.n_layers
    soft = a.mode != "hard"
    shard = W if a.fsdp else 1
    sharded = "" if not a.fsdp else f", FSDP: 1/{W}"

    always = [(f"fp32 weights ({n['total'] / 1e9:.2f}B parameters{sharded})", 4 * n["total"] / shard),
              (f"fp32 gradients{sharded}", 4 * n["total"] / shard),
              (f"AdamW m and v, fp32{sharded}", 8 * n["total"] / shard)]
    if a.fsdp:
        always.append(("FSDP gathered: root unit (fp32) + 2 blocks (compute dtype)", 4 * n["root"] + c * 2 * n["block"]))
        always.append(("FSDP unsharded fp32 gradients: root unit + 1 block", 4 * (n["root"] + n["block"])))
    elif c < 4:
        always.append(("autocast's bf16 copies of the nn.Linear weights", 2 * n["linear"]))
    if a.device == "cuda":
        always.append(("CUDA context and workspaces (assumed)", CUDA_RESERVE))

    record = N * S * ((2 * 4 * d + JACOBIAN_TOP_K * (4 + 8)) if soft else 0) + N * S * (4 + 8 + 8)
    rollout = [(f"KV cache: {N} rows × {T} slots × {L} layers", 2 * L * N * cfg.n_kv_heads * T * cfg.head_dim * c),
               (f"decode step: {DECODE_VOCAB_TENSORS} × ({N}, V={V}) fp32 + stop table",
                DECODE_VOCAB_TENSORS * N * V * 4 + 22 * V * 8),  # StopMatcher: (21, V) table + (V,) braces, int64
               ("recorded trajectories", record)]
    if a.fsdp:
        rollout.insert(0, (f"FSDP: all {L} blocks gathered for generation (compute dtype)", c * L * n["block"]))

    if a.activation_checkpointing:
        layers = (f"layer inputs ({L} × {m} × {T} × d fp32) + 1 layer recomputed",
                  L * m * T * 4 * d + layer_bytes(cfg, m, T, c, a.device))
    else:
        layers = (f"saved activations: {L} layers × {m} rows × {T} tokens", L * layer_bytes(cfg, m, T, c, a.device))
    # (m, S, V) float32; the final norm's saved input (m, T, d), its output and the head's input (m, S + 1, d);
    # the (m, S, d) residual, μ, p @ E and h̃ − μ of anchored_surrogate
    head = HEAD_VOCAB_TENSORS[a.mode] * m * S * V * 4 + m * (T + 2 * S) * d * 4 + 4 * m * S * d * 4
    update = [layers,
              ("mask, rotary tables", m * T * T + 2 * 4 * m * T * cfg.head_dim),
              (f"log_prob head: {HEAD_VOCAB_TENSORS[a.mode]} × ({m}, S={S}, V) fp32 + (m, S, d)", head),
              ("recorded trajectories (kept for the update)", record)]
    optimizer = [("AdamW temporaries", 4 * n["total"] / shard if a.device == "cuda" else 2 * 4 * n["largest"]),
                 ("recorded trajectories", record)]
    phases = {"always": always, "rollout": rollout, "update": update, "optimizer": optimizer}
    total = lambda rows: sum(b for _, b in rows)
    peak = total(always) + max(total(rollout), total(update), total(optimizer))
    return {**phases, "peak": peak, "rows_per_rank": N, "micro_batch": m, "seq": (a.prompt_len, S, T), "params": n}


def largest_micro_batch(cfg: ModelConfig, a) -> int:
    """The largest micro-batch (≤ rows per rank) whose plan fits in --gpu-gib; 0 if none does."""
    rows = a.prompts_per_step * a.samples_per_prompt // a.world
    fits = [m for m in range(1, rows + 1)
            if plan(cfg, argparse.Namespace(**{**vars(a), "micro_batch": m}))["peak"] <= a.gpu_gib * GiB]
    return max(fits, default=0)


def report(cfg: ModelConfig, a) -> str:
    p = plan(cfg, a)
    P, S, T = p["seq"]
    how = "FSDP" if a.fsdp else ("DDP" if a.world > 1 else "one process")
    dtype = "bf16 autocast, fp32 master weights" if a.device == "cuda" else "float32"
    lines = [f"model {a.model}: {p['params']['total'] / 1e9:.3f}B parameters, {cfg.n_layers} layers, d={cfg.dim}, "
             f"V={cfg.vocab_size}, {'tied' if cfg.tie_embeddings else 'untied'} head",
             f"{a.world} × {a.device} ({dtype}), {how}; B={a.prompts_per_step} prompts × G={a.samples_per_prompt} "
             f"samples, {p['rows_per_rank']} rows per rank; mode {a.mode}",
             f"sequence: prompt {P} + CoT {a.max_cot_tokens} + prefill {PREFILL_TOKENS} + answer "
             f"{a.max_answer_tokens} = {T} tokens; micro-batch {p['micro_batch']}, activation checkpointing "
             f"{'on' if a.activation_checkpointing else 'off'}", "",
             f"{'component':<70}{'GiB':>9}"]
    for phase in ("always", "rollout", "update", "optimizer"):
        rows = p[phase]
        if phase != "always":
            lines.append(f"-- {phase}")
        lines += [f"  {name:<68}{b / GiB:>9.2f}" for name, b in rows]
        lines.append(f"  {'= ' + phase:<68}{sum(b for _, b in rows) / GiB:>9.2f}")
    lines.append(f"{'peak per GPU = always + max(rollout, update, optimizer)':<70}{p['peak'] / GiB:>9.2f}")
    best = largest_micro_batch(cfg, a)  # 0: none
    verdict = "FITS" if p["peak"] <= a.gpu_gib * GiB else "DOES NOT FIT"
    static = sum(b for _, b in p["always"]) + sum(b for _, b in p["optimizer"])
    if best:
        advice = f"largest micro-batch that fits: {best}" + (" (all the rank's rows at once)"
                                                             if best == p["rows_per_rank"] else "")
    elif static > a.gpu_gib * GiB:
        advice = (f"no micro-batch fits: weights, gradients and AdamW state alone need {static / GiB:.1f} GiB; "
                  + ("use more ranks" if a.fsdp else "shard them with --fsdp"))
    else:
        advice = "no micro-batch fits: try --activation-checkpointing, or fewer rows per rank (more ranks, smaller G·B)"
    lines.append(f"verdict for {a.gpu_gib:g} GiB: {verdict}; {advice}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the check on CPU

def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_child(a) -> dict:
    """Two training steps of train.py's pieces (generate, log_prob backward per micro-batch, clip, AdamW) on CPU
    in float32; the peak resident memory above what the process held before the model was loaded."""
    from data import build_prompt, load_dataset
    from default_model import resolve_model
    from model import load_model
    from rloo import rloo_loss
    from rollout import generate, log_prob
    from tokenizer import load_tokenizer
    folder = resolve_model(a.model)
    tok = load_tokenizer(folder)
    problems = load_dataset("arithmetic", "train")[:a.prompts_per_step]
    prompts = [tok.encode_prompt(build_prompt(p.question, tok, "chat")) for p in problems]
    torch.manual_seed(0)
    baseline = rss()
    model = load_model(folder)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-7)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    model.gradient_checkpointing = a.activation_checkpointing
    N, shapes = a.prompts_per_step * a.samples_per_prompt, []
    for step in range(2):  # the second step has AdamW's state: the steady state the plan describes
        model.eval()
        roll = generate(model, tok, prompts, a.mode, samples_per_prompt=a.samples_per_prompt,
                        max_cot_tokens=a.max_cot_tokens, max_answer_tokens=a.max_answer_tokens, seed=step)
        shapes.append((roll.prompt_ids.shape[1], roll.tokens.shape[1]))
        model.train()
        optimizer.zero_grad(set_to_none=False)
        advantages = torch.randn(N)  # all rows active: the largest update
        for i in range(0, N, a.micro_batch):
            rows = list(range(i, min(N, i + a.micro_batch)))
            rloo_loss(log_prob(model, roll.select(rows)), advantages[rows], total=N).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline
    return {"peak_bytes": peak, "shapes": shapes}


def measure(cfg: ModelConfig, a, argv: list[str]) -> str:
    """Run measure_child in a fresh process (its own peak RSS; glibc told to give every block ≥ 64 KiB back to
    the OS at once, so the resident size follows the tensors alive) and compare it with the plan."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    child = [sys.executable, os.path.abspath(__file__), "--measure-child", *(x for x in argv if x != "--measure")]
    t0 = time.time()
    out = subprocess.run(child, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"the measurement failed:\n{out.stderr[-3000:]}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    P, S = max(s[0] for s in got["shapes"]), max(s[1] for s in got["shapes"])
    planned = plan(cfg, a)["peak"]
    same = argparse.Namespace(**{**vars(a), "prompt_len": P, "max_answer_tokens": S - a.max_cot_tokens - PREFILL_TOKENS})
    exact = plan(cfg, same)["peak"]
    return (f"measured on CPU ({time.time() - t0:.0f} s, two steps): peak {got['peak_bytes'] / GiB:.3f} GiB above the "
            f"process before the model loaded; rollouts had prompt {P} and {S} steps\n"
            f"planned (prompt {a.prompt_len}, S = CoT + prefill + answer budgets): {planned / GiB:.3f} GiB, "
            f"ratio plan/measured {planned / got['peak_bytes']:.3f}\n"
            f"planned for the measured shapes (prompt {P}, S = {S}): {exact / GiB:.3f} GiB, "
            f"ratio plan/measured {exact / got['peak_bytes']:.3f}")


# --------------------------------------------------------------------------- command line

def parse_args(argv=None):
    from data import DATASET_DEFAULTS
    paper = DATASET_DEFAULTS["gsm8k"]  # the paper's GSM8K setting (§6), as train.py uses it
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--world", type=int, default=1, help="number of GPUs (ranks)")
    ap.add_argument("--fsdp", action="store_true", help="shard weights, gradients and AdamW state (FSDP2)")
    ap.add_argument("--micro-batch", type=int, default=8, help="rows per log_prob forward/backward (train.py's)")
    ap.add_argument("--activation-checkpointing", action="store_true")
    ap.add_argument("--max-cot-tokens", type=int, default=paper["max_cot_tokens"], help="CoT budget L")
    ap.add_argument("--max-answer-tokens", type=int, default=32)
    ap.add_argument("--samples-per-prompt", type=int, default=paper["samples_per_prompt"], help="G")
    ap.add_argument("--prompts-per-step", type=int, default=paper["prompts_per_step"], help="B, over all ranks")
    ap.add_argument("--prompt-len", type=int, default=256, help="longest prompt in tokens (GSM8K's raw prompt: < 256)")
    ap.add_argument("--mode", choices=list(HEAD_VOCAB_TENSORS), default="fuzzy")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                    help="cuda: bf16 autocast over fp32 weights (train.py on GPU); cpu: float32 throughout")
    ap.add_argument("--gpu-gib", type=float, default=79.6,
                    help="memory per GPU (or of the CPU machine), GiB; an 80 GB H100 has 81559 MiB = 79.6 GiB")
    ap.add_argument("--measure", action="store_true", help="measure two training steps on CPU and compare")
    ap.add_argument("--measure-child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    problems = [f"--{k.replace('_', '-')} must be >= 1" for k in
                ("world", "micro_batch", "max_cot_tokens", "max_answer_tokens", "prompts_per_step", "prompt_len")
                if getattr(a, k) < 1]
    if a.samples_per_prompt < 2:
        problems.append("--samples-per-prompt must be >= 2 (the RLOO baseline needs other samples)")
    if not a.gpu_gib > 0:
        problems.append("--gpu-gib must be > 0")
    if a.fsdp and a.world < 2:
        problems.append("--fsdp shards over ranks: give --world >= 2")
    if a.world >= 1 and a.prompts_per_step * a.samples_per_prompt % a.world:
        problems.append(f"the {a.prompts_per_step} × {a.samples_per_prompt} rows of a step must split evenly over "
                        f"--world {a.world} ranks (as train.py requires)")
    if (a.measure or a.measure_child) and (a.device != "cpu" or a.world != 1):
        problems.append("--measure runs on this machine's CPU: give --device cpu and --world 1")
    if problems:
        ap.error("; ".join(problems))
    return a


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    a = parse_args(argv)
    if a.measure_child:
        print(json.dumps(measure_child(a)))
        return
    try:
        cfg = load_config(a.model)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"plan.py: {e}")
    print(report(cfg, a))
    if a.measure:
        print(measure(cfg, a, argv))


if __name__ == "__main__":
    main()
