"""Backbone invariants: causality, rotary positions, the key bias, the KV cache, hidden states, preset sizes."""

import math

import pytest
import torch
import torch.nn.functional as F

from lmcore.errors import ConfigError
from lmcore.models import PRESETS, KVCache, ModelConfig, Transformer, resolve_model_config
from lmcore.models.transformer import fold_key_bias


def tiny(**kw) -> ModelConfig:
    return ModelConfig(**{"d_model": 32, "n_heads": 4, "n_layers": 2, "d_ff": 64, "vocab_size": 50, **kw})


def test_causal_model_ignores_future_tokens():
    torch.manual_seed(0)
    model = Transformer(tiny(causal=True)).eval()
    x = torch.randint(0, 50, (2, 12))
    y = x.clone()
    y[:, 8:] = (y[:, 8:] + 1) % 50
    a, b = model(x), model(y)
    assert torch.allclose(a[:, :8], b[:, :8], atol=1e-6)
    assert not torch.allclose(a[:, 8:], b[:, 8:], atol=1e-4)


def test_bidirectional_model_sees_future_tokens():
    torch.manual_seed(0)
    model = Transformer(tiny(causal=False)).eval()
    x = torch.randint(0, 50, (1, 10))
    y = x.clone()
    y[0, -1] = (y[0, -1] + 1) % 50
    assert not torch.allclose(model(x)[:, 0], model(y)[:, 0], atol=1e-5)


def test_rotary_makes_attention_position_aware_but_shift_invariant():
    torch.manual_seed(0)
    model = Transformer(tiny(causal=False)).eval()
    x = torch.randint(0, 50, (1, 6))
    base = model(x)
    shifted = model(x, positions=torch.arange(6) + 7)  # relative positions unchanged → same outputs
    assert torch.allclose(base, shifted, atol=1e-4)
    permuted = model(x, positions=torch.tensor([0, 2, 1, 3, 4, 5]))
    assert not torch.allclose(base, permuted, atol=1e-4)


def test_folded_key_bias_matches_explicit_additive_mask():
    torch.manual_seed(0)
    B, H, T, D = 2, 3, 7, 16
    q, k, v = (torch.randn(B, H, T, D) for _ in range(3))
    bias = torch.randn(B, T) * 3
    scores = q @ k.transpose(-1, -2) / math.sqrt(D) + bias[:, None, None, :]
    ref = scores.softmax(-1) @ v  # attention written out, the bias added to every query's scores of key j
    q2, k2, v2 = fold_key_bias(q, k, v, bias)
    out = F.scaled_dot_product_attention(q2, k2, v2, scale=1 / math.sqrt(D))[..., :D]
    assert q2.shape[-1] % 8 == 0
    assert torch.allclose(out, ref, atol=1e-5)


def test_key_bias_mask_equals_the_folded_reference_in_every_layer():
    torch.manual_seed(0)
    model = Transformer(tiny(causal=False)).eval()
    x = torch.randint(0, 50, (2, 11))
    bias = torch.randn(2, 11) * 4
    masked = model(x, key_bias=bias)
    for block in model.blocks:
        block.attn.fold_key_bias = True
    folded = model(x, key_bias=bias)
    assert torch.allclose(masked, folded, atol=1e-5)
    assert not torch.allclose(masked, model(x), atol=1e-3)  # the bias matters


def test_kv_cache_decoding_equals_full_forward():
    torch.manual_seed(0)
    model = Transformer(tiny(causal=True)).eval()
    x = torch.randint(0, 50, (3, 9))
    full = model(x)
    cache = KVCache(max_len=9)
    steps = [model(x[:, :4], cache=cache)[:, -1]]
    buffer = cache.keys[0]
    for i in range(4, 9):
        steps.append(model(x[:, i : i + 1], cache=cache)[:, -1])
    assert torch.allclose(torch.stack(steps, 1), full[:, 3:], atol=1e-5)
    assert cache.keys[0] is buffer and buffer.shape[2] == 9 and cache.length() == 9  # written in place
    with pytest.raises(ValueError, match="exceed max_len=9"):
        model(x[:, :1], cache=cache)
    prefilled = KVCache(max_len=9)
    model(x[:, :4], cache=prefilled)
    with pytest.raises(ValueError, match="prefill"):  # two new tokens at once would need a causal mask
        model(x[:, 4:6], cache=prefilled)


def test_return_hidden_is_the_normed_state_the_head_reads():
    torch.manual_seed(0)
    model = Transformer(tiny()).eval()
    x = torch.randint(0, 50, (2, 6))
    hidden = model(x, return_hidden=True)
    assert hidden.shape == (2, 6, 32)
    assert torch.allclose(model.head(hidden), model(x), atol=1e-6)


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    a = Transformer(tiny())
    b = Transformer(tiny(gradient_checkpointing=True))
    b.load_state_dict(a.state_dict())
    x = torch.randint(0, 50, (2, 8))
    a(x).sum().backward()
    b(x).sum().backward()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-5)


def test_embeds_input_path_equals_token_path():
    torch.manual_seed(0)
    model = Transformer(tiny()).eval()
    x = torch.randint(0, 50, (2, 5))
    assert torch.allclose(model(x), model(embeds=model.embed(x)))


def test_preset_sizes_match_reference_table():
    counts = {}
    for name in PRESETS:
        cfg = resolve_model_config(name, vocab_size=32000)
        with torch.device("meta"):
            counts[name] = Transformer(cfg).num_params(non_embedding=True)
    assert PRESETS["small"] == dict(d_model=384, n_heads=6, n_layers=6, d_ff=1536)
    assert 10e6 < counts["small"] < 11e6  # + 12.3M embedding (tied) at a 32k vocabulary ≈ 23M
    assert 295e6 < counts["xl"] < 310e6  # the ~300M model
    assert counts["tiny"] < counts["small"] < counts["medium"] < counts["large"] < counts["xl"]


def test_model_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="unknown size 'huge'"):
        resolve_model_config("huge")
    with pytest.raises(ConfigError, match="not divisible"):
        ModelConfig(d_model=30, n_heads=4)
    bad = tmp_path / "m.yaml"
    bad.write_text("d_model: 64\nwidth: 3\n")
    with pytest.raises(ConfigError, match="unknown key"):
        resolve_model_config(str(bad))
    good = tmp_path / "g.json"
    good.write_text('{"d_model": 48, "n_heads": 4, "n_layers": 1, "d_ff": 96}')
    assert resolve_model_config(str(good)).d_model == 48
