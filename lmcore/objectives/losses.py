"""Output head + cross-entropy over selected rows, without ever holding the full [rows, V] logits.

The backbones return their final hidden states on request (`return_hidden=True`); an objective gathers the rows
whose prediction it scores and calls `linear_cross_entropy` with the head's weight. Rows are processed in chunks
of about CHUNK_LOGITS logits: each chunk's logits are computed, up-cast to float32 (the chunk only), reduced to
its cross-entropy and top-1 hits, and dropped.

Why gradients are formed during the forward pass instead of `torch.utils.checkpoint` per chunk: every objective's
loss is a weighted sum Σ_i w_i·CE_i with weights that need no gradient, so the upstream gradient of that sum is
one scalar g, and dL/dlogits_i = g·w_i·(softmax_i − onehot(y_i)) is known up to g while the chunk's logits are
still at hand. The forward pass therefore also computes the chunk's contributions to dL/dh and dL/dW (the same two
matmuls backward would do) and keeps only those ([rows, D] and [V, D]); backward scales them by g. Checkpointing
would recompute every chunk's logits in backward, a third head matmul (+50% of the head's forward+backward
FLOPs); this way the head costs exactly what an unchunked one does. The price: a forward pass with gradients
enabled does backward's head work even if `backward()` is never called (evaluation runs under `no_grad`, which
skips it).

`LOSS_PATHS`: "lean" is this path; "reference" is the earlier one (full logits, an fp32 copy, a cross-entropy over
all positions), kept for tests that compare the two and for `stages/benchmark.py --loss_path`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LOSS_PATHS = ("lean", "reference")
# Logits per chunk: 16M (64 MiB in float32), e.g. 512 rows at a 32k vocabulary; big enough for efficient matmuls
# on a GPU (a chunk of fewer than ~128 rows would leave tensor-core tiles part empty). On CPU the chunk is a
# visible share of a small model's peak memory, so it is halved: 8M logits (32 MiB); measured at 1024 rows × 32k
# vocabulary (fp32, forward + backward), 4M-logit chunks cost ~30 % more time than 16M, 8M ones ~7 %.
CHUNK_LOGITS = 2**24
CHUNK_LOGITS_CPU = 2**23


def output_head(model: nn.Module) -> nn.Linear:
    """The vocabulary projection `head` of the network, found inside any wrapper (DDP, torch.compile, test spies)."""
    for module in model.modules():
        head = getattr(module, "head", None)
        if isinstance(head, nn.Linear):
            return head
    raise TypeError(f"{type(model).__name__} has no output head (an nn.Linear named `head`)")


class _LinearCrossEntropy(torch.autograd.Function):
    """Σ_i w_i·CE(h_i·Wᵀ, y_i) and per-row top-1 hits, chunk by chunk; gradients formed in forward (see above)."""

    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        row_weights: torch.Tensor,
        banned: tuple[int, ...],
        chunk_rows: int,
        with_grad: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows = hidden.shape[0]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        hits = torch.empty(rows, dtype=torch.bool, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if with_grad else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if with_grad else None
        for start in range(0, rows, chunk_rows):
            end = min(start + chunk_rows, rows)
            h, y, w = hidden[start:end], targets[start:end, None], row_weights[start:end]
            # Under autocast F.linear runs in bf16; the float32 copy is of this chunk only.
            logits = F.linear(h, weight).float()
            for token in banned:  # a scalar fill per id: no index tensor to copy to the device
                logits.select(-1, token).fill_(-math.inf)
            hits[start:end] = logits.argmax(-1) == y[:, 0]
            target = logits.gather(-1, y)
            # log-sum-exp with the exponentials written over the logits (logsumexp() would allocate a second chunk):
            # lse = max + log Σ exp(z − max), the same max-shifted evaluation torch's logsumexp uses.
            peak = logits.amax(-1, keepdim=True)
            sum_exp = logits.sub_(peak).exp_().sum(-1, keepdim=True)
            nll = (sum_exp.log() + peak - target).squeeze(-1)
            # Rows of weight 0 contribute exactly 0, even where their target is banned (nll = inf).
            total += torch.where(w != 0, w * nll, 0.0).sum()
            if with_grad:
                grad = logits.div_(sum_exp)  # softmax, in the chunk's own buffer
                grad.scatter_add_(-1, y, grad.new_full(y.shape, -1.0))  # − onehot(y)
                grad = grad.mul_(w[:, None]).to(h.dtype)
                # The two matmuls of the head's backward (bf16 under autocast, like the forward's), written into
                # their destinations when the dtypes allow it (fp32), so no [V, D] temporary is made per chunk.
                if grad.dtype == weight.dtype == grad_hidden.dtype:
                    torch.mm(grad, weight, out=grad_hidden[start:end])
                    grad_weight.addmm_(grad.t(), h)
                else:
                    grad_hidden[start:end] = grad @ weight
                    grad_weight += grad.t() @ h
        ctx.mark_non_differentiable(hits)
        # Kept on ctx, not save_for_backward: backward scales them in place and drops them, so it holds no second
        # [V, D] copy; a second backward through the same graph fails instead of scaling them twice.
        ctx.grads = (grad_hidden, grad_weight) if with_grad else None
        ctx.weight_dtype = weight.dtype
        return total, hits

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor, grad_hits: torch.Tensor):
        if ctx.grads is None:
            raise RuntimeError("linear_cross_entropy: backward ran twice, or the forward ran without gradients")
        grad_hidden, grad_weight = ctx.grads
        ctx.grads = None
        return (
            grad_hidden.mul_(grad_total.to(grad_hidden.dtype)),
            grad_weight.mul_(grad_total).to(ctx.weight_dtype),
            None,
            None,
            None,
            None,
            None,
        )


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    row_weights: torch.Tensor,
    banned: tuple[int, ...] = (),
    chunk_logits: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_i w_i·CE(h_i·Wᵀ, y_i), top-1 hits [N]) for hidden [N, D], head weight [V, D], targets and weights [N].

    Logits of `banned` token ids are −∞ (never predicted). The sum is float32; rows of weight 0 add exactly 0.
    No more than `chunk_logits` (default CHUNK_LOGITS on CUDA, CHUNK_LOGITS_CPU elsewhere) logits exist at a time,
    in forward or backward.
    """
    default = CHUNK_LOGITS if hidden.is_cuda else min(CHUNK_LOGITS, CHUNK_LOGITS_CPU)
    chunk_rows = max(1, (chunk_logits or default) // weight.shape[0])
    with_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    return _LinearCrossEntropy.apply(hidden, weight, targets, row_weights.float(), tuple(banned), chunk_rows, with_grad)
