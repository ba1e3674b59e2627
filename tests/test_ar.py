"""AR objective: the loss is next-token cross-entropy, masks are honoured, sampling returns valid sequences."""

import math

import torch
import torch.nn.functional as F

from lmcore.models import ModelConfig
from lmcore.objectives import get_objective
from lmcore.objectives.sampling import filter_top_p, sample_from_logits
from lmcore.tokenizer import EOS_ID, PAD_ID

V = 40


def setup():
    torch.manual_seed(0)
    obj = get_objective("ar")
    model = obj.build_model(ModelConfig(d_model=32, n_heads=4, n_layers=2, d_ff=64, vocab_size=V))
    return obj, model


def test_loss_is_mean_next_token_cross_entropy():
    obj, model = setup()
    tokens = torch.randint(6, V, (3, 11))
    loss, metrics = obj.loss(model, {"tokens": tokens}, torch.Generator())
    logits = model(tokens[:, :-1])
    ref = F.cross_entropy(logits.reshape(-1, V), tokens[:, 1:].reshape(-1))
    assert torch.allclose(loss, ref, atol=1e-6)
    acc = (logits.argmax(-1) == tokens[:, 1:]).float().mean().item()
    assert math.isclose(metrics["accuracy"], acc, abs_tol=1e-6)


def test_loss_mask_restricts_scored_positions():
    obj, model = setup()
    tokens = torch.randint(6, V, (2, 9))
    mask = torch.zeros_like(tokens)
    mask[:, 5:] = 1  # response = positions 5..8 → targets 5..8 are scored (inputs 4..7)
    loss, _ = obj.loss(model, {"tokens": tokens, "loss_mask": mask}, torch.Generator())
    logits = model(tokens[:, :-1])
    ref = F.cross_entropy(logits[:, 4:].reshape(-1, V), tokens[:, 5:].reshape(-1))
    assert torch.allclose(loss, ref, atol=1e-6)
    stats = obj.eval_stats(model, {"tokens": tokens, "loss_mask": mask}, torch.Generator())
    assert stats["count"] == 8
    assert math.isclose(stats["loss_sum"] / stats["count"], ref.item(), rel_tol=1e-5)


def test_uniform_model_has_loss_log_v():
    obj, model = setup()
    for p in model.parameters():
        torch.nn.init.zeros_(p)
    loss, _ = obj.loss(model, {"tokens": torch.randint(6, V, (2, 7))}, torch.Generator())
    assert math.isclose(loss.item(), math.log(V), rel_tol=1e-6)


def test_samples_are_valid_and_padded_after_eos():
    obj, model = setup()
    out = obj.sample(model, 6, 20, torch.Generator().manual_seed(1))
    assert out.shape == (6, 20) and out.dtype == torch.long
    assert ((out >= 0) & (out < V)).all()
    for row in out.tolist():
        if EOS_ID in row:
            assert all(t == PAD_ID for t in row[row.index(EOS_ID) + 1 :])


def test_sampling_is_deterministic_given_generator_and_prompt_is_kept():
    obj, model = setup()
    prompt = torch.tensor([7, 8, 9])
    a = obj.sample(model, 2, 10, torch.Generator().manual_seed(3), prompt=prompt)
    b = obj.sample(model, 2, 10, torch.Generator().manual_seed(3), prompt=prompt)
    assert torch.equal(a, b)
    assert a.shape == (2, 10) and (a[:, :3] == prompt).all()


def test_greedy_sampling_follows_argmax_continuation():
    obj, model = setup()
    out = obj.sample(model, 1, 6, torch.Generator(), prompt=torch.tensor([10, 11]), temperature=0)
    seq = [10, 11]
    for _ in range(4):
        nxt = model(torch.tensor([seq]))[0, -1].argmax().item()
        seq.append(nxt)
        if nxt == EOS_ID:
            break
    assert out[0, : len(seq)].tolist() == seq


def test_top_p_keeps_the_nucleus_only():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = filter_top_p(probs, 0.7)
    assert torch.allclose(kept, torch.tensor([[0.5 / 0.8, 0.3 / 0.8, 0.0, 0.0]], dtype=kept.dtype))
    assert torch.equal(filter_top_p(probs, 1e-9) > 0, torch.tensor([[True, False, False, False]]))
    draws = sample_from_logits(probs.log().expand(2000, 4), torch.Generator().manual_seed(0), top_p=0.7)
    assert set(draws.tolist()) == {0, 1}
