"""Training FLOPs accounting (lmcore/train/perf.py), budgets → steps (lmcore/train/budget.py) and the MFU peak table."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lmcore.errors import ConfigError
from lmcore.models import ModelConfig
from lmcore.objectives import get_objective
from lmcore.train import perf
from lmcore.train.budget import steps_for_budget, steps_for_tokens
from lmcore.train.perf import KCurriculum, flops_breakdown, flops_per_step, flops_per_token, mfu, train_flops

# d = 32, 4 heads, 2 layers, d_ff = 64, V = 100; context T = 16.
CFG = {"d_model": 32, "n_heads": 4, "n_layers": 2, "d_ff": 64, "vocab_size": 100}
T = 16


def cfg(causal: bool = True) -> ModelConfig:
    return ModelConfig(**CFG, causal=causal)


def test_ar_is_6n_plus_attention_by_hand():
    # Matmul weights: per layer qkv 3·32·32 = 3072, proj 32·32 = 1024, MLP up 32·64 = 2048 and down 2048
    # → 8192; two layers 16384; head 100·32 = 3200. N = 19584, 6N = 117504.
    # Attention 12·L·d·T = 12·2·32·16 = 12288. Total 129792 per position.
    assert flops_per_token(cfg(), T, architecture="ar") == 117504 + 12288 == 129792
    assert flops_per_token(cfg(), T, architecture="diffusion") == 129792  # the same backbone, no causal discount
    assert flops_per_token(cfg(), T) == 129792  # the backbone-only count is AR's at k = 1
    # N is the model's parameter count less its 5 LayerNorm weight vectors (the tied head is the embedding).
    model = get_objective("ar").build_model(cfg())
    assert model.num_params() - 5 * 32 == 19584
    assert flops_per_step(cfg(), T, 4 * T, architecture="ar") == 4 * T * 129792


def test_sdd_at_k1_is_the_sum_of_its_modules_by_hand():
    blocks = 6 * 16384  # the backbone blocks on 1 slot per position: 98304
    attention = 12 * 2 * 32 * 16  # scores and values over T·k slots; the key bias is an additive mask: 12288
    prob_mlp = (2 + 2) * 2 * 32 + 6 * 32 * 32  # Linear(2, d) without input gradient, Linear(d, d): 6400
    time_mlp = (4 * 32 * 32 + 6 * 32 * 32) / 16  # once per sequence of 16 positions: 640
    readout = 6 * 2 * 32 * 32 + 6 * 2 * 32 + 6 * 32 * 32  # keys/values, scores + pooling, projection: 18816
    head = 6 * 100 * 32  # 19200
    parts = flops_breakdown(cfg(False), T, 1, architecture="sdd")
    assert parts == {
        "blocks": blocks,
        "attention": attention,
        "prob_mlp": prob_mlp,
        "time_mlp": time_mlp,
        "readout": readout,
        "head": head,
    }
    assert flops_per_token(cfg(False), T, 1, architecture="sdd") == 167936 - 12288


def test_sdd_grows_linearly_in_blocks_and_quadratically_in_attention():
    f = [flops_per_token(cfg(False), T, k, architecture="sdd") for k in range(1, 9)]
    quadratic = 12 * 2 * 32 * T  # attention over T·k slots: ∝ k²
    linear = 6 * 16384 + (8 * 32 + 6 * 32 * 32) + (12 * 32 * 32 + 12 * 32)  # blocks, probability MLP, readout ∝ k
    for k in range(1, 7):  # f(k) = c0 + linear·k + quadratic·k²
        assert f[k + 1] - 2 * f[k] + f[k - 1] == pytest.approx(2 * quadratic)
        assert f[k] - f[k - 1] == pytest.approx(linear + quadratic * (2 * k + 1))
    assert f[0] - linear - quadratic == pytest.approx(640 + 6 * 32 * 32 + 6 * 100 * 32)  # time MLP, projection, head


@pytest.mark.parametrize(
    "architecture,section,k",
    [("ar", {}, 1), ("diffusion", {}, 1), ("sdd", {"fixed_k": 1}, 1), ("sdd", {"fixed_k": 3}, 3)],
)
def test_formula_matches_torch_flop_counter_on_a_real_training_step(architecture, section, k):
    """The count equals what torch's FlopCounterMode sees in the objective's loss and its backward."""
    torch.manual_seed(0)
    objective = get_objective(architecture, section)
    # Model FLOPs, the MFU convention: the output head at every position. The lean loss path skips the head where
    # no loss is taken (diffusion's unmasked positions), which saves time without changing what the model is.
    objective.loss_path = "reference"
    model = objective.build_model(cfg(causal=objective.causal))
    rows = 3
    tokens = torch.randint(5, 100, (rows, T + objective.extra_tokens))
    gen = torch.Generator().manual_seed(0)
    # The math SDPA backend runs attention as matmuls the counter sees (the CPU flash kernel is not counted).
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        loss, _ = objective.loss(model, {"tokens": tokens}, gen)
        loss.backward()
    expected = flops_per_step(model.cfg, T, rows * T, k, architecture=architecture)
    if architecture == "sdd" and k == 1:
        # With one candidate torch's einsum runs part of the readout's score and pooling products elementwise
        # (6·d FLOPs per position), which the counter does not count; from k = 2 on they are batched matmuls.
        expected -= 6 * 32 * rows * T
    assert counter.get_total_flops() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "section",
    [{}, {"k_schedule": "1,2,4", "k_warmup_steps": 7}, {"fixed_k": 5}, {"k_schedule": [3], "k_warmup_steps": 2}],
)
def test_curriculum_follows_the_sdd_objective(section):
    objective = get_objective("sdd", section)
    curriculum = KCurriculum.of(objective)
    assert [curriculum.k_at(s) for s in range(4000)] == [objective.k_at(s) for s in range(4000)]


def test_train_flops_sums_the_curriculum_stages():
    c = cfg(False)
    per = {k: flops_per_step(c, T, 2 * T, k, architecture="sdd") for k in (1, 2, 4)}
    curriculum = KCurriculum((1, 2, 4), 10)
    assert train_flops(c, T, 2 * T, 25, architecture="sdd", curriculum=curriculum) == pytest.approx(
        10 * per[1] + 10 * per[2] + 5 * per[4]
    )
    assert train_flops(c, T, 2 * T, 45, architecture="sdd", curriculum=curriculum) == pytest.approx(
        10 * per[1] + 10 * per[2] + 25 * per[4]
    )
    assert train_flops(c, T, 2 * T, 0, architecture="sdd", curriculum=curriculum) == 0
    assert train_flops(cfg(), T, 2 * T, 7, architecture="ar") == 7 * flops_per_step(cfg(), T, 2 * T, architecture="ar")
    with pytest.raises(ConfigError, match="applies to sdd only"):
        train_flops(cfg(), T, 2 * T, 7, architecture="ar", curriculum=curriculum)
    with pytest.raises(ConfigError, match="stage_steps > 0"):
        KCurriculum((1, 2))
    with pytest.raises(ConfigError, match="1 slot|k = 1"):
        flops_per_token(cfg(), T, 2, architecture="diffusion")
    with pytest.raises(ConfigError, match="unknown 'gpt'"):
        flops_per_token(cfg(), T, architecture="gpt")
    with pytest.raises(ConfigError, match="whole number of rows"):
        flops_per_step(cfg(), T, T + 1, architecture="ar")


def test_flops_budget_to_steps():
    c = cfg()
    step = flops_per_step(c, T, 2 * T, architecture="ar")
    assert steps_for_budget(7 * step, c, T, 2 * T, architecture="ar") == 7  # exactly 7 steps' worth
    assert steps_for_budget(7.5 * step, c, T, 2 * T, architecture="ar") == 8  # reached during the 8th step
    assert steps_for_budget(step, c, T, 2 * T, architecture="ar") == 1


def test_flops_budget_inside_the_second_curriculum_stage():
    c = cfg(False)
    curriculum = KCurriculum((1, 2, 4), 10)
    f1, f2 = (flops_per_step(c, T, 2 * T, k, architecture="sdd") for k in (1, 2))
    steps = steps_for_budget(10 * f1 + 3.2 * f2, c, T, 2 * T, architecture="sdd", curriculum=curriculum)
    assert steps == 14  # 10 steps at k = 1, then the 4th step at k = 2 reaches the budget
    for budget in (f1 * 0.999 + f1, 10 * f1, 10 * f1 + 10 * f2, 10 * f1 + 10 * f2 + 1.0, 1e3 * f2):
        n = steps_for_budget(budget, c, T, 2 * T, architecture="sdd", curriculum=curriculum)
        spent = [train_flops(c, T, 2 * T, m, architecture="sdd", curriculum=curriculum) for m in (n - 1, n)]
        assert spent[0] < budget <= spent[1] * (1 + 1e-12)  # the first step count that reaches the budget


@pytest.mark.parametrize("budget", [0, -1.0, math.inf, math.nan, True, "1e18"])
def test_bad_flops_budget_is_a_config_error(budget):
    with pytest.raises(ConfigError, match="train.flops_budget must be a finite positive number"):
        steps_for_budget(budget, cfg(), T, 2 * T, architecture="ar")


def test_budgets_smaller_than_one_step_are_config_errors():
    step = flops_per_step(cfg(), T, 2 * T, architecture="ar")
    with pytest.raises(ConfigError, match="smaller than one optimizer step of ar"):
        steps_for_budget(0.5 * step, cfg(), T, 2 * T, architecture="ar")
    with pytest.raises(ConfigError, match="train.tokens_budget=31 is smaller than one optimizer step"):
        steps_for_tokens(31, 32)


def test_tokens_budget_to_steps():
    assert steps_for_tokens(1024, 64) == 16
    assert steps_for_tokens(1025, 64) == 17
    assert steps_for_tokens(1000.5, 64) == 16
    assert steps_for_tokens(10**18 + 1, 2**20) == 10**18 // 2**20 + 1  # exact for budgets beyond float precision
    with pytest.raises(ConfigError, match="train.tokens_budget must be"):
        steps_for_tokens(math.inf, 64)


def test_peak_table_matches_full_names_only(capsys):
    assert perf.peak_flops_for_name("NVIDIA H100 80GB HBM3") == 989e12
    assert perf.peak_flops_for_name("NVIDIA H100 NVL") == 835e12  # not the SXM part's peak
    assert perf.peak_flops_for_name("NVIDIA H100 PCIe") == 756e12
    assert perf.peak_flops_for_name("NVIDIA H200") == 989e12
    assert perf.peak_flops_for_name("NVIDIA L40S") == 362e12
    assert perf.peak_flops_for_name("NVIDIA L4") == 121e12  # not L40S's
    assert perf.peak_flops_for_name("NVIDIA A100-SXM4-80GB") == 312e12
    assert perf.peak_flops_for_name("NVIDIA A10G") == 70e12
    capsys.readouterr()
    assert perf.peak_flops_for_name("NVIDIA H100 Hypothetical") is None  # no substring match on "H100"
    assert perf.peak_flops_for_name("NVIDIA H100 Hypothetical") is None
    assert capsys.readouterr().err.count("'NVIDIA H100 Hypothetical'") == 1  # reported once


def test_mfu_is_achieved_over_peak(monkeypatch):
    assert mfu(1e6, cfg(), T, torch.device("cpu")) is None  # no GPU peak on CPU
    monkeypatch.setattr(perf, "peak_flops", lambda device: 1e12)
    fpt = flops_per_token(cfg(False), T, 4, architecture="sdd")
    assert mfu(1e5, cfg(False), T, torch.device("cpu"), 4, architecture="sdd") == pytest.approx(1e5 * fpt / 1e12)


def test_stated_formula_is_the_one_computed():
    """MFU_FORMULA (printed by the benchmark) evaluates to flops_per_token for both kinds of network."""
    text = perf.MFU_FORMULA
    ar_expr = text.split("AR and diffusion ")[1].split(";")[0]
    sdd_expr = re.sub(r"\[[^\]]*\]", "", text.split("SDD at k candidates ")[1])
    names = {"d": 32, "H": 4, "L": 2, "d_ff": 64, "V": 100, "T": T}
    for k in (1, 3):
        value = eval(sdd_expr.replace("^", "**"), {}, {**names, "k": k})  # our own constant string
        assert value == pytest.approx(flops_per_token(cfg(False), T, k, architecture="sdd"))
    assert eval(ar_expr.replace("^", "**"), {}, names) == flops_per_token(cfg(), T, architecture="ar")
