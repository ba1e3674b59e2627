"""Compute as a first-class axis: runs log their training FLOPs and seconds, a FLOPs or tokens budget sets the
number of steps (and the LR schedule), and the comparison reads validation curves against FLOPs."""

from __future__ import annotations

import json

import pytest
import torch
from test_trainer import history  # step → metrics of a history.jsonl

from lmcore.config import TrainConfig
from lmcore.errors import ConfigError
from lmcore.eval.compute_report import compute_section, val_curve
from lmcore.models import ModelConfig
from lmcore.objectives import get_objective
from lmcore.train.budget import budgeted
from lmcore.train.perf import KCurriculum, flops_per_step, train_flops
from lmcore.train.run import Outputs, pretrain

TINY = {"d_model": 32, "n_heads": 4, "n_layers": 2, "d_ff": 64}


def cfg(**kw) -> TrainConfig:
    base = dict(
        max_steps=6,
        batch_size=4,
        seq_len=32,
        learning_rate=3e-3,
        warmup_steps=1,
        eval_every=3,
        eval_batches=1,
        log_every=2,
        checkpoint_every=3,
        num_samples=0,
        wandb=False,
        device="cpu",
    )
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("arch, section", [("ar", {}), ("sdd", {"k_schedule": "1,2", "k_warmup_steps": 3})])
def test_runs_log_cumulative_training_flops_and_seconds(arch, section, corpus, tmp_path):
    objective = get_objective(arch, section)
    pretrain(objective, ModelConfig(**TINY), cfg(), corpus, Outputs(tmp_path, tmp_path / "m.json"), "t")
    h = history(tmp_path / "history.jsonl")
    final = objective.model_config(
        ModelConfig(**TINY), json.loads((corpus / "meta.json").read_text())["vocab_size"], 32, False
    )
    curriculum = KCurriculum.of(get_objective(arch, section))
    for step in (2, 4, 6):  # the FLOPs of every step so far, at each step's k
        assert h[step]["train/flops"] == pytest.approx(
            train_flops(final, 32, 4 * 32, step, architecture=arch, curriculum=curriculum), rel=1e-12
        )
    assert h[3]["val/flops"] == pytest.approx(3 * flops_per_step(final, 32, 128, 1, architecture=arch), rel=1e-12)
    assert 0 < h[2]["train/seconds"] < h[6]["train/seconds"]
    ckpt = torch.load(tmp_path / "latest.pt", weights_only=False)
    assert ckpt["compute"]["flops"] == pytest.approx(h[6]["train/flops"])


def test_a_flops_budget_sets_the_steps_and_the_schedule(corpus, tmp_path):
    objective = get_objective("ar")
    final = objective.model_config(ModelConfig(**TINY), 512, 32, False)
    per_step = flops_per_step(final, 32, 4 * 32, 1, architecture="ar")
    budget = 5.5 * per_step  # reached during the 6th step
    pretrain(objective, ModelConfig(**TINY), cfg(max_steps=100, flops_budget=budget), corpus, Outputs(tmp_path), "t")
    ckpt = torch.load(tmp_path / "latest.pt", weights_only=False)
    assert ckpt["global_step"] == 6 and ckpt["train_config"]["max_steps"] == 6
    assert ckpt["compute"]["flops"] >= budget > ckpt["compute"]["flops"] - per_step


def test_budget_rules():
    ar = get_objective("ar")
    final = ar.model_config(ModelConfig(**TINY), 512, 32, False)
    assert budgeted(cfg(tokens_budget=4 * 32 * 10 + 1), final, ar).max_steps == 11  # ceil: every token is seen
    assert budgeted(cfg(tokens_budget=4 * 32 * 10), final, ar, world_size=2).max_steps == 5  # the whole job's tokens
    assert budgeted(cfg(), final, ar) == cfg()  # no budget: max_steps decides
    with pytest.raises(ConfigError, match="set one of them"):
        budgeted(cfg(flops_budget=1e12, tokens_budget=1e6), final, ar)
    with pytest.raises(ConfigError, match="beyond the"):
        budgeted(cfg(stop_at_step=5, tokens_budget=4 * 32 * 3), final, ar)
    with pytest.raises(ConfigError, match="must be ≥ 0"):
        cfg(flops_budget=-1.0)
    # SDD spends the same budget in fewer steps than AR once its curriculum raises k.
    sdd = get_objective("sdd", {"k_schedule": "1,4", "k_warmup_steps": 2})
    sdd_final = sdd.model_config(ModelConfig(**TINY), 512, 32, False)
    budget = 20 * flops_per_step(final, 32, 128, 1, architecture="ar")
    assert (
        budgeted(cfg(flops_budget=budget), sdd_final, sdd).max_steps
        < budgeted(cfg(flops_budget=budget), final, ar).max_steps
        == 20
    )


def test_comparison_reads_curves_against_flops(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in [
                {"step": 10, "metrics": {"train/loss": 3.0, "train/flops": 1e9}},
                {"step": 10, "metrics": {"val/loss": 2.5, "val/flops": 1e9}},
                {"step": 20, "metrics": {"val/loss": 2.0, "val/flops": 2e9}},
            ]
        )
    )
    assert val_curve(path) == [(1e9, 2.5), (2e9, 2.0)]
    curves = {
        "ar": [(1e9, 2.5), (2e9, 2.0), (4e9, 1.5)],
        "diffusion": [(1e9, 3.5), (2e9, 3.0), (4e9, 2.5)],
        "sdd": [(1e9, 1.0), (4e9, 0.5)],
    }
    kinds = {"ar": "exact", "diffusion": "nelbo_bound", "sdd": "denoising_ce"}
    text, result = compute_section(curves, kinds, floor=0.3)
    assert set(result["architectures"]) == {"ar", "diffusion"}  # SDD's loss is on another scale
    row = result["architectures"]["diffusion"]
    assert row["loss_at_budget"] == pytest.approx(2.5)  # at the common budget 4e9
    assert row["flops_to_target"] == pytest.approx(4e9) and row["compute_multiplier"] == pytest.approx(4e9 / 1e9)
    assert "Left out of the table: sdd" in text and "0.3000 nats/token" in text
