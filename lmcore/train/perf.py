"""Throughput accounting: FLOPs per token and model FLOPs utilisation (MFU) against the GPU's dense bf16 peak."""
from __future__ import annotations

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
