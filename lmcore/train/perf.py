"""Throughput and memory accounting: FLOPs per token, MFU against the GPU's dense bf16 peak, peak memory
(measured) and a first-order estimate of training memory for choosing batch sizes before a GPU is at hand."""
from __future__ import annotations

import resource
import sys

import torch

from lmcore.models import ModelConfig

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' datasheets, in FLOP/s.
_PEAK_BF16 = [
    ("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("GH200", 989e12), ("B200", 2250e12),
    ("A100", 312e12), ("A10G", 70e12), ("A10", 125e12), ("L40S", 362e12), ("L4", 121e12),
    ("RTX 4090", 165e12), ("RTX 3090", 71e12), ("V100", 125e12),
]


def flops_per_token(cfg: ModelConfig, seq_len: int, slots_per_position: int = 1) -> float:
    """Training FLOPs per token: 6·N + 12·L·d·T (Kaplan et al. 2020; PaLM appendix B).

    N counts the parameters of every matmul, the output head included (6 = 2 forward + 4 backward FLOPs per
    weight per token); 12·L·d·T is the attention score and value matmuls at context T. Lookups (embedding) cost
    nothing. SDD runs the blocks on k candidate slots per position over a context of T·k slots, so the block
    term is multiplied by k and the attention term by k² (the output head still runs once per position).
    """
    d, layers, ff, k = cfg.d_model, cfg.n_layers, cfg.d_ff, slots_per_position
    n_blocks = layers * (4 * d * d + 2 * d * ff)
    return 6.0 * (n_blocks * k + cfg.vocab_size * d) + 12.0 * layers * d * seq_len * k * k


def peak_flops(device: torch.device) -> float | None:
    """The device's dense bf16 peak in FLOP/s, or None when unknown (CPU, or an unlisted GPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in _PEAK_BF16:
        if key in name:
            return flops
    return None


def mfu(tokens_per_sec: float, cfg: ModelConfig, seq_len: int, device: torch.device,
        slots_per_position: int = 1) -> float | None:
    """Achieved training FLOP/s over the device peak, or None where the peak is unknown."""
    peak = peak_flops(device)
    return None if peak is None else tokens_per_sec * flops_per_token(cfg, seq_len, slots_per_position) / peak


def peak_memory(device: torch.device) -> dict[str, float | str]:
    """Peak memory so far: CUDA's max allocated/reserved since the last reset, or this process's max RSS on CPU."""
    if device.type == "cuda":
        return {"peak_memory_mib": torch.cuda.max_memory_allocated(device) / 2**20,
                "peak_memory_reserved_mib": torch.cuda.max_memory_reserved(device) / 2**20,
                "memory_kind": "cuda_max_allocated"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return {"peak_memory_mib": rss / (2**20 if sys.platform == "darwin" else 2**10),
            "memory_kind": "process_max_rss"}


def estimate_train_memory(cfg: ModelConfig, batch_size: int, seq_len: int, gradient_checkpointing: bool,
                          amp: bool = True, slots_per_position: int = 1) -> dict[str, float]:
    """A first-order estimate (bytes) of one training step's peak memory: an ESTIMATE, not a measurement.

    weights + grads + AdamW moments: 16 bytes per parameter (fp32), + 2 for autocast's bf16 weight copies.
    Activations kept for backward, per token and layer, with SDPA's flash kernel (no [T, T] matrix), bf16
    autocast and the fp32 residual stream: 26·d + 4·d_ff bytes (fp32: 44·d + 8·d_ff) — the residual twice
    (4d each), the normed inputs of qkv and the MLP (2d each), qkv (6d), rotated q, k (4d), attention output
    and its reshaped copy (2d each), GELU input and output (2·d_ff each). With gradient checkpointing only each
    block's input (4d) is kept, plus one block's activations during its recompute. The output head: the logits
    (2V), their fp32 copy and log-softmax (4V each) and its gradient (4V): 14·V bytes per position
    (fp32: 16·V). SDD runs the blocks on k slots per position.
    """
    d, ff, layers, vocab = cfg.d_model, cfg.d_ff, cfg.n_layers, cfg.vocab_size
    blocks = layers * (4 * d * d + 2 * d * ff)
    params = blocks + vocab * d * (1 if cfg.tie_embeddings else 2)
    state = 16 * params + (2 * params if amp else 0)
    per_layer = (26 * d + 4 * ff) if amp else (44 * d + 8 * ff)
    slots = batch_size * seq_len * slots_per_position
    if gradient_checkpointing:
        activations = slots * (layers * 4 * d + per_layer)
    else:
        activations = slots * layers * per_layer
    head = batch_size * seq_len * vocab * (14 if amp else 16)
    return {"params": float(params), "state_bytes": float(state), "activation_bytes": float(activations),
            "head_bytes": float(head), "total_bytes": float(state + activations + head)}


MFU_FORMULA = ("MFU = tokens/s per device x flops_per_token / device dense bf16 peak; flops_per_token = "
               "6*(L*(4*d^2 + 2*d*d_ff)*k + V*d) + 12*L*d*T*k^2 (k = SDD slots per position, else 1)")
