"""Training budgets → optimizer steps: a FLOPs budget (equal-compute comparisons across architectures, SDD's k
curriculum included) or a tokens budget (equal data)."""

from __future__ import annotations

import dataclasses
import math

from lmcore.config import TrainConfig
from lmcore.errors import ConfigError
from lmcore.models import ModelConfig
from lmcore.objectives import Objective
from lmcore.train.perf import NO_CURRICULUM, KCurriculum, flops_per_step, train_flops

# A budget within this relative distance above a step boundary counts as reached at that step, so that
# steps_for_budget(train_flops(n)) == n despite float rounding in the sums.
_REL_TOL = 1e-9


def _budget(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite positive number, got {value!r}")
    return value


def steps_for_budget(
    flops_budget: float,
    cfg: ModelConfig,
    seq_len: int,
    batch_tokens: int,
    *,
    architecture: str,
    curriculum: KCurriculum = NO_CURRICULUM,
) -> int:
    """The first optimizer step count whose cumulative training FLOPs reach `flops_budget`.

    Steps cost what perf.flops_per_step gives at the k the curriculum sets for them, so for SDD the budget is spent
    stage by stage; the last step may overshoot the budget by less than one step's FLOPs.
    """
    _budget(flops_budget, "train.flops_budget")
    first = flops_per_step(cfg, seq_len, batch_tokens, curriculum.k_at(0), architecture=architecture)
    if flops_budget < first * (1 - _REL_TOL):
        raise ConfigError(
            f"train.flops_budget={flops_budget:.4g} is smaller than one optimizer step of "
            f"{architecture} ({first:.4g} FLOPs at seq_len={seq_len}, {batch_tokens} tokens per step)"
        )
    for start, k, length in curriculum.stages():
        spent = train_flops(cfg, seq_len, batch_tokens, start, architecture=architecture, curriculum=curriculum)
        needed = (flops_budget - spent) / flops_per_step(cfg, seq_len, batch_tokens, k, architecture=architecture)
        steps = max(1, math.ceil(needed - _REL_TOL * max(needed, 1.0)))  # of this stage, paid by what is left
        if steps <= length:  # always true in the last stage, whose length is unbounded
            break
    return start + steps


def steps_for_tokens(tokens_budget: float, batch_tokens: int) -> int:
    """ceil(tokens_budget / batch_tokens): the optimizer steps that see `tokens_budget` training positions."""
    _budget(tokens_budget, "train.tokens_budget")
    if isinstance(batch_tokens, bool) or not isinstance(batch_tokens, int) or batch_tokens < 1:
        raise ConfigError(f"batch_tokens must be a positive integer, got {batch_tokens!r}")
    if tokens_budget < batch_tokens:
        raise ConfigError(
            f"train.tokens_budget={tokens_budget:g} is smaller than one optimizer step ({batch_tokens} tokens)"
        )
    if float(tokens_budget).is_integer():  # exact integer arithmetic: no float rounding of large budgets
        return -(-int(tokens_budget) // batch_tokens)
    return math.ceil(tokens_budget / batch_tokens)


def budgeted(cfg: TrainConfig, model_cfg: ModelConfig, objective: Objective, world_size: int = 1) -> TrainConfig:
    """`cfg` with max_steps set by train.flops_budget or train.tokens_budget (unchanged when neither is set).

    max_steps is the length of the LR schedule, so warmup + cosine are fitted to the budget; the budget counts the
    whole job (every rank's tokens), and SDD's steps at the k its curriculum sets for them."""
    if cfg.flops_budget and cfg.tokens_budget:
        raise ConfigError("train.flops_budget and train.tokens_budget: set one of them, not both")
    if not (cfg.flops_budget or cfg.tokens_budget):
        return cfg
    batch_tokens = cfg.batch_size * cfg.seq_len * cfg.grad_accum_steps * world_size
    if cfg.flops_budget:
        steps = steps_for_budget(
            cfg.flops_budget,
            model_cfg,
            cfg.seq_len,
            batch_tokens,
            architecture=objective.name,
            curriculum=KCurriculum.of(objective),
        )
    else:
        steps = steps_for_tokens(cfg.tokens_budget, batch_tokens)
    if cfg.stop_at_step > steps:
        raise ConfigError(f"train.stop_at_step={cfg.stop_at_step} is beyond the {steps} steps the budget allows")
    return dataclasses.replace(cfg, max_steps=steps)
