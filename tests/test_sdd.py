"""SDD: the sparse-state noise process, the k curriculum, the loss masks, the folded attention and the sampler."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmcore.config import build_dataclass
from lmcore.errors import ConfigError
from lmcore.models import ModelConfig
from lmcore.models.sdd import SDDDenoiser, log_probs
from lmcore.models.transformer import apply_rotary, rotary_tables
from lmcore.objectives.sdd import (
    SDDConfig,
    SDDObjective,
    add_noise,
    clean_state,
    noise_level,
    uniform_state,
)
from lmcore.tokenizer import BOS_ID, EOS_ID, IGNORE_ID, MASK_ID, PAD_ID, UNK_ID

V = 40
EPS = 0.01


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine spinning OpenMP workers cost ~20x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_cfg(**kw) -> ModelConfig:
    return ModelConfig(
        **{"d_model": 32, "n_heads": 4, "n_layers": 2, "d_ff": 64, "vocab_size": V, "causal": False, **kw}
    )


def setup(section=None):
    torch.manual_seed(0)
    obj = SDDObjective(section or {"fixed_k": 4})
    return obj, obj.build_model(tiny_cfg())


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ the noise process
@pytest.mark.parametrize("k", [1, 2, 8])
def test_clean_state_has_truth_first_then_distinct_eps_candidates(k):
    tokens = torch.randint(0, V, (16, 10))
    probs, idx = clean_state(tokens, k, V, EPS, gen())
    assert probs.shape == idx.shape == (16, 10, k)
    assert torch.equal(idx[..., 0], tokens)
    assert torch.allclose(probs[..., 0], torch.tensor(1 - EPS * (k - 1)))
    assert torch.allclose(probs[..., 1:], torch.tensor(EPS))
    assert (probs[..., :-1] >= probs[..., 1:]).all()
    assert all(len(set(c)) == k for c in idx.view(-1, k).tolist())  # the truth and k-1 distinct others


def test_noise_at_t0_is_identity_and_probs_stay_descending():
    tokens = torch.randint(0, V, (8, 12))
    probs, idx = clean_state(tokens, 4, V, EPS, gen())
    p0, i0 = add_noise(probs, idx, torch.zeros(8), V, gen(1))
    assert torch.equal(p0, probs) and torch.equal(i0, idx)
    for t in (0.1, 0.4, 0.7, 0.95):
        p, i = add_noise(probs, idx, torch.full((8,), t), V, gen(2))
        assert (p[..., :-1] >= p[..., 1:]).all()
        assert all(len(set(c)) == 4 for c in i.view(-1, 4).tolist())
        assert (p > 0).all() and (p <= 1).all()


def _chi2_uniform(idx: torch.Tensor, vocab: int) -> float:
    counts = torch.bincount(idx.flatten(), minlength=vocab).double()
    expected = idx.numel() / vocab
    return ((counts - expected) ** 2 / expected).sum().item()


def test_noise_at_t1_is_the_samplers_uniform_start():
    vocab, k = 50, 4
    tokens = torch.full((64, 64), 7)  # a maximally non-uniform clean state
    probs, idx = clean_state(tokens, k, vocab, EPS, gen())
    p1, i1 = add_noise(probs, idx, torch.ones(64), vocab, gen(1))
    pu, iu = uniform_state((64, 64, k), vocab, gen(2), torch.device("cpu"))
    for p, i in ((p1, i1), (pu, iu)):
        assert torch.allclose(p, torch.tensor(1 / vocab))
        assert all(len(set(c)) == k for c in i.view(-1, k).tolist())
        # 49 degrees of freedom: chi-square mean 49, sd ≈ 10; 110 is a > 5-sigma bound.
        assert _chi2_uniform(i, vocab) < 110
        assert _chi2_uniform(i[..., 0], vocab) < 110  # the top slot too: nothing of the truth survives


def test_swap_probability_matches_formula():
    vocab, k, eps = 1000, 4, 0.05
    tokens = torch.randint(0, vocab, (200, 100))
    probs, idx = clean_state(tokens, k, vocab, eps, gen())
    for t in (0.3, 0.6, 0.85):
        n = noise_level(torch.tensor(t)).item()
        p, i = add_noise(probs, idx, torch.full((200,), t), vocab, gen(3))
        # A kept candidate keeps its token and holds (1-n)p + n/V; a swapped one holds 1/V.
        kept_truth = ((i == tokens[..., None]) & ((p - ((1 - n) * (1 - 3 * eps) + n / vocab)).abs() < 1e-6)).any(-1)
        kept_eps = ((p - ((1 - n) * eps + n / vocab)).abs() < 1e-6).sum(-1)
        p_max = 1 - 3 * eps
        for rate, expected, trials in (
            (1 - kept_truth.double().mean().item(), n * (1 - (1 - n)), tokens.numel()),
            (1 - kept_eps.double().mean().item() / (k - 1), n * (1 - eps / p_max * (1 - n)), tokens.numel() * (k - 1)),
        ):
            sd = math.sqrt(expected * (1 - expected) / trials)
            assert abs(rate - expected) < 5 * sd + 1e-9, (t, rate, expected)


# ------------------------------------------------------------------ the k curriculum
def test_curriculum_switches_k_at_stage_boundaries_and_resumes():
    obj = SDDObjective({"k_schedule": "1,2,4", "k_warmup_steps": 10})
    assert [obj.on_step(s)["k"] for s in (0, 9, 10, 19, 20, 500)] == [1, 1, 2, 2, 4, 4]
    obj.on_step(15)
    resumed = SDDObjective({"k_schedule": "1,2,4", "k_warmup_steps": 10})
    assert resumed.k == 1
    resumed.load_state_dict(obj.state_dict())
    assert resumed.k == 2  # sampling right after a reload uses the k trained last
    assert [resumed.on_step(s)["k"] for s in range(16, 22)] == [obj.on_step(s)["k"] for s in range(16, 22)]
    assert SDDObjective({"fixed_k": 3, "k_warmup_steps": 1}).on_step(1000) == {"k": 3.0}


def test_trainer_resume_across_a_k_switch_is_exact(tmp_path):
    from lmcore.config import TrainConfig
    from lmcore.train.checkpoint import RunInfo
    from lmcore.train.tracking import Tracker
    from lmcore.train.trainer import Trainer

    def trainer(directory, max_steps):
        cfg = TrainConfig(
            max_steps=max_steps,
            batch_size=2,
            seq_len=8,
            warmup_steps=1,
            eval_every=1,
            log_every=1,
            checkpoint_every=2,
            eval_batches=1,
            num_samples=0,
            wandb=False,
            device="cpu",
        )
        batches = lambda step, micro: {"tokens": torch.randint(6, V, (2, 8), generator=gen(step))}
        obj = SDDObjective({"k_schedule": "1,3", "k_warmup_steps": 2})
        val = batches(0, 0)
        val["tokens"][:, 6:] = IGNORE_ID  # padding after the text, so val/ignore_accuracy has targets to score
        return Trainer(obj, tiny_cfg(), cfg, batches, [val], directory, RunInfo("sdd", {}, ""), Tracker())

    full = trainer(tmp_path / "a", 4)
    last = full.fit()  # validates every step: evaluation must not disturb the training noise
    assert last["train/k"] == 3 and {"val/all_accuracy", "val/ignore_accuracy"} <= set(last)
    trainer(tmp_path / "b", 2).fit()  # stops at step 2, right at the switch from k = 1 to k = 3
    resumed = trainer(tmp_path / "c", 4)
    resumed.resume(tmp_path / "b" / "latest.pt")
    assert resumed.step == 2 and resumed.objective.k == 1
    resumed.fit()
    assert resumed.objective.k == 3
    for name, p in full.model.state_dict().items():
        assert torch.equal(p, resumed.model.state_dict()[name]), name


def test_config_accepts_yaml_lists_and_strings_and_rejects_bad_values():
    assert build_dataclass(SDDConfig, {"k_schedule": [1, 4]}, "sdd").schedule() == [1, 4]
    assert build_dataclass(SDDConfig, {"k_schedule": "2, 8"}, "sdd").k_schedule == "2,8"
    for bad in (
        {"k_schedule": "1,x"},
        {"k_schedule": [0, 2]},
        {"candidate_prob": 0.2},
        {"temperature_schedule": "cosine"},
        {"top_p": 0.0},
        {"typo": 1},
    ):
        with pytest.raises(ConfigError):
            SDDObjective(bad)


# ------------------------------------------------------------------ loss and evaluation
class Spy(nn.Module):
    """Wraps a model and keeps the last inputs and the logits it gives for them (also when asked for hidden
    states: the lean loss path applies the wrapped model's head itself)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.cfg = model, model.cfg

    def forward(self, probs, idx, t, return_hidden=False):
        self.seen = (probs, idx, t)
        self.logits = self.model(probs, idx, t)
        return self.model(probs, idx, t, return_hidden=True) if return_hidden else self.logits


def test_loss_mask_keeps_prompt_clean_and_unscored():
    obj, model = setup()
    spy = Spy(model)
    tokens = torch.randint(6, V, (4, 10))
    tokens[:, -2:] = IGNORE_ID
    mask = torch.zeros_like(tokens)
    mask[:, 4:] = 1
    for seed in range(3):
        loss, metrics = obj.loss(spy, {"tokens": tokens, "loss_mask": mask}, gen(seed))
        probs, idx, _t = spy.seen
        assert torch.equal(idx[:, :4, 0], tokens[:, :4])
        assert torch.allclose(probs[:, :4], torch.tensor([1 - 3 * EPS, EPS, EPS, EPS]))
        ref = F.cross_entropy(spy.logits[:, 4:].reshape(-1, V), tokens[:, 4:].reshape(-1))
        assert torch.allclose(loss, ref, atol=1e-6)
        assert metrics["ignore_accuracy"] == (spy.logits[:, -2:].argmax(-1) == IGNORE_ID).float().mean().item()
    assert (idx[:, 4:, 0] != tokens[:, 4:]).any()  # the response is noised (t is stratified over the batch)


def test_eval_stats_are_deterministic_and_count_every_non_pad_position():
    obj, model = setup()
    tokens = torch.randint(6, V, (4, 9))
    tokens[:, 6:] = IGNORE_ID
    tokens[0, -1] = PAD_ID
    a = obj.eval_stats(model, {"tokens": tokens}, gen(5))
    b = obj.eval_stats(model, {"tokens": tokens}, gen(5))
    assert a == b
    assert a["count"] == 35 and a["ignore_count"] == 11  # <ignore> scored, <pad> not
    # accuracy is over corrupted positions (truth no longer the top candidate); all_ over every scored one.
    assert a["all_count"] == a["count"] and 0 < a["acc_count"] < a["count"] and a["correct"] <= a["acc_count"]
    assert a["correct"] <= a["all_correct"] <= a["all_count"]
    loss, metrics = obj.loss(model, {"tokens": tokens}, gen(5))
    assert set(metrics) >= {"accuracy", "all_accuracy", "ignore_accuracy"} and loss.item() > 0


def test_loss_decreases_on_a_repetitive_corpus():
    torch.manual_seed(0)
    obj = SDDObjective({"fixed_k": 2})
    model = obj.build_model(tiny_cfg())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    pattern = torch.tensor([6, 7, 8, 9, 10, 11])
    losses = []
    for step in range(40):
        phase = torch.randint(0, 6, (16, 1), generator=gen(step))
        tokens = pattern[(phase + torch.arange(12)) % 6]
        loss, _ = obj.loss(model, {"tokens": tokens}, gen(1000 + step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5, losses


# ------------------------------------------------------------------ the denoiser
def _reference_attention(attn, x, rope, key_bias):
    """Plain softmax attention with an explicit [B, 1, T, T] additive mask built from the key bias."""
    B, T, C = x.shape
    q, k, v = attn.qkv(x).view(B, T, 3, attn.n_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
    scores = q @ k.transpose(-1, -2) / math.sqrt(attn.head_dim) + key_bias[:, None, None, :]
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
    return attn.proj(y)


def test_key_bias_attention_equals_explicit_mask_reference(monkeypatch):
    _, model = setup()
    model.eval()
    with torch.no_grad():
        model.key_bias_scale.fill_(0.7)
    probs, idx = add_noise(
        *clean_state(torch.randint(0, V, (2, 6)), 4, V, EPS, gen()), torch.tensor([0.3, 0.8]), V, gen(1)
    )
    t = torch.tensor([0.3, 0.8])
    masks = []
    real_sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(
        F, "scaled_dot_product_attention", lambda *a, **kw: masks.append(kw.get("attn_mask")) or real_sdpa(*a, **kw)
    )
    out = model(probs, idx, t)
    B, L, k = idx.shape
    # One additive bias per key, broadcast over heads and queries: no [T, T] mask is built.
    assert len(masks) == 2 and all(m.shape == (B, 1, 1, L * k) and m.dtype == torch.float32 for m in masks)
    # The same forward pass with every block's attention computed the plain way.
    x = model.embed_state(probs, idx, t).reshape(B, L * k, -1)
    rope = rotary_tables(torch.arange(L).repeat_interleave(k), 8, model.cfg.rope_theta)
    logp = log_probs(probs).reshape(B, L * k)
    for i, block in enumerate(model.blocks):
        bias = model.key_bias_scale[i] * logp
        ref = _reference_attention(block.attn, block.norm1(x), rope, bias)
        assert torch.allclose(block.attn(block.norm1(x), rope, bias), ref, atol=1e-5)
        x = x + ref
        x = x + block.mlp(block.norm2(x))
    ref_out = model.head(model.out_norm(model.readout(model.norm(x).view(B, L, k, -1), log_probs(probs))))
    assert torch.allclose(out, ref_out, atol=1e-5)
    for block in model.blocks:  # the earlier formulation: the bias folded into a padded head dimension
        block.attn.fold_key_bias = True
    masks.clear()
    assert torch.allclose(model(probs, idx, t), out, atol=1e-5) and all(m is None for m in masks)


def test_denoiser_serves_every_k_is_permutation_invariant_and_bidirectional():
    _, model = setup()
    model.eval()
    assert model.num_params() - model.num_params(non_embedding=True) == V * 32
    with pytest.raises(ValueError):
        SDDDenoiser(tiny_cfg(causal=True))
    for k in (1, 3, 8):
        probs, idx = clean_state(torch.randint(0, V, (2, 5)), k, V, EPS, gen())
        out = model(probs, idx, torch.rand(2))
        assert out.shape == (2, 5, V)
    perm = torch.randperm(8)
    t = torch.rand(2)
    assert torch.allclose(model(probs[..., perm], idx[..., perm], t), model(probs, idx, t), atol=1e-5)
    other = idx.clone()
    other[:, -1, 0] = (other[:, -1, 0] + 1) % V
    assert not torch.allclose(model(probs, other, t)[:, 0], model(probs, idx, t)[:, 0], atol=1e-6)
    loss = model(probs, idx, t).logsumexp(-1).sum()
    loss.backward()
    assert model.key_bias_scale.grad.abs().sum() > 0 and model.readout_bias_scale.grad is not None


# ------------------------------------------------------------------ the sampler
class Scripted(nn.Module):
    """A fake denoiser: prefers `script[l]` at position l, and gives banned special tokens even higher logits."""

    def __init__(self, script: list[int]) -> None:
        super().__init__()
        self.cfg = tiny_cfg()
        self.w = nn.Parameter(torch.zeros(()))
        self.script = torch.tensor(script)

    def forward(self, probs, idx, t):
        B, L, _ = idx.shape
        logits = torch.zeros(B, L, V) + self.w
        logits[:, torch.arange(L), self.script[:L]] = 10.0
        logits[..., [PAD_ID, BOS_ID, MASK_ID, UNK_ID]] = 50.0
        return logits


def decode(row: list[int]) -> list[int]:
    return [t for t in row if t not in (PAD_ID, BOS_ID, EOS_ID, MASK_ID, UNK_ID, IGNORE_ID)]


def test_sampler_returns_valid_deterministic_ids_and_keeps_the_prompt():
    obj, model = setup({"fixed_k": 4, "sampling_steps": 6})
    prompt = torch.tensor([7, 8, 9])
    a = obj.sample(model, 3, 10, gen(4), prompt=prompt)
    b = obj.sample(model, 3, 10, gen(4), prompt=prompt)
    assert torch.equal(a, b) and a.shape == (3, 10) and a.dtype == torch.long
    assert (a[:, :3] == prompt).all() and ((a >= 0) & (a < V)).all()
    for bad in (PAD_ID, BOS_ID, MASK_ID, UNK_ID):
        assert not (a == bad).any()
    for kw in ({"temperature": 0.0}, {"top_p": 0.5, "steps": 3}):
        assert obj.sample(model, 2, 7, gen(4), **kw).shape == (2, 7)
    lin = SDDObjective({"fixed_k": 2, "temperature_schedule": "linear", "candidate_sampling": "gumbel"})
    assert lin.sample(model, 2, 7, gen(4), steps=4).shape == (2, 7)


def test_sampler_never_emits_specials_and_stops_at_eos():
    obj = SDDObjective({"fixed_k": 3, "sampling_steps": 4})
    script = [10, 11, 12, 13, EOS_ID] + [IGNORE_ID] * 7
    out = obj.sample(Scripted(script), 2, 12, gen(0))
    assert out[0].tolist() == script
    assert len(decode(out[0].tolist())) == 4 < 12  # a shorter document
    # Tokens after the first generated <eos> become <ignore>, whatever the model says there.
    out = obj.sample(Scripted([10, EOS_ID, 12, 13, 14, 15]), 1, 6, gen(0))
    assert out[0].tolist() == [10, EOS_ID] + [IGNORE_ID] * 4


class Copier(Spy):
    """Predicts each position's top candidate: right wherever the truth survived, wrong wherever it was swapped.

    Its hidden state is those logits and its head the identity (the lean loss path applies the head)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.head = nn.Linear(V, V, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(V))

    def forward(self, probs, idx, t, return_hidden=False):
        return 50.0 * F.one_hot(idx[..., 0], V).float()


def test_accuracy_is_on_corrupted_positions_so_copying_scores_zero():
    obj, model = setup()
    tokens = torch.randint(6, V, (8, 12))
    stats = obj.eval_stats(Copier(model), {"tokens": tokens}, gen(3))
    assert stats["acc_count"] > 0 and stats["correct"] == 0
    assert stats["all_correct"] == stats["all_count"] - stats["acc_count"]  # every uncorrupted position copied
    _, metrics = obj.loss(Copier(model), {"tokens": tokens}, gen(3))
    assert metrics["accuracy"] == 0 and 0 < metrics["all_accuracy"] < 1


class IgnoreSayer(Copier):
    """Predicts <ignore> everywhere: right on every padding target, wrong on every text position."""

    def forward(self, probs, idx, t, return_hidden=False):
        self.seen = (probs, idx, t)
        return 50.0 * F.one_hot(torch.full(idx.shape[:-1], IGNORE_ID), V).float()


def test_accuracy_leaves_ignore_padding_out_like_diffusion():
    """`accuracy` counts corrupted text positions only; the <ignore> padding after <eos> (which the loss still
    scores) has its own `ignore_accuracy`, so a model that predicts padding everywhere gets accuracy 0."""
    obj, model = setup()
    tokens = torch.randint(6, V, (8, 12))
    tokens[:, 7:] = IGNORE_ID
    sayer = IgnoreSayer(model)
    stats = obj.eval_stats(sayer, {"tokens": tokens}, gen(4))
    _, idx, _ = sayer.seen
    text_corrupted = (idx[..., 0] != tokens) & (tokens != IGNORE_ID)
    assert stats["acc_count"] == text_corrupted.sum().item() > 0 and stats["correct"] == 0
    assert stats["ignore_correct"] == stats["ignore_count"] == 8 * 5
    assert stats["count"] == 8 * 12  # the loss still scores the padding
    _, metrics = obj.loss(sayer, {"tokens": tokens}, gen(4))
    assert metrics["accuracy"] == 0 and metrics["ignore_accuracy"] == 1


class Recorder(nn.Module):
    """Wraps a denoiser and records every state it is given and every logits tensor it returns."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.cfg, self.calls = model, model.cfg, []

    def forward(self, probs, idx, t):
        logits = self.model(probs, idx, t)
        self.calls.append((probs.clone(), idx.clone(), t.clone(), logits.detach().clone()))
        return logits


@pytest.mark.parametrize("renoise", [True, False])
def test_sampler_renoise_option_and_the_origin_rule(renoise):
    """renoise=false (the origin's rule): the next input is exactly the previous step's top-k sparse prediction
    with its probabilities, at the next time; renoise=true re-noises it with the forward process (candidates are
    swapped and probabilities flattened toward 1/V, so the input differs)."""
    obj, model = setup({"fixed_k": 3, "sampling_steps": 5, "renoise": renoise})
    rec = Recorder(model)
    obj.sample(rec, 2, 8, gen(1))
    assert len(rec.calls) == 5
    for (_, _, _, logits), (probs, idx, t, _) in zip(rec.calls, rec.calls[1:]):
        logits = logits.float().clone()
        for token in (PAD_ID, BOS_ID, MASK_ID, UNK_ID):
            logits[..., token] = -math.inf
        p = logits.softmax(-1)
        top = p.topk(3, dim=-1)
        same = torch.equal(idx, top.indices) and torch.allclose(probs, top.values, atol=1e-6)
        assert same != renoise
        assert 0 < t[0] < 1
    # The origin's rule with topk candidates draws no random number after the uniform start (deterministic).
    g, start = gen(1), gen(1)
    obj.sample(model, 2, 8, g)
    uniform_state((2, 8, 3), V, start, torch.device("cpu"))
    assert torch.equal(g.get_state(), start.get_state()) != renoise
    assert SDDConfig().renoise is True
