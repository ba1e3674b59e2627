"""Samplers: the exponential-race draw is distributed as the softmax (and is torch.multinomial's draw in float64),
greedy is the argmax, the AR decoder matches a cache-free reference decode, and no sampler reads device values
back inside its loop."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmcore.models import ModelConfig
from lmcore.objectives import get_objective
from lmcore.objectives.sampling import exponential_race, sample_from_logits
from lmcore.tokenizer import EOS_ID, PAD_ID

V = 40


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_frequencies_match(draws: torch.Tensor, probs: torch.Tensor) -> None:
    """Each token's frequency within 5 binomial standard deviations of its probability."""
    n = draws.numel()
    freq = torch.bincount(draws.flatten(), minlength=probs.numel()).double() / n
    sd = (probs * (1 - probs) / n).sqrt()
    assert ((freq - probs).abs() <= 5 * sd + 1e-12).all(), (freq, probs)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_draws_follow_the_tempered_softmax(temperature):
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    draws = sample_from_logits(logits.expand(200_000, -1), gen(0), temperature=temperature)
    assert_frequencies_match(draws, torch.softmax(logits.double() / temperature, -1))


def test_top_p_draws_follow_the_renormalised_nucleus_and_greedy_is_argmax():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    draws = sample_from_logits(probs.log().expand(100_000, -1), gen(1), top_p=0.7)
    assert_frequencies_match(draws, torch.tensor([0.625, 0.375, 0.0, 0.0], dtype=torch.float64))
    logits = torch.randn(50, V, generator=gen(2))
    assert torch.equal(sample_from_logits(logits, gen(3), temperature=0), logits.argmax(-1))


def test_float64_draw_is_torch_multinomials_and_top_k_of_the_race_samples_without_replacement():
    probs = torch.softmax(torch.randn(64, V, generator=gen(4), dtype=torch.float64) * 2, -1)
    expected = torch.multinomial(probs, 1, generator=gen(5)).squeeze(-1)
    assert torch.equal(sample_from_logits(probs.log(), gen(5), dtype=torch.float64), expected)
    # Gumbel-top-k: the first of k candidates is a draw from p, the second a draw from p without the first.
    p = torch.tensor([0.6, 0.3, 0.1])
    top = exponential_race(p.expand(100_000, -1).clone(), gen(6)).topk(2, dim=-1).indices
    assert_frequencies_match(top[:, 0], p.double())
    second_given_first0 = top[top[:, 0] == 0, 1]
    assert_frequencies_match(second_given_first0, torch.tensor([0.0, 0.75, 0.25], dtype=torch.float64))


# ------------------------------------------------------------------ the AR decoder
def ar_setup():
    torch.manual_seed(0)
    obj = get_objective("ar")
    return obj, obj.build_model(
        ModelConfig(d_model=32, n_heads=4, n_layers=2, d_ff=64, vocab_size=V, causal=obj.causal)
    ).eval()


def cache_free_decode(model, prompt, length, g, temperature):
    """The earlier decoder, written plainly: the whole sequence through the model for every token, float64
    softmax and torch.multinomial, rows padded with <pad> after their <eos>."""
    out, done = prompt.clone(), torch.zeros(prompt.shape[0], dtype=torch.bool)
    while out.shape[1] < length:
        probs = torch.softmax(model(out)[:, -1].double() / temperature, -1)
        nxt = torch.multinomial(probs, 1, generator=g).squeeze(-1)
        nxt = torch.where(done, torch.full_like(nxt, PAD_ID), nxt)
        done |= nxt == EOS_ID
        out = torch.cat((out, nxt[:, None]), 1)
        if done.all():
            break
    return F.pad(out, (0, length - out.shape[1]), value=PAD_ID)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_ar_decoder_gives_the_cache_free_decoders_samples(temperature):
    obj, model = ar_setup()
    prompt = torch.randint(6, V, (5, 3), generator=gen(7))
    with torch.no_grad():
        expected = cache_free_decode(model, prompt, 24, gen(8), temperature)
    assert (expected == EOS_ID).any()  # some rows end early: the <pad> continuation is exercised
    for every in (1, 16, 1000):  # how often done.all() is read does not change the output
        obj.eos_check_every = every
        out = obj.sample(model, 5, 24, gen(8), prompt=prompt, temperature=temperature)
        assert torch.equal(out, expected), every


def test_ar_decoder_reads_done_once_per_check_interval(monkeypatch):
    obj, model = ar_setup()
    reads = []
    real_bool = torch.Tensor.__bool__
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda t: reads.append(1) or real_bool(t))
    monkeypatch.setattr(torch.Tensor, "item", lambda t: pytest.fail("item() in the decoder"))
    obj.eos_check_every = 4
    obj.sample(model, 3, 20, gen(9), temperature=0.01)  # near-greedy: rows rarely end, so no early stop
    assert len(reads) <= math.ceil(20 / 4)


# ------------------------------------------------------------------ no host reads in the diffusion and SDD loops
@pytest.mark.parametrize("arch", ["diffusion", "sdd"])
@pytest.mark.parametrize("kw", [{}, {"top_p": 0.8}, {"temperature": 0.0}])
def test_sampler_loops_make_no_device_to_host_reads(arch, kw, monkeypatch):
    obj = get_objective(arch, {"fixed_k": 2, "candidate_sampling": "gumbel"} if arch == "sdd" else {})
    torch.manual_seed(0)
    model = obj.build_model(
        ModelConfig(d_model=32, n_heads=4, n_layers=2, d_ff=64, vocab_size=V, causal=obj.causal)
    ).eval()
    reads = []

    def forbidden(name):
        def read(t, *a):
            reads.append(name)
            return getattr(torch._C.TensorBase, name)(t, *a)

        return read

    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "nonzero"):
        monkeypatch.setattr(torch.Tensor, name, forbidden(name))
    out = obj.sample(model, 3, 9, gen(10), steps=12, **kw)
    monkeypatch.undo()
    assert out.shape == (3, 9) and ((out >= 0) & (out < V)).all()
    # Diffusion reads how many positions each step unmasks, once, before its loop; SDD reads nothing.
    assert reads == (["tolist"] if arch == "diffusion" else [])
    assert torch.equal(out, obj.sample(model, 3, 9, gen(10), steps=12, **kw))
