"""How much of an RLOO step's gradient comes from the CoT steps and how much from the answer tokens, per mode and σ.

    python tools/gradient_split.py --sigmas 0.33 1.0          # the base model on the lab task: ~5 min, 2 cores
    python tools/gradient_split.py --modes soft --sigmas 0.33 --answer-tau 0.5   # one mode, another answer τ

For each mode, σ and seed: one step of the lab preset on the base model (2 prompts × 16 samples, CoT 8; seed s
takes the training split's prompts 2s and 2s + 1), its rewards and RLOO advantages (Eq. 11-12), then the
gradient norm of the loss (Eq. 13-14) restricted to the CoT steps' log-probabilities, and to the answer steps'. The
CoT part of soft and fuzzy is Eq. 10, whose gradient carries a 1/σ: where it dwarfs the answer part, gradient
clipping and Adam's normalisation leave the answer tokens, which earn the reward, little of each step
(course/README.md, "How it was tuned").
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data import DATASET_DEFAULTS, build_prompt, load_dataset, reward  # noqa: E402
from default_model import resolve_model  # noqa: E402
from model import load_model  # noqa: E402
from rloo import rloo_advantages, rloo_loss  # noqa: E402
from rollout import STEP_ANSWER, STEP_COT, generate, step_log_probs  # noqa: E402
from tokenizer import load_tokenizer  # noqa: E402


def grad_norm(model, loss) -> float:
    model.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None]).item()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.33, 1.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--modes", nargs="+", choices=["hard", "soft", "fuzzy"], default=["hard", "soft", "fuzzy"])
    ap.add_argument("--answer-tau", type=float, default=1.0, help="the answer tokens' sampling temperature (> 0)")
    args = ap.parse_args()
    if not args.answer_tau > 0 or not all(s > 0 for s in args.sigmas):
        ap.error("--answer-tau and --sigmas must be > 0: a greedy policy has no log-probability")
    lab = DATASET_DEFAULTS["lab"]
    B, G = lab["prompts_per_step"], lab["samples_per_prompt"]
    folder = resolve_model("smollm2-135m-instruct")
    model, tok = load_model(folder), load_tokenizer(folder)
    problems = load_dataset("lab", "train")
    print("| mode | σ | answer τ | seed | accuracy | CoT-part gradient norm | answer-part gradient norm "
          "| CoT / answer |")
    print("|---|---|---|---|---|---|---|---|")
    for mode in args.modes:
        for sigma in ([None] if mode == "hard" else args.sigmas):
            for seed in args.seeds:
                batch = problems[seed * B:(seed + 1) * B]
                prompts = [tok.encode_prompt(build_prompt(p.question, tok, lab["prompt_format"])) for p in batch]
                r = generate(model, tok, prompts, mode, samples_per_prompt=G, sigma=sigma or 0.0,
                             max_cot_tokens=lab["max_cot_tokens"], answer_tau=args.answer_tau, seed=seed)
                rewards = torch.tensor([reward(text, batch[i // G].answer, numeral_only=True)
                                        for i, text in enumerate(r.answer_text)])
                advantages = rloo_advantages(rewards.view(B, G)).flatten()
                terms = step_log_probs(model, r)                                 # (N, S)
                cot, answer = [grad_norm(model, rloo_loss((terms * (r.step_kinds == kind)).sum(1), advantages))
                               for kind in (STEP_COT, STEP_ANSWER)]
                ratio = f"{cot / answer:.1f}" if answer > 0 else "- (all rewards equal: no signal)"
                print(f"| {mode} | {sigma if sigma else '-'} | {args.answer_tau} | {seed} | "
                      f"{(rewards == 100).float().mean():.2f} | {cot:.3g} | {answer:.3g} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
