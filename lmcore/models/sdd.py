"""The SDD denoiser: a bidirectional transformer over all L·k weighted candidates of a sparse state.

Input per candidate: its normalised token embedding + an MLP of its (log-)probability + a time embedding.
Positions are rotary only: every candidate of position l sits at rotary position l, so the candidates of one
position form an unordered set. The network is therefore permutation-invariant within a position and agnostic
of k: the same weights serve every k of the curriculum. Attention over the L·k slots carries a learnable per-layer
bias α_l·log p on the keys, passed to the backbone's `Block` as `key_bias` (an additive [B, 1, 1, T] SDPA mask,
broadcast over queries, so no [T, T] mask is built; see `Attention`). A learned readout query then pools each position's
k candidates (with its own log-prob bias) into one vector, and a head (tied to the embedding table when
`tie_embeddings`) gives logits over the vocabulary.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmcore.models.presets import ModelConfig
from lmcore.models.transformer import Block, rotary_tables

# Sampler states can hold exact zeros (greedy or top-p filtered candidates); log p is floored to stay finite.
PROB_FLOOR = 1e-9


def log_probs(probs: torch.Tensor) -> torch.Tensor:
    """log p in float32, floored at log(PROB_FLOOR)."""
    return probs.float().clamp_min(PROB_FLOOR).log()


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features [B, dim] of diffusion times t [B] in [0, 1] (scaled by 1000, as in DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = 1000.0 * t.float()[:, None] * freqs[None, :]
    emb = torch.cat((angles.cos(), angles.sin()), dim=-1)
    return F.pad(emb, (0, dim - 2 * half))


class SDDDenoiser(nn.Module):
    """Sparse state (probs, indices) [B, L, k] and times t [B] → logits [B, L, V] over each position's clean token."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.causal:
            raise ValueError("SDDDenoiser attends bidirectionally: build it with ModelConfig(causal=False)")
        self.cfg = cfg
        d = cfg.d_model
        self.embed = nn.Embedding(cfg.vocab_size, d)
        # Features of a candidate's probability: log p / log V (≈ [-2, 0] for useful p) and p itself.
        self.prob_mlp = nn.Sequential(nn.Linear(2, d), nn.GELU(), nn.Linear(d, d))
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        # α_l starts at 1: attention weights ∝ p_j·exp(q·k), i.e. keys weighted by their probability mass.
        self.key_bias_scale = nn.Parameter(torch.ones(cfg.n_layers))
        self.norm = nn.LayerNorm(d, bias=False)
        self.readout_query = nn.Parameter(torch.zeros(d))
        self.readout_kv = nn.Linear(d, 2 * d, bias=False)
        self.readout_proj = nn.Linear(d, d, bias=False)
        self.readout_bias_scale = nn.Parameter(torch.ones(()))
        self.out_norm = nn.LayerNorm(d, bias=False)
        self.head = nn.Linear(d, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        # Same initialisation as the backbone Transformer; the two small MLPs keep PyTorch's default (fan-in)
        # init so that probability and time features start at the scale of the normalised embedding.
        for m in (self.embed, self.head, self.readout_kv, self.readout_proj, *self.blocks.modules()):
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
        nn.init.normal_(self.readout_query, std=0.02)
        for name, p in self.blocks.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layers))

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (tied weights once); without the embedding table when asked."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if non_embedding else n

    def embed_state(self, probs: torch.Tensor, indices: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-candidate input vectors [B, L, k, D]: token + probability + time."""
        d, logp = self.cfg.d_model, log_probs(probs)
        # Unit-normalised embeddings, scaled to unit RMS per coordinate (norm √D) so the token identity is not
        # drowned by the O(1) probability/time features; the tied head still sees the raw table.
        tok = F.normalize(self.embed(indices), dim=-1) * math.sqrt(d)
        feats = torch.stack((logp / math.log(self.cfg.vocab_size), probs.float()), dim=-1)
        time = self.time_mlp(timestep_embedding(t, d))
        return tok + self.prob_mlp(feats) + time[:, None, None, :]

    def forward(
        self, probs: torch.Tensor, indices: torch.Tensor, t: torch.Tensor, *, return_hidden: bool = False
    ) -> torch.Tensor:
        """Logits [B, L, V] from a sparse state (probs, indices) [B, L, k] at times t [B]; with `return_hidden`
        the pooled, normed states [B, L, D] the head would read (the objective applies the head itself)."""
        B, L, k = indices.shape
        x = self.embed_state(probs, indices, t).reshape(B, L * k, -1)
        logp = log_probs(probs)
        positions = torch.arange(L, device=indices.device).repeat_interleave(k)  # candidate (l, j) at position l
        rope = rotary_tables(positions, self.cfg.d_model // self.cfg.n_heads, self.cfg.rope_theta)
        flat_logp = logp.reshape(B, L * k)
        for i, block in enumerate(self.blocks):
            key_bias = self.key_bias_scale[i] * flat_logp
            if self.cfg.gradient_checkpointing and self.training:
                x = checkpoint(block, x, rope, key_bias, None, use_reentrant=False)
            else:
                x = block(x, rope, key_bias)
        hidden = self.out_norm(self.readout(self.norm(x).view(B, L, k, -1), logp))
        return hidden if return_hidden else self.head(hidden)

    def readout(self, h: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
        """A learned query attends over each position's k candidates [B, L, k, D] (+ log-prob bias) → [B, L, D]."""
        B, L, k, d = h.shape
        H = self.cfg.n_heads
        hd = d // H
        keys, values = self.readout_kv(h).view(B, L, k, 2, H, hd).unbind(dim=3)
        query = self.readout_query.view(H, hd).to(keys.dtype)
        scores = torch.einsum("blkhd,hd->blhk", keys, query).float() / math.sqrt(hd)
        scores = scores + self.readout_bias_scale * logp[:, :, None, :]
        weights = scores.softmax(dim=-1).to(values.dtype)
        pooled = torch.einsum("blhk,blkhd->blhd", weights, values).reshape(B, L, d)
        return self.readout_proj(pooled)
