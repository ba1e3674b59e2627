"""SDD's k curriculum under torch.compile: one static graph per stage, compiled when the stage starts, never again."""

from __future__ import annotations

import torch
from torch._dynamo.testing import CompileCounter

from lmcore.models import ModelConfig
from lmcore.objectives import get_objective
from lmcore.train.compiling import compile_model, graphs_needed
from lmcore.train.trainer import step_generator

CFG = ModelConfig(d_model=32, n_heads=4, n_layers=2, d_ff=64, vocab_size=64, max_seq_len=16, causal=False)


def test_each_k_stage_is_compiled_once_with_static_shapes():
    torch._dynamo.reset()
    objective = get_objective("sdd", {"k_schedule": "1,2,4", "k_warmup_steps": 2})
    assert objective.compile_dynamic is False
    torch.manual_seed(0)
    model = objective.build_model(CFG)
    counter = CompileCounter()
    stages = len(set(objective.slots_schedule()[0]))
    compiled = compile_model(model, dynamic=objective.compile_dynamic, stages=stages, backend=counter)
    tokens = torch.randint(6, CFG.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    graphs_after_stage: list[int] = []
    for step in range(6):  # k = 1, 1, 2, 2, 4, 4
        objective.on_step(step)
        gen = step_generator(0, step, 0, torch.device("cpu"))
        loss, _ = objective.loss(compiled, {"tokens": tokens}, gen)
        eager, _ = objective.loss(model, {"tokens": tokens}, step_generator(0, step, 0, torch.device("cpu")))
        torch.testing.assert_close(loss, eager)  # the compiled forward computes what the eager one does
        loss.backward()
        if step % 2:
            graphs_after_stage.append(counter.frame_count)
    per_stage = graphs_after_stage[0]
    assert per_stage >= 1
    # A new k adds exactly the first stage's graphs once; the stage's second step reuses them (no recompile).
    assert graphs_after_stage == [per_stage, 2 * per_stage, 3 * per_stage]
    assert 3 * per_stage <= graphs_needed(stages)


def test_automatic_dynamic_would_trace_a_symbolic_length_instead():
    """The default the SDD objective opts out of: the second k re-traces with a symbolic L·k (dynamic shapes)."""
    torch._dynamo.reset()
    objective = get_objective("sdd", {"k_schedule": "1,2,4", "k_warmup_steps": 1})
    model = objective.build_model(CFG)
    graphs: list[torch.fx.GraphModule] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(gm)
        return gm.forward

    compiled = compile_model(model, dynamic=None, backend=backend)
    tokens = torch.randint(6, CFG.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for step in range(3):
            objective.on_step(step)
            objective.loss(compiled, {"tokens": tokens}, step_generator(0, step, 0, torch.device("cpu")))
    symbolic = [any(isinstance(n.meta.get("example_value"), torch.SymInt) for n in g.graph.nodes) for g in graphs]
    assert not symbolic[0] and any(symbolic[1:])
