"""The batch look-ahead: same batches as building them on demand, each built once, nothing ahead on CPU."""

from __future__ import annotations

import torch
from test_trainer import history, run, train_cfg

from lmcore.train import trainer as trainer_module
from lmcore.train.prefetch import BatchPrefetcher, next_micro


def batch_fn(step: int, micro: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + micro)
    return {"tokens": torch.randint(0, 100, (2, 8), generator=g)}


def test_next_micro_walks_the_accumulation_then_the_steps():
    assert next_micro(3, 0, 2) == (3, 1)
    assert next_micro(3, 1, 2) == (4, 0)
    assert next_micro(0, 0, 1) == (1, 0)


def test_prefetched_batches_equal_on_demand_ones_and_are_built_once():
    ahead = BatchPrefetcher(batch_fn, torch.device("cpu"), ahead=True)
    keys = [(0, 0), (0, 1), (1, 0), (1, 1)]
    for i, key in enumerate(keys):
        got = ahead.get(*key)
        assert torch.equal(got["tokens"], batch_fn(*key)["tokens"])
        if i + 1 < len(keys):
            ahead.prefetch(*keys[i + 1])
    assert ahead.loads == len(keys)  # every batch after the first came from the look-ahead


def test_a_stale_look_ahead_is_dropped_not_used():
    ahead = BatchPrefetcher(batch_fn, torch.device("cpu"), ahead=True)
    ahead.prefetch(5, 0)
    got = ahead.get(2, 1)  # e.g. a resumed run asking for another step
    assert torch.equal(got["tokens"], batch_fn(2, 1)["tokens"])
    assert ahead.loads == 2 and ahead._next is None


def test_cpu_default_builds_nothing_ahead():
    lazy = BatchPrefetcher(batch_fn, torch.device("cpu"))
    assert not lazy.ahead and lazy.stream is None
    lazy.prefetch(0, 1)
    assert lazy.loads == 0
    assert torch.equal(lazy.get(0, 1)["tokens"], batch_fn(0, 1)["tokens"])
    assert lazy.loads == 1


def test_trainer_with_the_look_ahead_on_trains_and_resumes_exactly_as_without(corpus, tmp_path, monkeypatch):
    """The look-ahead forced on (as on CUDA) with 2 micro-steps: same losses as without, and exact resume."""
    cfg = train_cfg(max_steps=6, checkpoint_every=3, eval_every=3, grad_accum_steps=2)
    run("diffusion", corpus, tmp_path / "plain", cfg)
    built: list[BatchPrefetcher] = []

    def forced(batch_fn, device):
        built.append(BatchPrefetcher(batch_fn, device, ahead=True))
        return built[-1]

    monkeypatch.setattr(trainer_module, "BatchPrefetcher", forced)
    run("diffusion", corpus, tmp_path / "ahead", cfg)
    run("diffusion", corpus, tmp_path / "part", train_cfg(max_steps=6, stop_at_step=3, grad_accum_steps=2))
    run("diffusion", corpus, tmp_path / "part", cfg, resume=str(tmp_path / "part" / "latest.pt"))
    plain, ahead = history(tmp_path / "plain" / "history.jsonl"), history(tmp_path / "ahead" / "history.jsonl")
    part = history(tmp_path / "part" / "history.jsonl")
    assert sorted(plain) == sorted(ahead) == sorted(part) == list(range(1, 7))
    for step in plain:
        assert ahead[step]["train/loss"] == plain[step]["train/loss"] == part[step]["train/loss"], step
    assert ahead[6]["val/loss"] == plain[6]["val/loss"] == part[6]["val/loss"]
    # 12 micro-batches, each built once; the look-ahead past the last step is the only extra build.
    assert built[0].loads == 6 * 2 + 1
