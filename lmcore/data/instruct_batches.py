"""Batches of prepared instruction rows for the one trainer: `{"tokens", "loss_mask"}` in the objective's format.

The stored row is prompt + response + <eos>, then <pad>, with the loss mask 1 exactly on response and <eos>.
Per objective, as in pretraining:
  - causal (AR, for which a document starts after the <eos> before it): an <eos> is put in front
    (so rows are at most seq_len + 1 tokens, AR's window), padding stays <pad> (never a target), the mask is
    the stored one, and columns that are padding in every row are cut off (a causal model never sees them);
  - bidirectional (diffusion, SDD: one document per row, <ignore> after <eos>): padding becomes <ignore>, and the
    mask also covers that padding. The whole region after the prompt is what the model infills at evaluation,
    so it must learn where the response ends (as LLaDA's SFT trains its <eos> padding); the objectives still
    normalise by response tokens only (<ignore> is not counted) and never noise or score the prompt.
Rows are drawn by the samplers' one rule (lmcore/data/samplers.py, as for corpora): each step's global batch
once from (seed, step), shard m·W + r going to rank r's micro-step m, so resuming at a step needs no sampler state.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmcore.config import TrainConfig
from lmcore.data.instruct_dataset import InstructSplit
from lmcore.data.samplers import RowSampler, micro_samplers
from lmcore.errors import DataError
from lmcore.objectives import Batch, Objective
from lmcore.tokenizer import EOS_ID, IGNORE_ID, PAD_ID


def format_rows(tokens: np.ndarray, mask: np.ndarray, objective: Objective) -> Batch:
    """Stored rows [n, L] (and masks) → the batch `objective` trains on (see the module docstring)."""
    tokens = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    mask = torch.from_numpy(np.asarray(mask, dtype=np.int64))
    if objective.causal:
        start = torch.full((tokens.shape[0], 1), EOS_ID, dtype=torch.long)
        width = int((tokens != PAD_ID).sum(1).max()) + 1 if tokens.numel() else 1
        return {"tokens": torch.cat((start, tokens), 1)[:, :width],
                "loss_mask": torch.cat((torch.zeros_like(start), mask), 1)[:, :width]}
    padding = tokens == PAD_ID
    return {"tokens": tokens.masked_fill(padding, IGNORE_ID), "loss_mask": mask.masked_fill(padding, 1)}


def row_length(data_width: int, objective: Objective) -> int:
    """Tokens per training row for `objective` (AR's leading <eos> adds one)."""
    return data_width + objective.extra_tokens


def instruct_batches(objective: Objective, data_dir: str | Path, cfg: TrainConfig, rank: int = 0,
                     world_size: int = 1) -> tuple[Callable[[int, int], Batch], list[dict[str, Any]]]:
    """Train batch function (step, micro) → rows drawn with replacement, and the fixed validation batches
    (the first eval_batches · grad_accum_steps · world_size · batch_size validation rows, in order)."""
    train, val = InstructSplit(data_dir, "train"), InstructSplit(data_dir, "val")
    if len(train) == 0 or len(val) == 0:
        raise DataError(f"{data_dir}: needs train and val examples (train {len(train)}, val {len(val)})")
    shards, bs = cfg.grad_accum_steps * world_size, cfg.batch_size
    samplers = micro_samplers(lambda shard, n: RowSampler(train, bs, cfg.seed, shard, n), cfg.grad_accum_steps,
                              rank, world_size)

    def train_fn(step: int, micro: int) -> Batch:
        return format_rows(*samplers[micro].batch(step), objective)

    n_val = min(len(val), cfg.eval_batches * shards * bs)
    val_batches = [format_rows(*val.rows(range(i, min(i + bs, n_val))), objective) for i in range(0, n_val, bs)]
    return train_fn, val_batches
