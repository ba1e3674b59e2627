"""Instruction fine-tuning end to end on tiny models: it learns (beats its pretrained self on exact match),
checkpoints record their parent, resume is exact, and mismatched inputs are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmcore.config import EvaluateInstructConfig, TrainConfig
from lmcore.data.instruct_prepare import prepare_instructions, resolve_tokenizer
from lmcore.data.instruct_sources import iter_examples
from lmcore.errors import CheckpointError
from lmcore.eval.instruct import compare
from lmcore.models import ModelConfig
from lmcore.objectives import get_objective
from lmcore.train.run import Outputs, finetune, pretrain

TINY = {"d_model": 64, "n_heads": 4, "n_layers": 2, "d_ff": 128}


def cfg(**kw) -> TrainConfig:
    base = dict(
        max_steps=10,
        batch_size=16,
        seq_len=64,
        learning_rate=3e-3,
        warmup_steps=2,
        eval_every=5,
        eval_batches=1,
        log_every=5,
        checkpoint_every=5,
        num_samples=0,
        wandb=False,
        device="cpu",
    )
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def pretrained(corpus, tmp_path_factory):
    """arch → a tiny checkpoint briefly pretrained on the builtin stories corpus (made on first use)."""
    root, made = tmp_path_factory.mktemp("pretrained"), {}

    def get(arch: str) -> Path:
        if arch not in made:
            section = {"fixed_k": 2} if arch == "sdd" else {}
            pretrain(get_objective(arch, section), ModelConfig(**TINY), cfg(), corpus, Outputs(root / arch), "pre")
            made[arch] = root / arch / "latest.pt"
        return made[arch]

    return get


@pytest.fixture(scope="module")
def count_data(corpus, tmp_path_factory) -> Path:
    """builtin:instructions, `count` family only (one-token answers), tokenised with the corpus tokenizer."""
    out = tmp_path_factory.mktemp("instruct") / "count"
    tok, facts = resolve_tokenizer(corpus, None)
    prepare_instructions(
        iter_examples("builtin:instructions", families="count", seed=3),
        tok,
        out,
        max_seq_len=84,
        num_examples=600,
        val_fraction=0.05,
        test_fraction=0.05,
        seed=3,
        facts=facts,
    )
    return out


def _beats_pretrained(arch: str, steps: int, lr: float, pretrained, count_data: Path, tmp_path: Path) -> None:
    parent = pretrained(arch)
    outputs = Outputs(tmp_path / "ft", tmp_path / "metrics.json")
    finetune(
        parent, count_data, cfg(max_steps=steps, eval_every=steps, checkpoint_every=steps, learning_rate=lr), outputs
    )
    ckpt = torch.load(tmp_path / "ft" / "latest.pt", weights_only=False)
    assert ckpt["architecture"] == arch and ckpt["parent"]["path"] == str(parent)
    assert ckpt["parent"]["global_step"] == 10 and ckpt["global_step"] == steps
    ev = EvaluateInstructConfig(num_examples=30, steps=8, device="cpu", wandb=False)
    results, responses = compare([tmp_path / "ft" / "latest.pt"], count_data, ev)  # parent from the checkpoint
    assert results[arch]["pretrained"]["checkpoint"] == str(parent)
    before = results[arch]["pretrained"]["exact_match"]["count"]
    after = results[arch]["finetuned"]["exact_match"]["count"]
    assert after > before, (before, after, [r.text for r in responses[f"{arch}/finetuned"][:5]])
    assert after >= 0.2  # better than never answering: the answers are 2..6
    assert results[arch]["finetuned"]["format"]["compliant"] >= 0.9
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    facts = json.loads((tmp_path / "metrics_facts.json").read_text())
    assert facts["parent_checkpoint"] == str(parent) and "loss" in metrics["val"]


def test_finetuned_ar_beats_its_pretrained_self(pretrained, count_data, tmp_path):
    _beats_pretrained("ar", 60, 3e-3, pretrained, count_data, tmp_path)


# Diffusion and SDD need more steps than AR to learn where the response ends.
@pytest.mark.parametrize("arch,steps", [("diffusion", 150), ("sdd", 150)])
def test_finetuned_diffusion_and_sdd_beat_their_pretrained_selves(arch, steps, pretrained, count_data, tmp_path):
    _beats_pretrained(arch, steps, 5e-3, pretrained, count_data, tmp_path)


def _history(path: Path) -> dict[int, float]:
    out = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if "train/loss" in rec.get("metrics", {}):
            out[rec["step"]] = rec["metrics"]["train/loss"]
    return out


@pytest.mark.parametrize("arch", ["ar", "sdd"])
def test_resumed_finetuning_is_exact(arch, pretrained, count_data, tmp_path):
    parent = pretrained(arch)
    run = dict(max_steps=8, log_every=1, eval_every=4, checkpoint_every=4, batch_size=4)
    finetune(parent, count_data, cfg(**run), Outputs(tmp_path / "full"))
    finetune(parent, count_data, cfg(**run, stop_at_step=4), Outputs(tmp_path / "part"))
    finetune(parent, count_data, cfg(**run), Outputs(tmp_path / "part"), resume_from=tmp_path / "part" / "latest.pt")
    full, part = _history(tmp_path / "full" / "history.jsonl"), _history(tmp_path / "part" / "history.jsonl")
    assert sorted(full) == sorted(part) == list(range(1, 9))
    assert all(full[s] == part[s] for s in full), (full, part)
    ckpt = torch.load(tmp_path / "part" / "latest.pt", weights_only=False)
    assert ckpt["global_step"] == 8 and ckpt["parent"]["path"] == str(parent)
    if arch == "sdd":  # the k the model was pretrained with, not the curriculum's first stage
        assert ckpt["objective_state"]["k"] == 2


def test_refuses_mismatched_inputs(pretrained, count_data, other_corpus, tmp_path):
    parent = pretrained("ar")
    with pytest.raises(CheckpointError, match="contradicts"):
        finetune(parent, count_data, cfg(), Outputs(tmp_path / "a"), architecture="diffusion")
    other = tmp_path / "other"
    tok, facts = resolve_tokenizer(other_corpus, None)
    prepare_instructions(
        iter_examples("builtin:instructions", families="count"),
        tok,
        other,
        max_seq_len=84,
        num_examples=20,
        facts=facts,
    )
    with pytest.raises(CheckpointError, match="tokenizer"):
        finetune(parent, other, cfg(), Outputs(tmp_path / "b"))
    with pytest.raises(CheckpointError, match="tokenizer"):  # prep checks against the checkpoint too
        resolve_tokenizer(other_corpus, parent)
    finetune(parent, count_data, cfg(max_steps=2), Outputs(tmp_path / "c"))
    other_parent = pretrained("diffusion")
    with pytest.raises(CheckpointError):  # a fine-tuning run of another parent (and architecture)
        finetune(
            other_parent,
            count_data,
            cfg(max_steps=4),
            Outputs(tmp_path / "d"),
            resume_from=tmp_path / "c" / "latest.pt",
        )
