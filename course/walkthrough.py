"""The method in seven cells, on the real modules (no copies of the code): run it top to bottom, or cell by cell
in an editor that knows `# %%` cells (VS Code, PyCharm, Spyder, Jupytext).

    python course/walkthrough.py           # the offline default model (SmolLM2-135M-Instruct): minutes
    python course/walkthrough.py --tiny    # a tiny random model with the same tokenizer (what CI runs)

(Times measured on a busy 2-core machine: course/README.md, "A first look".)

Each cell names the section or equation of docs/paper.md it illustrates and prints what to look at.
"""

# %% 0. Setup: the model, its tokenizer and one arithmetic problem
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository's modules
from data import build_prompt, load_dataset, reward  # noqa: E402
from default_model import resolve_model  # noqa: E402
from model import ModelConfig, Transformer, load_model  # noqa: E402
from rloo import rloo_advantages, rloo_loss  # noqa: E402
from rollout import (STEP_ANSWER, STEP_COT, gaussian_log_prob, generate, log_prob, noise_scale,  # noqa: E402
                     soft_mean, step_log_probs)
from tokenizer import load_tokenizer  # noqa: E402

TINY = "--tiny" in sys.argv[1:]
G = 4                    # samples per prompt (the paper: 32)
COT = 8 if TINY else 48  # CoT budget L (§3)
torch.manual_seed(0)
folder = resolve_model("smollm2-135m-instruct")
tok = load_tokenizer(folder)
if TINY:  # same tokenizer, a 2-layer random model: the mechanics are the same, the words are not
    model = Transformer(ModelConfig(vocab_size=tok.vocab_size, dim=32, n_layers=2, n_heads=4, n_kv_heads=2,
                                    head_dim=8, hidden_dim=64, tie_embeddings=True))
else:
    model = load_model(folder)
problem = load_dataset("arithmetic", "validation", limit=1)[0]
prompt = tok.encode_prompt(build_prompt(problem.question, tok, "chat"))
print(f"question: {problem.question!r}  gold answer: {problem.answer}  prompt: {len(prompt)} tokens")

# %% 1. A hard CoT (§2): sample a token from softmax(logits / τ), feed its embedding
hard = generate(model.eval(), tok, [prompt], "hard", samples_per_prompt=G, max_cot_tokens=COT, seed=0)
print("hard CoT of sample 0:", repr(hard.cot_text[0][-120:]))
print("its answer:", repr(hard.answer_text[0]), "-> reward",
      reward(hard.answer_text[0], problem.answer, problem.numeral_answer), "(Eq. 11)")

# %% 2. Soft and fuzzy inputs (Eq. 3, 5-6): mean = softmax(logits / τ) E, plus noise σ ε, σ = 0.33 × RMS(E)
E = model.embed_tokens.weight.detach()
sigma_abs = noise_scale(model, 0.33)
print(f"σ = 0.33 × RMS(E) = {sigma_abs:.4f}")
logits = torch.randn(1, E.shape[0]) * 5
for tau in (0.5, 1e-4):  # soft, fuzzy: at τ = 1e-4 the mean is (nearly) the argmax token's embedding
    mean = soft_mean(logits, E, tau)
    print(f"τ = {tau}: distance of p E to the argmax row {float((mean - E[logits.argmax()]).norm()):.4f}")
fuzzy = generate(model, tok, [prompt], "fuzzy", samples_per_prompt=G, max_cot_tokens=COT, seed=0)
print("fuzzy CoT's greedy shadow, sample 0:", repr(fuzzy.cot_text[0][-120:]))
print("the G samples differ only through the noise:", len(set(fuzzy.cot_text)), "distinct CoTs of", G)

# %% 3. Eq. 10: every noisy input is an action with a closed-form log-density
step = int((fuzzy.step_kinds[0] == STEP_COT).nonzero()[0])           # the first CoT step of sample 0
x, mu = fuzzy.cot_embeds[0, step], fuzzy.cot_means[0, step]
ours = gaussian_log_prob(x, mu, fuzzy.sigma_abs)
reference = torch.distributions.Normal(mu, fuzzy.sigma_abs).log_prob(x).sum()
print(f"log N(h̃; μ, σ²I) = {float(ours):.2f} (torch.distributions: {float(reference):.2f})")
print("log π of each trajectory, as recorded while generating:", [round(v, 1) for v in fuzzy.logp.tolist()])

# %% 4. Rewards (Eq. 11) and RLOO advantages (Eq. 12): each sample against the mean of the others
rewards = torch.tensor([[reward(text, problem.answer, problem.numeral_answer) for text in fuzzy.answer_text]])
advantages = rloo_advantages(rewards)
print("rewards:", rewards.tolist(), " advantages:", [round(a, 1) for a in advantages[0].tolist()])
if rewards.std() > 0:
    shown_advantages = advantages[0]
else:  # cells 5-6 want a gradient to look at: stand-in advantages, said so, not RLOO's
    shown_advantages = torch.tensor([1.0, -1.0] * (G // 2))
    print("no reward spread in this group: every advantage is 0, so this prompt gives no gradient (Eq. 12).\n"
          f"To still show one, cells 5 and 6 use made-up demonstration advantages {shown_advantages.tolist()} "
          "instead of these RLOO ones.")

# %% 5. The loss (Eq. 13-14): one teacher-forced forward recomputes log π with gradients, no backprop through time
model.train()
teacher = log_prob(model, fuzzy)                                   # (G,) with gradients
print("teacher-forced log π - recorded log π:", [round(v, 3) for v in (teacher - fuzzy.logp).tolist()])
loss = rloo_loss(teacher, shown_advantages)
loss.backward()
grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
which = "RLOO's advantages" if rewards.std() > 0 else "the demonstration advantages, not RLOO's"
print(f"loss {loss.item():.1f} with {which}, gradient norm {grad.norm().item():.3g} "
      "(large: Eq. 10's 1/σ²; train.py clips it to 1.0)")

# %% 6. Which steps that gradient comes from (lab 7): the CoT's Eq. 10 terms against the answer tokens
terms = step_log_probs(model, fuzzy)                               # (G, steps) log π of each step's action
part_norms = []
for kind in (STEP_COT, STEP_ANSWER):
    model.zero_grad()
    rloo_loss((terms * (fuzzy.step_kinds == kind)).sum(1), shown_advantages).backward(retain_graph=True)
    part_norms.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).norm().item())
print(f"gradient norm from the CoT steps {part_norms[0]:.3g}, from the answer tokens {part_norms[1]:.3g}")
print("where the first dwarfs the second (soft on the lab: 21-66x, results/gradient_split.md), clipping and Adam "
      "leave the answer tokens, which earn the reward, little of a step; course/answer_only.py (lab 7) drops the first")
