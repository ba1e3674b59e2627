"""The contract every registered architecture must meet (docs/architecture.md, "Adding an architecture").

Parametrised over the registry, so a new objective is checked the moment it is registered: its model config is
final and frozen, its loss is a finite scalar with gradients on every trained weight, its validation statistics
add up, its sampler returns token ids of the asked shape and is a function of the generator, its state survives a
checkpoint, and its metric kind is one the evaluation knows how to label.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lmcore.eval.kinds import VAL_KINDS
from lmcore.models import ModelConfig
from lmcore.objectives import REGISTRY, get_objective
from lmcore.tokenizer import EOS_ID, IGNORE_ID

V, SEQ = 40, 12
PRESET = ModelConfig(d_model=32, n_heads=4, n_layers=2, d_ff=64)


def rows(objective, batch: int = 3) -> dict[str, torch.Tensor]:
    """A batch in the objective's format: windows of the packed stream, or documents padded with <ignore>."""
    gen = torch.Generator().manual_seed(0)
    width = SEQ + objective.extra_tokens
    tokens = torch.randint(IGNORE_ID + 1, V, (batch, width), generator=gen)
    if objective.batch_kind == "documents":
        tokens[:, 8] = EOS_ID
        tokens[:, 9:] = IGNORE_ID
    return {"tokens": tokens}


@pytest.fixture(params=sorted(REGISTRY))
def built(request):
    objective = get_objective(request.param)
    cfg = objective.model_config(PRESET, V, SEQ, gradient_checkpointing=False)
    torch.manual_seed(0)
    return objective, cfg, objective.build_model(cfg)


def test_model_config_is_final_and_frozen(built):
    objective, cfg, _model = built
    assert cfg.vocab_size == V and cfg.causal == objective.causal and cfg.max_seq_len >= SEQ + objective.extra_tokens
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.vocab_size = 2 * V  # type: ignore[misc]
    wrong = dataclasses.replace(cfg, causal=not objective.causal)
    with pytest.raises(ValueError, match="causal"):
        objective.build_model(wrong)


def test_loss_is_a_finite_scalar_with_gradients(built):
    objective, _, model = built
    objective.on_step(0)
    loss, metrics = objective.loss(model, rows(objective), torch.Generator().manual_seed(1))
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert "accuracy" in metrics
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_eval_stats_add_up(built):
    objective, _, model = built
    stats = objective.eval_stats(model.eval(), rows(objective), torch.Generator().manual_seed(2))
    assert {"loss_sum", "count", "correct"} <= set(stats)
    assert stats["count"] > 0 and stats["loss_sum"] > 0
    assert 0 <= stats["correct"] <= stats.get("acc_count", stats["count"])
    assert objective.metric_kind in VAL_KINDS


def test_sampler_returns_ids_of_the_asked_shape_and_follows_the_generator(built):
    objective, cfg, model = built
    model.eval()
    a = objective.sample(model, 2, 8, torch.Generator().manual_seed(3), steps=4)
    b = objective.sample(model, 2, 8, torch.Generator().manual_seed(3), steps=4)
    assert a.shape == (2, 8) and a.dtype == torch.long
    assert ((a >= 0) & (a < cfg.vocab_size)).all()
    assert torch.equal(a, b)


def test_objective_state_survives_a_checkpoint(built):
    objective, _, _ = built
    objective.on_step(10_000)
    state = objective.state_dict()
    fresh = get_objective(objective.name, dataclasses.asdict(objective.cfg))
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state
    assert fresh.slots_per_position() == objective.slots_per_position() >= 1
