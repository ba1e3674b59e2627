"""The lean loss path: chunked head + cross-entropy equals the full-logits reference (values and gradients), for the
function itself and for every objective, never builds more than a chunk of logits, and is deterministic."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmcore.models import ModelConfig
from lmcore.objectives import get_objective, losses
from lmcore.objectives.losses import linear_cross_entropy, output_head
from lmcore.tokenizer import EOS_ID, IGNORE_ID, MASK_ID, PAD_ID

V = 48


def reference(hidden, weight, targets, row_weights, banned=()):
    logits = hidden @ weight.t()
    if banned:
        logits = logits.index_fill(-1, torch.tensor(banned), -torch.inf)
    nll = F.cross_entropy(logits, targets, reduction="none")
    return torch.where(row_weights != 0, row_weights * nll, 0.0).sum(), logits.argmax(-1) == targets


@pytest.mark.parametrize("chunk_rows", [1, 7, 64])
def test_linear_cross_entropy_equals_full_logits_in_value_and_gradients(chunk_rows):
    torch.manual_seed(0)
    h = torch.randn(29, 16, requires_grad=True)
    w = torch.randn(V, 16, requires_grad=True)
    y = torch.randint(0, V, (29,))
    rw = torch.rand(29)
    rw[[2, 5]] = 0.0
    y[2] = MASK_ID  # a banned target on a row of weight 0: contributes 0, not NaN
    loss, hits = linear_cross_entropy(h, w, y, rw, banned=(MASK_ID,), chunk_logits=chunk_rows * V)
    loss.backward()
    grads = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    ref, ref_hits = reference(h, w, y, rw, (MASK_ID,))
    ref.backward()
    assert torch.isfinite(loss) and torch.allclose(loss, ref, rtol=1e-6)
    assert torch.equal(hits, ref_hits)
    assert torch.allclose(grads[0], h.grad, atol=1e-6) and torch.allclose(grads[1], w.grad, atol=1e-6)


def test_linear_cross_entropy_without_grad_and_under_bf16_autocast():
    torch.manual_seed(0)
    h, w = torch.randn(40, 16, requires_grad=True), torch.randn(V, 16, requires_grad=True)
    y, rw = torch.randint(0, V, (40,)), torch.rand(40)
    with torch.no_grad():
        loss, _ = linear_cross_entropy(h, w, y, rw)
    assert not loss.requires_grad and torch.allclose(loss, reference(h, w, y, rw)[0], rtol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lean, _ = linear_cross_entropy(h, w, y, rw, chunk_logits=8 * V)
        ref, _ = reference(h, w.to(torch.bfloat16).float(), y, rw)
    lean.backward()
    assert lean.dtype == torch.float32 and h.grad.dtype == w.grad.dtype == torch.float32
    assert torch.allclose(lean, ref, rtol=2e-2)


def test_output_head_is_found_inside_wrappers():
    model = get_objective("ar").build_model(ModelConfig(d_model=32, n_heads=4, n_layers=1, d_ff=64, vocab_size=V))

    class Wrapper(nn.Module):  # what DDP does: the network as `.module`, no `.head` of its own
        def __init__(self) -> None:
            super().__init__()
            self.module = model

    assert output_head(Wrapper()) is model.head is output_head(model)
    with pytest.raises(TypeError, match="no output head"):
        output_head(nn.Sequential(nn.Linear(2, 2)))


# ------------------------------------------------------------------ every objective: lean = reference
def documents(B: int, L: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(6, V, (B, L), generator=g)
    for i, n in enumerate(torch.randint(3, L - 2, (B,), generator=g).tolist()):
        tokens[i, n], tokens[i, n + 1 :] = EOS_ID, IGNORE_ID
    tokens[-1, -2:] = PAD_ID
    return tokens


def setup(arch: str):
    objective = get_objective(arch, {"fixed_k": 3} if arch == "sdd" else {})
    torch.manual_seed(0)
    model = objective.build_model(
        ModelConfig(d_model=32, n_heads=4, n_layers=2, d_ff=64, vocab_size=V, causal=objective.causal)
    )
    tokens = documents(4, 13)
    loss_mask = torch.ones_like(tokens)
    loss_mask[:, :3] = 0
    return objective, model, {"tokens": tokens, "loss_mask": loss_mask}


def loss_and_grads(objective, model, batch, path: str, seed: int = 3):
    objective.loss_path = path
    model.zero_grad()
    loss, metrics = objective.loss(model, batch, torch.Generator().manual_seed(seed))
    loss.backward()
    return loss.detach(), metrics, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ["ar", "diffusion", "sdd"])
@pytest.mark.parametrize("with_loss_mask", [False, True])
def test_lean_loss_equals_reference_in_value_metrics_and_gradients(arch, with_loss_mask):
    objective, model, batch = setup(arch)
    if not with_loss_mask:
        del batch["loss_mask"]
    lean, lean_metrics, lean_grads = loss_and_grads(objective, model, batch, "lean")
    ref, ref_metrics, ref_grads = loss_and_grads(objective, model, batch, "reference")
    assert lean.item() > 0 and torch.allclose(lean, ref, rtol=1e-5)
    assert lean_metrics.keys() == ref_metrics.keys() and "accuracy" in lean_metrics
    for name, value in lean_metrics.items():
        assert value.dim() == 0 and not value.requires_grad
        assert torch.allclose(value, ref_metrics[name], equal_nan=True), name
    assert lean_grads.keys() == ref_grads.keys() and len(lean_grads) == len(list(model.parameters()))
    for name, grad in lean_grads.items():
        assert torch.allclose(grad, ref_grads[name], rtol=1e-4, atol=1e-6), name
    objective.loss_path = "lean"
    stats = objective.eval_stats(model, batch, torch.Generator().manual_seed(4))
    objective.loss_path = "reference"
    ref_stats = objective.eval_stats(model, batch, torch.Generator().manual_seed(4))
    assert stats.keys() == ref_stats.keys()
    for key, value in stats.items():
        assert isinstance(value, float) and value == pytest.approx(ref_stats[key], rel=1e-5), key


@pytest.mark.parametrize("arch", ["ar", "diffusion", "sdd"])
def test_lean_loss_is_bitwise_deterministic(arch):
    objective, model, batch = setup(arch)
    a, _, grads_a = loss_and_grads(objective, model, batch, "lean")
    b, _, grads_b = loss_and_grads(objective, model, batch, "lean")
    assert torch.equal(a, b) and all(torch.equal(g, grads_b[n]) for n, g in grads_a.items())


@pytest.mark.parametrize("arch", ["ar", "diffusion", "sdd"])
def test_lean_loss_never_holds_more_than_a_chunk_of_logits(arch, monkeypatch):
    objective, model, batch = setup(arch)
    model.head.forward = lambda x: pytest.fail("the full head ran")
    monkeypatch.setattr(losses, "CHUNK_LOGITS", 5 * V)
    sizes = []
    real_linear = F.linear

    def recording_linear(x, weight, bias=None):
        out = real_linear(x, weight, bias)
        if weight.shape[0] == V:
            sizes.append(out.shape)
        return out

    monkeypatch.setattr(losses.F, "linear", recording_linear)
    loss, _, _ = loss_and_grads(objective, model, batch, "lean")
    assert torch.isfinite(loss) and len(sizes) > 1
    assert all(s[0] <= 5 and s[1] == V for s in sizes)
    if arch == "diffusion":  # the head ran on masked positions only
        assert sum(s[0] for s in sizes) < batch["tokens"].numel()
