"""Weight names: lmcore's AR backbone → transformers' Starcoder2ForCausalLM, and the weights-only export.

Starcoder2 computes exactly lmcore's backbone (lmcore/models/transformer.py) when configured as
`lmcore.export.huggingface.starcoder2_config` does: pre-norm LayerNorm blocks (eps 1e-5) applied one after the
other (no parallel residual); separate q/k/v/o projections, attention at scale 1/√head_dim; rotary positions over
the whole head in the half-rotate layout (pairs (x_j, x_{j+d/2}), inv_freq_j = θ^(-2j/d)); an MLP up → GELU (tanh
approximation) → down; a final LayerNorm; a linear head, tied to the embedding or not; no logit scaling; no linear
biases (`use_bias: false`). The one difference: Starcoder2's LayerNorms always carry a bias and lmcore's have none,
so the export writes those biases as zeros, which add exactly nothing.
"""

from __future__ import annotations

import torch

from lmcore.errors import CheckpointError
from lmcore.models import ModelConfig

# The mapping, one row per Starcoder2 tensor; {i} runs over the layers. lmcore's fused qkv rows are [q; k; v], D rows
# each (D = d_model) in head order h·head_dim + j, which is the row order of Starcoder2's q_proj/k_proj/v_proj.
#   lmcore name (None: a zero bias)  Starcoder2ForCausalLM name                           lmcore rows (part, of parts)
WEIGHT_MAP: tuple[tuple[str | None, str, tuple[int, int] | None], ...] = (
    ("embed.weight", "model.embed_tokens.weight", None),
    ("blocks.{i}.norm1.weight", "model.layers.{i}.input_layernorm.weight", None),
    (None, "model.layers.{i}.input_layernorm.bias", None),
    ("blocks.{i}.attn.qkv.weight", "model.layers.{i}.self_attn.q_proj.weight", (0, 3)),
    ("blocks.{i}.attn.qkv.weight", "model.layers.{i}.self_attn.k_proj.weight", (1, 3)),
    ("blocks.{i}.attn.qkv.weight", "model.layers.{i}.self_attn.v_proj.weight", (2, 3)),
    ("blocks.{i}.attn.proj.weight", "model.layers.{i}.self_attn.o_proj.weight", None),
    ("blocks.{i}.norm2.weight", "model.layers.{i}.post_attention_layernorm.weight", None),
    (None, "model.layers.{i}.post_attention_layernorm.bias", None),
    ("blocks.{i}.mlp.up.weight", "model.layers.{i}.mlp.c_fc.weight", None),
    ("blocks.{i}.mlp.down.weight", "model.layers.{i}.mlp.c_proj.weight", None),
    ("norm.weight", "model.norm.weight", None),
    (None, "model.norm.bias", None),
    ("head.weight", "lm_head.weight", None),  # written when untied
)


def _tensor(t: torch.Tensor) -> torch.Tensor:
    # safetensors stores each tensor once: no views into a shared buffer, no tensors that share memory.
    return t.detach().cpu().contiguous().clone()


def starcoder2_state_dict(state: dict[str, torch.Tensor], cfg: ModelConfig, where: str) -> dict[str, torch.Tensor]:
    """The AR backbone's weights under Starcoder2ForCausalLM's names (WEIGHT_MAP); every lmcore weight is used."""
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    dtype = state["embed.weight"].dtype if "embed.weight" in state else torch.float32
    for ours, theirs, rows in WEIGHT_MAP:
        for i in range(cfg.n_layers) if "{i}" in theirs else [None]:
            name = theirs.format(i=i)
            if ours is None:
                out[name] = torch.zeros(cfg.d_model, dtype=dtype)
                continue
            src = ours.format(i=i)
            if src not in state:
                raise CheckpointError(f"{where}: weight {src} missing: not lmcore's AR backbone")
            used.add(src)
            if name == "lm_head.weight" and cfg.tie_embeddings:
                continue  # tie_word_embeddings: transformers ties it to model.embed_tokens.weight
            t = state[src]
            out[name] = _tensor(t.chunk(rows[1])[rows[0]] if rows else t)
    unused = sorted(set(state) - used)
    if unused:
        raise CheckpointError(f"{where}: weights {unused[:4]} have no Starcoder2 counterpart: not lmcore's AR backbone")
    return out


def native_state_dict(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """lmcore's own weight names, a tied head stored once (as embed.weight), as safetensors requires."""
    return {name: _tensor(t) for name, t in state.items() if not (cfg.tie_embeddings and name == "head.weight")}
