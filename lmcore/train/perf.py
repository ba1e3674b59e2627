"""Compute and memory accounting: training FLOPs per position, per step and along SDD's k curriculum; MFU against
the GPU's dense bf16 peak; peak memory (measured) and a first-order estimate of training memory for choosing batch
sizes before a GPU is at hand.

FLOPs convention (Kaplan et al. 2020 §2.1; PaLM, Chowdhery et al. 2022, appendix B): only matrix multiplies count,
2 FLOPs per multiply-accumulate; a weight used once per position costs 2 FLOPs forward, 2 for the gradient of its
input and 2 for its own gradient, 6 in all. Lookups, norms, softmax and elementwise ops are not counted. Attention
costs 12·d·T per position and layer at context T: q·kᵀ and p·v, 2·T·d each forward, ×3 with their backward.
Causal masking is not discounted (PaLM's convention), so AR and diffusion on one backbone cost the same. These are
model FLOPs: recomputation (flash attention's backward, gradient checkpointing) is not counted, as in PaLM's MFU.
Where autograd computes no input gradient (a first layer fed by features that need none) the count is 4 per weight,
so every figure is what a training step executes; tests/test_compute.py checks it against torch's FlopCounterMode
(which at k = 1 sees 6·d FLOPs per position fewer: with one candidate torch runs part of the readout's products
elementwise).
"""

from __future__ import annotations

import math
import resource
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from lmcore.errors import ConfigError
from lmcore.models import ModelConfig
from lmcore.objectives import REGISTRY
from lmcore.objectives.losses import CHUNK_LOGITS

if TYPE_CHECKING:  # the annotation only
    from lmcore.objectives import Objective

# Dense (no sparsity) bf16 tensor-core peaks in FLOP/s, keyed by the exact torch.cuda.get_device_name() string:
# "NVIDIA L4" must not match "NVIDIA L40S", nor "NVIDIA H100 NVL" the SXM part. NVIDIA's datasheets give these
# with 2:4 sparsity and state the dense figure is one half: H100 SXM / NVL 1,979 / 1,671 TFLOPS (H100 datasheet),
# H100 PCIe 1,513 (H100 PCIe product brief PB-11133-001), H200 SXM 1,979 (H200 datasheet, the H100's compute die),
# L40S 733 (L40S datasheet: 362.05 dense), L4 242 (L4 datasheet). A100 (every memory and form factor): 312 dense
# (A100 datasheet). A10: 125 dense (A10 datasheet). A10G (AWS g5): NVIDIA publishes no datasheet; 70 dense as in
# Baseten's "NVIDIA A10 vs A10G for ML model inference".
_PEAK_BF16: dict[str, float] = {
    "NVIDIA H100 80GB HBM3": 989e12,  # H100 SXM5
    "NVIDIA H100 PCIe": 756e12,
    "NVIDIA H100 NVL": 835e12,
    "NVIDIA H200": 989e12,  # SXM; torch names the H200 NVL (1,671 sparse) the same, so its MFU reads ~16 % low
    "NVIDIA A100-SXM4-80GB": 312e12,
    "NVIDIA A100-SXM4-40GB": 312e12,
    "NVIDIA A100 80GB PCIe": 312e12,
    "NVIDIA A100-PCIE-40GB": 312e12,
    "NVIDIA L40S": 362e12,
    "NVIDIA L4": 121e12,
    "NVIDIA A10": 125e12,
    "NVIDIA A10G": 70e12,
}
_UNKNOWN_GPUS_REPORTED: set[str] = set()

# HBM/GDDR bandwidth in bytes/s, same exact-name keys: H100 SXM 3.35 TB/s, H100 PCIe 2.0, H100 NVL 3.9 (H100
# datasheet), H200 4.8 (H200 datasheet; the NVL part, named the same by torch, too), A100 80GB SXM 2.039, 40GB
# 1.555, 80GB PCIe 1.935, 40GB PCIe 1.555 (A100 datasheet), L40S 0.864, L4 0.3, A10 0.6 (their datasheets), A10G
# 0.6 (AWS g5 documentation). What AR decoding at a large batch is bound by: every token reads the weights and
# the KV cache once.
_HBM_BYTES_PER_S: dict[str, float] = {
    "NVIDIA H100 80GB HBM3": 3.35e12,
    "NVIDIA H100 PCIe": 2.0e12,
    "NVIDIA H100 NVL": 3.9e12,
    "NVIDIA H200": 4.8e12,
    "NVIDIA A100-SXM4-80GB": 2.039e12,
    "NVIDIA A100-SXM4-40GB": 1.555e12,
    "NVIDIA A100 80GB PCIe": 1.935e12,
    "NVIDIA A100-PCIE-40GB": 1.555e12,
    "NVIDIA L40S": 0.864e12,
    "NVIDIA L4": 0.3e12,
    "NVIDIA A10": 0.6e12,
    "NVIDIA A10G": 0.6e12,
}

MFU_FORMULA = (
    "MFU = tokens/s per device x flops_per_token / device dense bf16 peak. flops_per_token (training, per "
    "position): AR and diffusion 6*(L*(4*d^2 + 2*d*d_ff) + V*d) + 12*L*d*T; SDD at k candidates "
    "6*k*L*(4*d^2 + 2*d*d_ff) + 12*L*d*T*k^2 + k*(8*d + 6*d^2) [probability MLP] + 10*d^2/T [time MLP] "
    "+ 12*k*d^2 + 12*k*d + 6*d^2 [readout] + 6*V*d [head]"
)


def _architecture(architecture: str) -> str:
    if architecture not in REGISTRY:
        raise ConfigError(f"architecture: unknown '{architecture}' (known: {', '.join(REGISTRY)})")
    return architecture


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def flops_breakdown(cfg: ModelConfig, seq_len: int, k: int = 1, *, architecture: str | None = None) -> dict[str, float]:
    """Training FLOPs (forward + backward) per sequence position of each module, at k candidates per position.

    AR and diffusion (k = 1): blocks 6·L·(4d² + 2d·d_ff), attention 12·L·d·T, head 6·V·d.
    SDD's denoiser (lmcore/models/sdd.py) runs the blocks on all T·k candidate slots:
      blocks     6·k·L·(4d² + 2d·d_ff)
      attention  12·L·d·T·k²          over T·k slots (the key bias is an additive SDPA mask: no extra matmul)
      prob_mlp   k·(8d + 6d²)          Linear(2, d) on log p and p (input needs no gradient: 4 per weight), Linear(d, d)
      time_mlp   10d²/T                two d×d layers once per sequence (the first's input needs no gradient)
      readout    12·k·d² + 12·k·d + 6d² keys/values of the k candidates, query scores and pooling, output projection
      head       6·V·d                 once per position
    architecture=None counts the shared backbone alone (blocks on k slots, attention over T·k slots, head): AR's and
    diffusion's exact count, and for SDD a lower bound without its input MLPs, readout and key-bias padding.
    """
    _positive_int(seq_len, "seq_len")
    _positive_int(k, "k")
    d, _H, layers, ff, vocab, T = cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.d_ff, cfg.vocab_size, seq_len
    block_weights = layers * (4 * d * d + 2 * d * ff)  # qkv 3d², proj d², MLP up and down d·d_ff each
    if architecture is None:
        return {"blocks": 6.0 * block_weights * k, "attention": 12.0 * layers * d * T * k * k, "head": 6.0 * vocab * d}
    if _architecture(architecture) != "sdd":
        if k != 1:
            raise ConfigError(f"{architecture}: one slot per position (k = 1), got k = {k}")
        return {"blocks": 6.0 * block_weights, "attention": 12.0 * layers * d * T, "head": 6.0 * vocab * d}
    return {
        "blocks": 6.0 * block_weights * k,
        "attention": 12.0 * layers * d * T * k * k,
        "prob_mlp": k * (4.0 * 2 * d + 6.0 * d * d),
        "time_mlp": (4.0 * d * d + 6.0 * d * d) / T,
        "readout": 6.0 * 2 * d * d * k + 12.0 * k * d + 6.0 * d * d,
        "head": 6.0 * vocab * d,
    }


def flops_per_token(cfg: ModelConfig, seq_len: int, k: int = 1, *, architecture: str | None = None) -> float:
    """Training FLOPs per sequence position: the sum of flops_breakdown (see there for the formula)."""
    return sum(flops_breakdown(cfg, seq_len, k, architecture=architecture).values())


def flops_per_step(cfg: ModelConfig, seq_len: int, batch_tokens: int, k: int = 1, *, architecture: str) -> float:
    """Training FLOPs of one optimizer step over `batch_tokens` positions (rows × seq_len × accumulation × ranks)."""
    _positive_int(seq_len, "seq_len")
    _positive_int(batch_tokens, "batch_tokens")
    if batch_tokens % seq_len:
        raise ConfigError(f"batch_tokens={batch_tokens} is not a whole number of rows of seq_len={seq_len}")
    return flops_per_token(cfg, seq_len, k, architecture=architecture) * batch_tokens


@dataclass(frozen=True)
class KCurriculum:
    """SDD's candidates per position along training: ks[i] for steps [i·stage_steps, (i+1)·stage_steps), the last k
    after that (the rule of SDDObjective.k_at; tests/test_compute.py holds the two together). The default, k = 1
    throughout, is every other architecture's."""

    ks: tuple[int, ...] = (1,)
    stage_steps: int = 0

    def __post_init__(self) -> None:
        if not self.ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in self.ks):
            raise ConfigError(f"k curriculum: every k must be a positive integer, got {self.ks!r}")
        if isinstance(self.stage_steps, bool) or not isinstance(self.stage_steps, int) or self.stage_steps < 0:
            raise ConfigError(f"k curriculum: stage_steps must be an integer ≥ 0, got {self.stage_steps!r}")
        if len(self.ks) > 1 and self.stage_steps == 0:
            raise ConfigError(f"k curriculum: {len(self.ks)} stages need stage_steps > 0")

    @classmethod
    def of(cls, objective: Objective) -> KCurriculum:
        """The curriculum an objective trains with (`Objective.slots_schedule`; k = 1 throughout but for SDD)."""
        ks, stage_steps = objective.slots_schedule()
        return cls(tuple(ks), stage_steps if len(ks) > 1 else 0)

    def k_at(self, step: int) -> int:
        """k at optimizer step `step` (0-based)."""
        return self.ks[min(step // self.stage_steps, len(self.ks) - 1)] if self.stage_steps else self.ks[0]

    def stages(self) -> list[tuple[int, int, float]]:
        """(first step, k, number of steps) of each stage; the last one runs on (math.inf steps)."""
        if not self.stage_steps:
            return [(0, self.ks[0], math.inf)]
        last = len(self.ks) - 1
        return [(i * self.stage_steps, k, math.inf if i == last else self.stage_steps) for i, k in enumerate(self.ks)]


NO_CURRICULUM = KCurriculum()  # k = 1 at every step: AR, diffusion, and SDD trained at k = 1


def train_flops(
    cfg: ModelConfig,
    seq_len: int,
    batch_tokens: int,
    steps: int,
    *,
    architecture: str,
    curriculum: KCurriculum = NO_CURRICULUM,
) -> float:
    """Training FLOPs of the first `steps` optimizer steps, each at the k its curriculum gives it."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"steps must be an integer ≥ 0, got {steps!r}")
    if _architecture(architecture) != "sdd" and set(curriculum.ks) != {1}:
        raise ConfigError(f"{architecture}: a k curriculum applies to sdd only, got k = {curriculum.ks}")
    total = 0.0
    for start, k, length in curriculum.stages():
        n = min(length, steps - start)
        if n <= 0:
            break
        total += n * flops_per_step(cfg, seq_len, batch_tokens, k, architecture=architecture)
    return total


def peak_flops_for_name(name: str) -> float | None:
    """Dense bf16 peak FLOP/s of the GPU called exactly `name` (torch.cuda.get_device_name), or None when unlisted;
    an unlisted name is reported on stderr once per process."""
    name = name.strip()
    peak = _PEAK_BF16.get(name)
    if peak is None and name not in _UNKNOWN_GPUS_REPORTED:
        _UNKNOWN_GPUS_REPORTED.add(name)
        print(
            f"MFU: no dense bf16 peak known for GPU '{name}' (lmcore/train/perf.py lists "
            f"{', '.join(_PEAK_BF16)}); MFU is not reported",
            file=sys.stderr,
        )
    return peak


def peak_flops(device: torch.device) -> float | None:
    """The device's dense bf16 peak in FLOP/s, or None when unknown (CPU, or an unlisted GPU)."""
    if device.type != "cuda":
        return None
    return peak_flops_for_name(torch.cuda.get_device_name(device))


def mfu(
    tokens_per_sec: float,
    cfg: ModelConfig,
    seq_len: int,
    device: torch.device,
    k: int = 1,
    *,
    architecture: str | None = None,
) -> float | None:
    """Model FLOPs utilisation: tokens/s × flops_per_token / the device's dense bf16 peak; None where the peak is
    unknown. Pass `architecture` for the exact count (None: the backbone alone, see flops_breakdown)."""
    peak = peak_flops(device)
    return None if peak is None else tokens_per_sec * flops_per_token(cfg, seq_len, k, architecture=architecture) / peak


def peak_memory(device: torch.device) -> dict[str, float | str]:
    """Peak memory so far: CUDA's max allocated/reserved since the last reset, or this process's max RSS on CPU."""
    if device.type == "cuda":
        return {
            "peak_memory_mib": torch.cuda.max_memory_allocated(device) / 2**20,
            "peak_memory_reserved_mib": torch.cuda.max_memory_reserved(device) / 2**20,
            "memory_kind": "cuda_max_allocated",
        }
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return {"peak_memory_mib": rss / (2**20 if sys.platform == "darwin" else 2**10), "memory_kind": "process_max_rss"}


def estimate_train_memory(
    cfg: ModelConfig,
    batch_size: int,
    seq_len: int,
    gradient_checkpointing: bool,
    amp: bool = True,
    slots_per_position: int = 1,
    loss_path: str = "reference",
) -> dict[str, float]:
    """A first-order estimate (bytes) of one training step's peak memory: an ESTIMATE, not a measurement.

    weights + grads + AdamW moments: 16 bytes per parameter (fp32), + 2 for autocast's bf16 weight copies.
    Activations kept for backward, per token and layer, with SDPA's flash kernel (no [T, T] matrix), bf16
    autocast and the fp32 residual stream: 26·d + 4·d_ff bytes (fp32: 44·d + 8·d_ff) — the residual twice
    (4d each), the normed inputs of qkv and the MLP (2d each), qkv (6d), rotated q, k (4d), attention output
    and its reshaped copy (2d each), GELU input and output (2·d_ff each). With gradient checkpointing only each
    block's input (4d) is kept, plus one block's activations during its recompute. The output head: the logits
    (2V), their fp32 copy and log-softmax (4V each) and its gradient (4V): 14·V bytes per position
    (fp32: 16·V). With `loss_path="lean"` the head is `estimate_lean_head_memory` over every position (an upper
    bound: diffusion scores only the masked ones). SDD runs the blocks on k slots per position.
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
    if loss_path == "lean":
        head = estimate_lean_head_memory(cfg, batch_size * seq_len, amp)["total_bytes"]
    else:
        head = batch_size * seq_len * vocab * (14 if amp else 16)
    return {
        "params": float(params),
        "state_bytes": float(state),
        "activation_bytes": float(activations),
        "head_bytes": float(head),
        "total_bytes": float(state + activations + head),
    }


def memory_bandwidth_for_name(name: str) -> float | None:
    """HBM bandwidth in bytes/s of the GPU called exactly `name`, or None when unlisted."""
    return _HBM_BYTES_PER_S.get(name)


def decode_bytes_per_token(cfg: ModelConfig, batch: int, context: int, bytes_per_value: int = 2) -> float:
    """Bytes one AR decoding step must read from memory: every weight once (tied embedding/head once) and the
    keys and values of `context` cached positions for each of `batch` rows (2·L·d values per position)."""
    params = cfg.n_layers * (4 * cfg.d_model**2 + 2 * cfg.d_model * cfg.d_ff) + cfg.vocab_size * cfg.d_model
    params += 0 if cfg.tie_embeddings else cfg.vocab_size * cfg.d_model
    kv = batch * context * 2 * cfg.n_layers * cfg.d_model
    return float(bytes_per_value * (params + kv))


def decode_bound_tokens_per_sec(cfg: ModelConfig, batch: int, length: int, bandwidth: float) -> float:
    """The memory-bandwidth bound on AR decoding throughput (tokens/s over the batch) for `length` new tokens
    from an empty cache: each step reads the weights and the cache filled so far (on average length/2 positions),
    so no implementation reading bf16 weights and cache once per step can go faster."""
    seconds_per_step = decode_bytes_per_token(cfg, batch, length // 2) / bandwidth
    return batch / seconds_per_step


def estimate_lean_head_memory(
    cfg: ModelConfig, rows: int, amp: bool = True, chunk_logits: int | None = None
) -> dict[str, float]:
    """Peak bytes of the lean output head + cross-entropy (lmcore/objectives/losses.py) over `rows` scored rows:
    one chunk's logits (bf16 matmul output under autocast, its fp32 copy, reused in place for the softmax
    gradient, and that gradient's bf16 cast: 8 bytes per logit with amp, 4 without), the head-weight gradient
    accumulated in fp32 (4·V·d), and the input gradient kept for backward ([rows, d] in the compute dtype).
    The reference path instead holds 14·V bytes (fp32: 16·V) per position (see estimate_train_memory)."""
    chunk_rows = max(1, (chunk_logits or CHUNK_LOGITS) // cfg.vocab_size)
    logits = min(rows, chunk_rows) * cfg.vocab_size * (8 if amp else 4)
    grad_weight = 4 * cfg.vocab_size * cfg.d_model
    grad_hidden = rows * cfg.d_model * (2 if amp else 4)
    return {
        "chunk_logits_bytes": float(logits),
        "grad_weight_bytes": float(grad_weight),
        "grad_hidden_bytes": float(grad_hidden),
        "total_bytes": float(logits + grad_weight + grad_hidden),
    }


# ---------------------------------------------------------------- sampling compute
def forward_flops_breakdown(
    cfg: ModelConfig, seq_len: int, k: int = 1, *, architecture: str | None = None
) -> dict[str, float]:
    """Forward-only FLOPs per sequence position of each module (inference): flops_breakdown's training count with
    2 FLOPs per weight instead of 6 (4 where no input gradient is computed), attention 4·L·d·T·k²."""
    train = flops_breakdown(cfg, seq_len, k, architecture=architecture)
    d = cfg.d_model
    out = {name: value / 3.0 for name, value in train.items()}
    if "prob_mlp" in out:  # the layers counted at 4 per weight in training are 2 per weight forward
        out["prob_mlp"] = k * (2.0 * 2 * d + 2.0 * d * d)
        out["time_mlp"] = 4.0 * d * d / seq_len
    return out


def sampling_flops(cfg: ModelConfig, length: int, steps: int | None, k: int = 1, *, architecture: str) -> float:
    """Forward FLOPs the sampler spends on one row (same convention as training: matrix multiplies only).

    ar (left to right with a KV cache; `length` = the tokens generated): the t-th forward (the opening <eos>, then
    each generated token but the last) costs the blocks once and attention over t cached keys, and each generated
    token one head: Σ_{t ≤ length} [2·L·(4d² + 2d·d_ff) + 2·V·d + 4·L·d·t].
    diffusion: `steps` forward passes of the backbone over the `length` positions (an upper bound: MDLM's cache
    skips steps that unmask nothing); the head runs once per position, when the position is unmasked.
    sdd: `steps` forward passes of the denoiser at k candidates, head included (every step predicts every x_0).
    """
    _positive_int(length, "length")
    arch = _architecture(architecture)
    if arch == "ar":
        per = forward_flops_breakdown(cfg, 1, architecture=arch)
        fixed = per["blocks"] + per["head"]
        return length * fixed + 4.0 * cfg.n_layers * cfg.d_model * length * (length + 1) / 2
    _positive_int(steps, "steps")
    per = forward_flops_breakdown(cfg, length, k, architecture=arch)
    if arch == "diffusion":
        return steps * length * (per["blocks"] + per["attention"]) + length * per["head"]
    return steps * length * sum(per.values())
