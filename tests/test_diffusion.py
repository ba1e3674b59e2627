"""Masked diffusion (MDLM): the forward process, SUBS invariants, the NELBO's values at known predictors, fine-tuning
masks, antithetic times, and the ancestral sampler (unmasking rate, prompt, lengths, greedy/top-p, cache)."""

import math

import pytest
import torch
from torch import nn

from lmcore.errors import ConfigError
from lmcore.models import ModelConfig
from lmcore.objectives.diffusion import (
    NEVER_SAMPLED,
    DiffusionObjective,
    antithetic_times,
    mask_tokens,
    sample_lengths,
    subs_log_probs,
)
from lmcore.objectives.schedules import SCHEDULES, get_schedule
from lmcore.tokenizer import EOS_ID, IGNORE_ID, MASK_ID, PAD_ID

V = 40
EPS = 1e-3


class FnModel(nn.Module):
    """A fake network: logits = fn(z); records its inputs (and so its number of calls).

    Its hidden state is fn(z) itself and its head the identity, so the lean paths (the head applied by the
    objective to the rows it needs) see exactly fn's logits."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn, self.inputs = fn, []
        self.head = nn.Linear(V, V, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(V))

    def forward(self, z: torch.Tensor, return_hidden: bool = False) -> torch.Tensor:
        self.inputs.append(z.clone())
        return self.fn(z)


def tiny(schedule: str = "loglinear", **kw):
    torch.manual_seed(0)
    obj = DiffusionObjective({"schedule": schedule, **kw})
    return obj, obj.build_model(ModelConfig(d_model=32, n_heads=4, n_layers=2, d_ff=64, vocab_size=V, causal=False))


def documents(B: int, L: int, seed: int = 0) -> torch.Tensor:
    """Rows in the training format: content, <eos>, then <ignore>; the last row ends in two <pad>s."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(6, V, (B, L), generator=g)
    lengths = torch.randint(1, L - 1, (B,), generator=g)
    for i, n in enumerate(lengths.tolist()):
        tokens[i, n] = EOS_ID
        tokens[i, n + 1 :] = IGNORE_ID
    tokens[-1, -2:] = PAD_ID
    return tokens


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ schedules and the forward process
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_endpoints_and_weight_is_minus_dalpha_over_one_minus_alpha(name):
    s = get_schedule(name)
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64, requires_grad=True)
    alpha = s.alpha(t)
    (dalpha,) = torch.autograd.grad(alpha.sum(), t)
    assert torch.allclose(s.weight(t), -dalpha / (1 - alpha), rtol=1e-9)
    assert (alpha[1:] < alpha[:-1]).all()
    ends = s.alpha(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert torch.allclose(ends, torch.tensor([1.0, 0.0], dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_empirical_masking_rate_is_one_minus_alpha(name):
    s = get_schedule(name)
    tokens = torch.randint(6, V, (3, 40_000), generator=gen(0))
    tokens[:, :100] = PAD_ID
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    z, masked = mask_tokens(tokens, s.alpha(t), gen(1), tokens != PAD_ID)
    assert torch.equal(z == MASK_ID, masked) and torch.equal(z[~masked], tokens[~masked])
    assert not masked[:, :100].any()  # <pad> is never masked
    rate = masked[:, 100:].double().mean(1)
    expected = 1 - s.alpha(t)
    assert torch.allclose(rate, expected, atol=4 * math.sqrt(0.25 / 39_900))


def test_antithetic_times_cover_eps_to_one_evenly():
    n = 16
    t = antithetic_times(n, EPS, gen(3), torch.device("cpu"))
    assert t.min() >= EPS and t.max() < 1
    cells = ((t - EPS) / ((1 - EPS) / n)).floor().long()
    assert sorted(cells.tolist()) == list(range(n))  # exactly one time in each of n equal cells
    gaps = t.sort().values.diff()
    assert torch.allclose(gaps, torch.full_like(gaps, (1 - EPS) / n))


# ------------------------------------------------------------------ SUBS and the NELBO
def test_subs_never_predicts_mask_and_carries_unmasked_tokens_over():
    z = torch.tensor([[MASK_ID, 9, MASK_ID, IGNORE_ID]])
    logits = torch.randn(1, 4, V)
    logits[..., MASK_ID] = 1e4  # the network "wants" <mask>: SUBS must not let it
    logp = subs_log_probs(logits, z)
    probs = logp.exp()
    assert (probs[..., MASK_ID] == 0).all()
    assert torch.allclose(probs.sum(-1), torch.ones(1, 4))
    assert torch.equal(probs[0, 1], torch.nn.functional.one_hot(torch.tensor(9), V).float())
    assert torch.equal(probs[0, 3], torch.nn.functional.one_hot(torch.tensor(IGNORE_ID), V).float())


def test_loss_does_not_depend_on_outputs_at_unmasked_positions_or_the_mask_logit():
    obj, model = tiny()
    batch = {"tokens": documents(4, 16)}

    def noisy(z):
        logits = model(z)
        junk = 100 * torch.randn(logits.shape, generator=gen(7))
        logits = torch.where((z != MASK_ID)[..., None], logits + junk, logits)
        return logits.index_add(-1, torch.tensor([MASK_ID]), torch.full(logits.shape[:-1] + (1,), 1e4))

    ref, ref_m = obj.loss(model, batch, gen(5))
    loss, m = obj.loss(FnModel(noisy), batch, gen(5))
    assert torch.allclose(loss, ref) and m == ref_m


def test_perfect_predictor_has_zero_nelbo_and_full_accuracy():
    obj, _ = tiny()
    tokens = documents(8, 24)
    perfect = FnModel(lambda z: 50.0 * torch.nn.functional.one_hot(tokens, V).float())
    loss, metrics = obj.loss(perfect, {"tokens": tokens}, gen(0))
    assert loss.item() < 1e-9 and metrics["accuracy"] == 1.0
    stats = obj.eval_stats(perfect, {"tokens": tokens}, gen(0))
    assert stats["loss_sum"] < 1e-9 and stats["correct"] == stats["acc_count"] > 0


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_uniform_predictor_has_nelbo_log_v_minus_one(name):
    obj = DiffusionObjective({"schedule": name, "eval_t_samples": 16, "t_min": EPS})
    tokens = documents(64, 64)
    batch = {"tokens": tokens}
    uniform = FnModel(lambda z: torch.zeros(*z.shape, V))  # SUBS makes it uniform over the V − 1 non-mask tokens
    # E_t[w(t)(1 − α_t)] over t ~ U[eps, 1] = (α_eps − α_1)/(1 − eps): 1 for log-linear, ≈ 0.9994 for cosine.
    s = get_schedule(name)
    per_position = (s.alpha(torch.tensor(EPS)) - s.alpha(torch.tensor(1.0))).item() / (1 - EPS) * math.log(V - 1)
    # Every non-pad position (<ignore> padding included) adds to the NELBO; the unit is the document token.
    doc_tokens = ((tokens != PAD_ID) & (tokens != IGNORE_ID)).sum().item()
    assert doc_tokens < (tokens != PAD_ID).sum().item()
    target = per_position * (tokens != PAD_ID).sum().item() / doc_tokens
    stats = [obj.eval_stats(uniform, batch, gen(seed)) for seed in range(100)]
    assert all(st["count"] == doc_tokens for st in stats)
    # One evaluation's estimate has ~1% spread (the 1/t weight near eps); 100 of them pin the mean to ~0.1%,
    # enough to tell log(V − 1) from log V (0.7% apart).
    val = sum(st["loss_sum"] / st["count"] for st in stats) / len(stats)
    assert val == pytest.approx(target, rel=0.004) and abs(val - math.log(V)) > abs(val - target)
    train = [obj.loss(uniform, batch, gen(seed))[0].item() for seed in range(100)]
    assert sum(train) / len(train) == pytest.approx(target, rel=0.015)


def test_loss_mask_keeps_prompt_clean_unscored_and_normalises_by_response_tokens():
    obj, model = tiny()
    tokens = documents(6, 20)
    loss_mask = torch.zeros_like(tokens)
    loss_mask[:, 8:] = 1
    batch = {"tokens": tokens, "loss_mask": loss_mask}
    spy = FnModel(lambda z: torch.zeros(*z.shape, V))
    for s in range(30):
        obj.loss(spy, batch, gen(s))
    seen = torch.stack(spy.inputs)
    assert torch.equal(seen[:, :, :8], tokens[None, :, :8].expand(30, -1, -1))  # the prompt is never masked
    assert (seen[:, :, 8:] == MASK_ID).any()
    # Normalised by the number of response tokens (<ignore> padding is scored but not counted):
    # Σ w(t_i)·#masked_i·log(V−1) / #response.
    loss, _ = obj.loss(spy, batch, gen(4))
    t = antithetic_times(6, obj.cfg.t_min, gen(4), torch.device("cpu"))
    n_masked = (spy.inputs[-1] == MASK_ID).sum(1).double()
    response = ((tokens != PAD_ID) & (tokens != IGNORE_ID) & loss_mask.bool()).sum()
    expected = (obj.schedule.weight(t) * n_masked).sum() * math.log(V - 1) / response
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)

    # Whatever the network says at prompt positions does not matter.
    def prompt_junk(z):
        logits = model(z).clone()
        logits[:, :8] += 100 * torch.randn(logits[:, :8].shape, generator=gen(9))
        return logits

    assert torch.allclose(obj.loss(model, batch, gen(2))[0], obj.loss(FnModel(prompt_junk), batch, gen(2))[0])
    assert obj.eval_stats(model, batch, gen(2))["count"] == response.item()


def test_eval_stats_is_deterministic_given_the_generator():
    obj, model = tiny(eval_t_samples=3)
    batch = {"tokens": documents(4, 16)}
    a, b = obj.eval_stats(model, batch, gen(11)), obj.eval_stats(model, batch, gen(11))
    assert a == b and set(a) == {"loss_sum", "count", "correct", "acc_count"}
    assert obj.eval_stats(model, batch, gen(12))["loss_sum"] != a["loss_sum"]


def test_training_steps_lower_the_nelbo():
    obj, model = tiny()
    batch = {"tokens": documents(8, 16)}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = obj.eval_stats(model, batch, gen(0))
    for step in range(40):
        loss, _ = obj.loss(model, batch, gen(step))
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = obj.eval_stats(model, batch, gen(0))
    assert last["loss_sum"] < 0.8 * first["loss_sum"]


def test_config_is_validated():
    with pytest.raises(ConfigError):
        DiffusionObjective({"schedule": "linear-ish"})
    with pytest.raises(ConfigError):
        DiffusionObjective({"nonsense": 1})
    with pytest.raises(ConfigError):
        DiffusionObjective({"t_min": 0.0})
    obj = DiffusionObjective()
    assert (obj.name, obj.causal, obj.batch_kind, obj.extra_tokens, obj.metric_kind) == (
        "diffusion",
        False,
        "documents",
        0,
        "nelbo_bound",
    )


# ------------------------------------------------------------------ the sampler
def test_samples_are_valid_ids_never_mask_and_keep_the_prompt():
    obj, model = tiny()

    def wants_mask(z):
        return model(z).index_add(-1, torch.tensor([MASK_ID]), torch.full((*z.shape, 1), 1e4))

    prompt = torch.tensor([7, 8, 9])
    out = obj.sample(FnModel(wants_mask), 5, 12, gen(1), prompt=prompt, steps=4)
    assert out.shape == (5, 12) and out.dtype == torch.long
    assert ((out >= 0) & (out < V)).all() and not torch.isin(out, torch.tensor(NEVER_SAMPLED)).any()
    assert (out[:, :3] == prompt).all()
    again = obj.sample(FnModel(wants_mask), 5, 12, gen(1), prompt=prompt, steps=4)
    assert torch.equal(out, again)


def test_infilling_fills_only_masks_inside_the_prompt():
    obj, model = tiny()
    prompt = torch.tensor([[7, MASK_ID, 9, MASK_ID, 11]])
    out = obj.sample(model, 3, 8, gen(2), prompt=prompt, steps=8)
    assert (out[:, [0, 2, 4]] == torch.tensor([7, 9, 11])).all() and not (out == MASK_ID).any()


def position_logits(per_position: list[int], L: int) -> FnModel:
    """A fake network that is sure of token per_position[l] at position l, whatever the input."""

    def fn(z):
        logits = torch.full((*z.shape, V), -20.0)
        logits[:, torch.arange(L), torch.tensor(per_position)] = 20.0
        return logits

    return FnModel(fn)


def test_variable_length_samples_end_at_eos():
    L = 12
    fake = position_logits([10, 11, 12, 13, 14, EOS_ID] + [IGNORE_ID] * (L - 6), L)
    obj = DiffusionObjective({"sampling_steps": 16})
    out = obj.sample(fake, 4, L, gen(0))
    assert (sample_lengths(out) == 5).all()
    assert (out[:, 5] == EOS_ID).all() and (out[:, 6:] == IGNORE_ID).all()
    # Content after a generated <eos> is turned into <ignore> (the training format).
    late = position_logits([10, 11, 12, EOS_ID] + [20] * (L - 4), L)
    out = obj.sample(late, 2, L, gen(0))
    assert (sample_lengths(out) == 3).all() and (out[:, 4:] == IGNORE_ID).all()
    assert sample_lengths(torch.tensor([[9, 9, 9], [9, IGNORE_ID, 9]])).tolist() == [3, 1]


def test_greedy_is_the_argmax_and_top_p_keeps_the_nucleus():
    L = 6
    table = torch.randn(L, V, generator=gen(0))
    obj = DiffusionObjective()
    fake = FnModel(lambda z: table.expand(z.shape[0], -1, -1))
    a = obj.sample(fake, 3, L, gen(1), temperature=0, steps=5)
    b = obj.sample(fake, 3, L, gen(2), temperature=0, steps=5)
    best = table.clone()
    best[:, list(NEVER_SAMPLED)] = -math.inf
    assert torch.equal(a, b) and (a == best.argmax(-1)).all()

    nucleus = torch.full((L, V), -1e9)
    nucleus[:, 10:14] = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    fake = FnModel(lambda z: nucleus.expand(z.shape[0], -1, -1))
    assert set(obj.sample(fake, 200, L, gen(3), top_p=0.7, steps=3).unique().tolist()) == {10, 11}
    assert set(obj.sample(fake, 200, L, gen(3), top_p=1.0, steps=3).unique().tolist()) == {10, 11, 12, 13}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_ancestral_step_unmasks_at_rate_alpha_s_minus_alpha_t_over_one_minus_alpha_t(name):
    obj, model = tiny(name)
    spy = FnModel(model)
    obj.sample(spy, 256, 32, gen(0), steps=4)
    masked = [(z == MASK_ID).double().mean().item() for z in spy.inputs]
    t = torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=torch.float64)
    expected = (1 - obj.schedule.alpha(t)).tolist()  # masked fraction at t_k = 1 − α_{t_k}
    assert len(masked) == 4 and masked == pytest.approx(expected, abs=0.02)


def test_cache_skips_the_network_when_nothing_changed():
    obj, model = tiny()
    spy = FnModel(model)
    out = obj.sample(spy, 1, 4, gen(0), steps=64)
    assert not (out == MASK_ID).any()
    assert obj.network_calls == len(spy.inputs) <= 4 < 64  # at most one call per newly unmasked token
    for before, after in zip(spy.inputs, spy.inputs[1:]):
        assert not torch.equal(before, after)  # the network only ever saw changed inputs
