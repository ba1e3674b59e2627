"""The one transformer backbone shared by every architecture: pre-norm blocks, rotary positions, SDPA attention.

It maps token ids (or ready-made input embeddings, for SDD) to logits or hidden states. It holds no loss:
objectives in `lmcore/objectives` decide what the outputs mean.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmcore.models.presets import ModelConfig


def rotary_tables(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [T, head_dim/2] for rotary position embeddings (Su et al., 2021) at integer positions."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., :d/2], x[..., d/2:]) of x [B, H, T, D] by the position angles."""
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.type_as(x)


class KVCache:
    """Keys and values of past positions for incremental causal decoding, one entry per layer.

    Each layer's keys and values live in one buffer [B, H, max_len, D] allocated at the first write (shape, dtype
    and device taken from that write) and filled in place, so decoding a token copies one position instead of
    re-concatenating the whole history.

    Fixed-shape decoding (for `torch.compile` / CUDA graphs; lmcore/objectives/decode.py): after the prefill,
    `decode_at(position)` makes every later call write its one token at the device tensor `position` [1] and
    attend over the whole buffer with the positions after it masked out. Shapes and Python values then stay the
    same from token to token, so one compiled graph serves the whole generation; the price is attention over
    max_len keys instead of the filled prefix (the cache is read once per token either way: decoding is bound by
    reading weights and cache).
    """

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self.lengths: dict[int, int] = {}
        self.position: torch.Tensor | None = None  # set by decode_at: fixed-shape decoding

    def decode_at(self, position: torch.Tensor) -> None:
        """Switch to fixed-shape decoding; `position` [1] (long, on the cache's device) is updated in place by
        the caller to the position of the token being decoded."""
        self.position = position

    def write_at(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Write one token's keys/values [B, H, 1, D] at `position`; return the full buffers and the key mask
        [max_len] (True up to and including `position`)."""
        self.keys[layer].index_copy_(2, self.position, k)
        self.values[layer].index_copy_(2, self.position, v)
        filled = torch.arange(self.max_len, device=k.device) <= self.position
        return self.keys[layer], self.values[layer], filled

    def length(self, layer: int = 0) -> int:
        """Number of positions cached so far for `layer`."""
        return self.lengths.get(layer, 0)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's keys/values [B, H, T, D] for `layer` after the cached ones; return views of all."""
        start, T = self.length(layer), k.shape[2]
        if start + T > self.max_len:
            raise ValueError(f"KVCache: {start + T} positions exceed max_len={self.max_len}")
        if layer not in self.keys:
            shape = (*k.shape[:2], self.max_len, k.shape[3])
            # Zeros, not empty: fixed-shape decoding reads unwritten positions (masked, i.e. weight 0, but 0·NaN
            # of uninitialised memory would still be NaN).
            self.keys[layer], self.values[layer] = k.new_zeros(shape), v.new_zeros(shape)
        self.keys[layer][:, :, start : start + T] = k
        self.values[layer][:, :, start : start + T] = v
        self.lengths[layer] = start + T
        return self.keys[layer][:, :, : start + T], self.values[layer][:, :, : start + T]


class Attention(nn.Module):
    """Multi-head self-attention through `scaled_dot_product_attention`, so flash/cuDNN kernels apply on GPU.

    A per-key bias [B, T] (SDD's α·log p) is passed to SDPA as an additive float mask of shape [B, 1, 1, T],
    broadcast over heads and queries (no [T, T] tensor is built). On CUDA the flash kernel takes no mask, so
    with a bias SDPA dispatches to memory-efficient attention (or cuDNN attention, where available), both of
    which fuse an additive bias; on CPU the fused flash-attention-for-CPU kernel takes it. `fold_key_bias`
    (the earlier formulation: the bias folded into a padded head dimension) stays as the reference, switched
    on per module by `fold_key_bias = True` (tests compare the two).
    """

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.n_heads, self.head_dim, self.layer = cfg.n_heads, cfg.d_model // cfg.n_heads, layer
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.causal, self.dropout = cfg.causal, cfg.dropout
        self.fold_key_bias = False

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        key_bias: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        causal = self.causal
        mask = None
        if cache is not None and cache.position is not None:  # fixed-shape decoding of one token
            k, v, filled = cache.write_at(self.layer, k, v)
            mask, causal = filled[None, None, None, :], False
        elif cache is not None:
            past = cache.length(self.layer)
            if past and T > 1:
                raise ValueError("KVCache: prefill the cache in one call before decoding one token at a time")
            k, v = cache.update(self.layer, k, v)
            causal = causal and past == 0  # one new query attends to every cached key
        if key_bias is not None and self.fold_key_bias:
            q, k, v = fold_key_bias(q, k, v, key_bias)
        elif key_bias is not None:
            mask = key_bias[:, None, None, :].to(q.dtype)  # SDPA wants the mask in the query's dtype
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=causal,
            dropout_p=self.dropout if self.training else 0.0,
            scale=1.0 / math.sqrt(self.head_dim),
        )
        y = y[..., : self.head_dim].transpose(1, 2).reshape(B, T, C)
        return self.proj(y)


def fold_key_bias(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_bias: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Add a per-key additive bias [B, T] to the attention scores without an explicit mask (the reference form).

    softmax(q·k/√d + b_j) equals SDPA on q' = [q, √d, 0…] and k' = [k, b_j, 0…] at scale 1/√d. Padding the
    head dimension to a multiple of 8 keeps q, k and v on the flash/cuDNN fast path, at the price of copying
    q, k and v in every layer.
    """
    B, H, T, D = q.shape
    pad = 8
    qe = torch.zeros(B, H, T, pad, dtype=q.dtype, device=q.device)
    qe[..., 0] = math.sqrt(D)
    ke = torch.zeros(B, H, k.shape[2], pad, dtype=k.dtype, device=k.device)
    ke[..., 0] = key_bias[:, None, :].to(k.dtype)
    ve = torch.zeros(B, H, v.shape[2], pad, dtype=v.dtype, device=v.device)
    return torch.cat((q, qe), -1), torch.cat((k, ke), -1), torch.cat((v, ve), -1)


class MLP(nn.Module):
    """Position-wise feed-forward network with GELU."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.down(F.gelu(self.up(x), approximate="tanh")))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.d_model, bias=False)
        self.attn = Attention(cfg, layer)
        self.norm2 = nn.LayerNorm(cfg.d_model, bias=False)
        self.mlp = MLP(cfg)

    def forward(self, x, rope, key_bias=None, cache=None):
        x = x + self.attn(self.norm1(x), rope, key_bias, cache)
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """Token ids or input embeddings [B, T, D] → logits [B, T, V] (or final hidden states)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model, bias=False)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        self.apply(self._init_weights)
        # GPT-2 style: scale residual projections by depth so the residual stream's variance stays bounded.
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (tied weights once); without the embedding table when asked."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if non_embedding else n

    def forward(
        self,
        tokens: torch.Tensor | None = None,
        *,
        embeds: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        key_bias: torch.Tensor | None = None,
        cache: KVCache | None = None,
        return_hidden: bool = False,
    ) -> torch.Tensor:
        """Run the stack. `positions` [T] defaults to 0..T-1 (after any cached prefix). With `return_hidden` the
        output is the final hidden states [B, T, D] after the last norm, without the head: objectives then apply
        the head only where they need logits (lmcore/objectives/losses.py)."""
        x = self.embed(tokens) if embeds is None else embeds
        T = x.shape[1]
        if positions is None:
            start = cache.length() if cache is not None else 0
            positions = torch.arange(start, start + T, device=x.device)
        rope = rotary_tables(positions, self.cfg.d_model // self.cfg.n_heads, self.cfg.rope_theta)
        for block in self.blocks:
            if self.cfg.gradient_checkpointing and self.training and cache is None:
                x = checkpoint(block, x, rope, key_bias, None, use_reentrant=False)
            else:
                x = block(x, rope, key_bias, cache)
        x = self.norm(x)
        return x if return_hidden else self.head(x)
