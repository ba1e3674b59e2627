"""AR decoding: the compiled fixed-shape step decodes what the eager cache-prefix step does, with one graph."""

from __future__ import annotations

import os

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from lmcore.models import ModelConfig
from lmcore.objectives import decode, get_objective
from lmcore.objectives.decode import decode_step

CFG = ModelConfig(d_model=32, n_heads=4, n_layers=2, d_ff=64, vocab_size=64, max_seq_len=40, causal=True)


@pytest.fixture
def counter(monkeypatch):
    """Counts compiled graphs; inductor unless LMCORE_TEST_COMPILE_BACKEND names another (e.g. aot_eager)."""
    backend = CompileCounterWithBackend(os.environ.get("LMCORE_TEST_COMPILE_BACKEND", "inductor"))
    monkeypatch.setattr(decode, "BACKEND", backend)
    torch._dynamo.reset()
    return backend


def test_compiled_decode_equals_eager_decode_with_one_graph(counter):
    torch.manual_seed(0)
    model = get_objective("ar").build_model(CFG).eval()
    eager_ar, compiled_ar = get_objective("ar"), get_objective("ar", {"compile_decode": True})
    prompt = torch.randint(6, CFG.vocab_size, (3, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        # Logits step by step: same prompt, same tokens fed to both.
        eager, compiled = (decode_step(model, 3, 30, torch.device("cpu"), c) for c in (False, True))
        a, b = eager.prefill(prompt), compiled.prefill(prompt)
        for pos in range(5, 29):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
            nxt = a.argmax(-1)[:, None]
            a, b = eager(nxt, pos), compiled(nxt, pos)
        assert counter.frame_count == 1  # one graph for every token
        for temperature in (0.0, 1.0):  # greedy, and sampling from the same generator
            outs = [
                ar.sample(model, 3, 30, torch.Generator().manual_seed(2), prompt=prompt, temperature=temperature)
                for ar in (eager_ar, compiled_ar)
            ]
            assert torch.equal(outs[0], outs[1]), temperature
    # The second and third generations of the same shape reuse the compiled step: still one graph.
    assert counter.frame_count == 1


def test_fixed_shape_cache_masks_positions_not_yet_written():
    """Garbage left in the buffer past the current position (a previous generation) does not leak in."""
    torch.manual_seed(0)
    model = get_objective("ar").build_model(CFG).eval()
    prompt = torch.randint(6, CFG.vocab_size, (2, 4), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = decode_step(model, 2, 12, torch.device("cpu"), False)
        expected = ref.prefill(prompt)
        step = decode.DecodeStep(model, 2, 12, torch.device("cpu"), compiled=False)
        step.prefill(prompt)
        for layer in step.cache.keys:
            step.cache.keys[layer][:, :, 4:] = 1e4
            step.cache.values[layer][:, :, 4:] = -1e4
        step.cache.decode_at(step.position)
        step.position.fill_(4)
        got = step._forward(expected.argmax(-1)[:, None])
        torch.testing.assert_close(got, ref(expected.argmax(-1)[:, None], 4), rtol=1e-4, atol=1e-5)
