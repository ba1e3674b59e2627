"""Response-only loss for every architecture: no prompt token is ever a scored target or noised, and the batches
carry the stored masks in each objective's format."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lmcore.data.instruct_batches import format_rows
from lmcore.models import ModelConfig
from lmcore.objectives import get_objective
from lmcore.tokenizer import EOS_ID, IGNORE_ID, MASK_ID, PAD_ID

TINY = ModelConfig(d_model=32, n_heads=4, n_layers=2, d_ff=64, vocab_size=64)


def stored_rows(seed: int = 0, n: int = 6, width: int = 24) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Rows as prep_instruct stores them: prompt, response, <eos>, <pad>; mask 1 on response and <eos>."""
    rng = np.random.default_rng(seed)
    tokens, mask, prompt_lens = np.full((n, width), PAD_ID), np.zeros((n, width), np.uint8), []
    for i in range(n):
        p, r = int(rng.integers(4, 12)), int(rng.integers(1, width - 12))
        tokens[i, : p + r] = rng.integers(6, TINY.vocab_size, p + r)
        tokens[i, p + r] = EOS_ID
        mask[i, p : p + r + 1] = 1
        prompt_lens.append(p)
    return tokens, mask, prompt_lens


class Capture(nn.Module):
    """Wraps a model: records its inputs and keeps the gradient of its output (the logits)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.cfg, self.inputs, self.out = inner, inner.cfg, [], None

    def forward(self, *args, **kw):
        self.inputs.append(args)
        out = self.inner(*args, **kw)
        if out.requires_grad:
            out.retain_grad()
        self.out = out
        return out


def objective_and_batch(arch: str):
    section = {"fixed_k": 3} if arch == "sdd" else {}
    objective = get_objective(arch, section)
    torch.manual_seed(0)
    model = Capture(objective.build_model(ModelConfig(**{**TINY.to_dict(), "causal": objective.causal})))
    tokens, mask, prompt_lens = stored_rows()
    return objective, model, format_rows(tokens, mask, objective), prompt_lens


def test_batches_follow_each_objectives_format():
    tokens, mask, plens = stored_rows()
    ar = format_rows(tokens, mask, get_objective("ar"))
    assert (ar["tokens"][:, 0] == EOS_ID).all() and (ar["loss_mask"][:, 0] == 0).all()  # AR: document start
    width = ar["tokens"].shape[1]
    assert torch.equal(ar["loss_mask"][:, 1:], torch.from_numpy(mask[:, : width - 1]).long())
    assert not (ar["tokens"][:, 1:][torch.from_numpy(mask[:, : width - 1]) == 0] == IGNORE_ID).any()
    diff = format_rows(tokens, mask, get_objective("diffusion"))
    assert (diff["tokens"] != PAD_ID).all() and torch.equal(
        diff["tokens"] == IGNORE_ID, torch.from_numpy(tokens == PAD_ID)
    )
    for i, p in enumerate(plens):  # prompt masked out; response, <eos> and the <ignore> after it in
        assert (diff["loss_mask"][i, :p] == 0).all() and (diff["loss_mask"][i, p:] == 1).all()
    assert torch.equal(diff["loss_mask"].bool() & (diff["tokens"] != IGNORE_ID), torch.from_numpy(mask).bool())


@pytest.mark.parametrize("arch", ["ar", "diffusion", "sdd"])
def test_no_prompt_position_contributes_to_the_loss(arch):
    objective, model, batch, _plens = objective_and_batch(arch)
    for seed in range(4):
        model.inner.zero_grad()
        loss, _ = objective.loss(model, batch, torch.Generator().manual_seed(seed))
        loss.backward()
        grad = model.out.grad.abs().sum(-1)  # [B, T]: how much each position's prediction moves the loss
        # AR's position i predicts token i+1: position i is a prompt target when token i+1 is in the prompt.
        scored = batch["loss_mask"][:, 1:] if arch == "ar" else batch["loss_mask"]
        grad = grad[:, : scored.shape[1]]
        assert (grad[scored == 0] == 0).all(), f"{arch}: a prompt position has a gradient"
        assert (grad[scored == 1] > 0).any()


def test_diffusion_never_masks_a_prompt_token():
    objective, model, batch, plens = objective_and_batch("diffusion")
    masked_response = 0
    for seed in range(20):
        model.inputs.clear()
        with torch.no_grad():
            objective.loss(model, batch, torch.Generator().manual_seed(seed))
            objective.eval_stats(model, batch, torch.Generator().manual_seed(seed))
        for (z,) in model.inputs:
            for i, p in enumerate(plens):
                assert torch.equal(z[i, :p], batch["tokens"][i, :p]), "a prompt token was masked"
                masked_response += int((z[i, p:] == MASK_ID).sum())
    assert masked_response > 0


def test_diffusion_nelbo_is_per_response_token():
    _objective, _model, batch, plens = objective_and_batch("diffusion")
    from lmcore.objectives.diffusion import _document_tokens

    n = _document_tokens(batch).sum().item()
    assert n == sum(int((batch["loss_mask"][i] * (batch["tokens"][i] != IGNORE_ID)).sum()) for i in range(len(plens)))


def test_sdd_never_noises_a_prompt_position():
    objective, model, batch, plens = objective_and_batch("sdd")
    eps, k = objective.cfg.candidate_prob, objective.k
    corrupted = 0
    for seed in range(10):
        model.inputs.clear()
        with torch.no_grad():
            objective.loss(model, batch, torch.Generator().manual_seed(seed))
            objective.eval_stats(model, batch, torch.Generator().manual_seed(seed))
        for probs, idx, _t in model.inputs:
            for i, p in enumerate(plens):
                assert torch.equal(idx[i, :p, 0], batch["tokens"][i, :p]), "a prompt position was noised"
                assert torch.allclose(probs[i, :p, 0], torch.tensor(1 - eps * (k - 1)))
                assert torch.allclose(probs[i, :p, 1:], torch.tensor(eps))
                corrupted += int((idx[i, p:, 0] != batch["tokens"][i, p:]).sum())
    assert corrupted > 0
