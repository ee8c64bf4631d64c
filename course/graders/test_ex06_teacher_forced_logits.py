"""Exercise 6 — §4: rollout.teacher_forced_logits, against a step-by-step loop on each row without padding.

The model is a toy written here (not model.py, whose rotary embeddings are exercise 12): causal, blind to
left padding, and it tells position t's input from the earlier ones, so an off-by-one shows. It takes both
calls a solution may make: the whole [prompt; steps] per row, or model.py's `prefix=` (prompts shared)."""

from dataclasses import fields

import torch
import torch.nn as nn
from expect import close, equal

from rollout import STEP_ANSWER, STEP_COT, STEP_PAD, STEP_PREFILL, Rollout, teacher_forced_logits

V, D = 12, 6


class ToyCausalLM(nn.Module):
    """logits_t = (x_t A + Σ_{pad ≤ j < t} x_j B) E^T: causal, and the same whatever the left padding."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed_tokens = nn.Embedding(V, D)
        self.A, self.B = nn.Parameter(torch.randn(D, D)), nn.Parameter(torch.randn(D, D))

    def forward(self, tokens=None, embeds=None, pad_lens=None, last=None, prefix=None, **unused):
        x = self.embed_tokens(tokens) if embeds is None else embeds            # (N, T, d)
        if prefix is not None:  # model.py's shared-prompt call: row n continues prompt rows[n]
            prompt_embeds, prompt_pad_lens, rows = prefix
            x, pad_lens = torch.cat([prompt_embeds[rows], x], 1), prompt_pad_lens[rows]
        N, T, _ = x.shape
        pad_lens = torch.zeros(N, dtype=torch.long) if pad_lens is None else pad_lens
        valid = (torch.arange(T)[None, :] >= pad_lens[:, None]).to(x.dtype)     # (N, T)
        earlier = torch.cumsum(x * valid[..., None], 1) - x * valid[..., None]  # Σ_{pad ≤ j < t} x_j
        logits = (x @ self.A + earlier @ self.B) @ self.embed_tokens.weight.T   # (N, T, V)
        return logits if last is None else logits[:, T - last:]


def make_rollout(mode: str) -> Rollout:
    """Two rows: a padded short prompt and a long one; CoT, prefill and answer steps, then padding."""
    torch.manual_seed(1)
    prompt_ids = torch.tensor([[0, 0, 3, 4], [5, 6, 7, 8]])
    kinds = torch.tensor([[STEP_COT, STEP_COT, STEP_PREFILL, STEP_ANSWER, STEP_PAD],
                          [STEP_COT, STEP_COT, STEP_COT, STEP_PREFILL, STEP_ANSWER]])
    values = dict(prompt_ids=prompt_ids, pad_lens=torch.tensor([2, 0]), tokens=torch.tensor([[1, 2, 9, 10, 0],
                  [11, 2, 3, 9, 4]]), step_kinds=kinds, mode=mode, tau=0.5 if mode != "hard" else 1.0,
                  answer_tau=1.0, sigma_abs=0.1 if mode != "hard" else 0.0,
                  cot_embeds=torch.randn(2, 5, D) if mode != "hard" else None,
                  cot_text=["", ""], answer_text=["", ""], logp=torch.zeros(2), entropy=torch.zeros(2, 5))
    return Rollout(**{f.name: values.get(f.name) for f in fields(Rollout)})


def loop_reference(model, r: Rollout) -> list[list[torch.Tensor | None]]:
    """For each row and step: the logits after [unpadded prompt; steps before it], one forward per step."""
    E, out = model.embed_tokens.weight, []
    for b in range(r.tokens.shape[0]):
        inputs, row = [E[t] for t in r.prompt_ids[b, int(r.pad_lens[b]):]], []
        for s in range(r.tokens.shape[1]):
            kind = int(r.step_kinds[b, s])
            row.append(None if kind == STEP_PAD else model(embeds=torch.stack(inputs)[None])[0, -1])
            is_soft = kind == STEP_COT and r.mode != "hard"
            inputs.append(r.cot_embeds[b, s] if is_soft else E[int(r.tokens[b, s])])
        out.append(row)
    return out


def check(mode):
    model, r = ToyCausalLM(), make_rollout(mode)
    with torch.no_grad():
        ours = teacher_forced_logits(model, r)
        expected = loop_reference(model, r)
    equal(f"teacher_forced_logits(model, {mode} rollout of 2 rows x 5 steps, V = {V}).shape", tuple(ours.shape),
          (2, 5, V))
    for b, row in enumerate(expected):
        for s, logits in enumerate(row):
            if logits is not None:
                close(f"{mode} rollout, row {b} (left padding {int(r.pad_lens[b])}), step {s}: the logits that "
                      "predicted it, against one forward over the row's prompt and its steps before s", ours[b, s],
                      logits, atol=1e-4)


def test_hard_rollout_steps_are_token_embeddings():
    check("hard")


def test_soft_rollout_cot_steps_are_the_recorded_noisy_inputs():
    check("soft")


class Wrapper(nn.Module):
    """Like DistributedDataParallel: calls go through, the model's attributes sit on `.module`."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def test_a_wrapped_model_gives_the_same_logits():
    model, r = ToyCausalLM(), make_rollout("soft")
    with torch.no_grad():
        close("teacher_forced_logits of a model wrapped like DistributedDataParallel (E on .module) against the "
              "bare model's", teacher_forced_logits(Wrapper(model), r), teacher_forced_logits(model, r), rtol=0, atol=0)


def test_gradients_flow_to_the_parameters():
    model, r = ToyCausalLM(), make_rollout("fuzzy")
    teacher_forced_logits(model, r)[0, :4].sum().backward()
    for name, parameter in (("A", model.A), ("embed_tokens.weight", model.embed_tokens.weight)):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, \
            f"the gradient of teacher_forced_logits(...).sum() with respect to the model's {name}: got none"
