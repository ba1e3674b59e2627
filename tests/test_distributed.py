"""torchrun with 2 CPU processes (gloo) trains exactly what 1 process does with the same global batch; resume."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmcore.config import TrainConfig, load_params
from lmcore.objectives import get_objective
from lmcore.train.distributed import _fqn_to_ids, _ids_to_fqn, current, gradient_sync
from lmcore.train.run import Outputs, corpus_batches, pretrain

ROOT = Path(__file__).resolve().parents[1]
TINY = {"d_model": 32, "n_heads": 4, "n_layers": 2, "d_ff": 64}
STEPS = 4


def flags(out: Path, model_file: Path, data: Path, **kw: object) -> list[str]:
    base = {
        "data_dir": data,
        "model_config": model_file,
        "max_steps": STEPS,
        "seq_len": 32,
        "learning_rate": 3e-3,
        "warmup_steps": 2,
        "eval_every": 2,
        "eval_batches": 2,
        "log_every": 1,
        "checkpoint_every": 2,
        "num_samples": 1,
        "device": "cpu",
        "checkpoint_dir": out,
        "metrics_file": out / "m.json",
        "plots_dir": out / "plots",
        **kw,
    }
    return [*(x for k, v in base.items() for x in (f"--{k}", str(v))), "--no_wandb"]


def torchrun(arch: str, *args: str) -> subprocess.CompletedProcess:
    """stages/train.py under torchrun: 2 local processes, standalone rendezvous, gloo on CPU."""
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "stages" / "train.py"),
        "--architecture",
        arch,
        *args,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def single(arch: str, out: Path, data: Path, **kw: object) -> None:
    """The reference: one process, in this interpreter."""
    from lmcore.models import ModelConfig

    cfg = TrainConfig(
        max_steps=STEPS,
        seq_len=32,
        learning_rate=3e-3,
        warmup_steps=2,
        eval_every=2,
        eval_batches=2,
        log_every=1,
        checkpoint_every=2,
        num_samples=1,
        device="cpu",
        wandb=False,
        **kw,
    )
    # The objective's section as stages/train.py reads it from params.yaml (e.g. ar.rows), so both runs agree.
    section = dataclasses.asdict(load_params(ROOT / "params.yaml").objective(arch))
    pretrain(
        get_objective(arch, section),
        ModelConfig(**TINY),
        cfg,
        data,
        Outputs(out, out / "m.json", out / "plots"),
        f"{arch}-single",
    )


def history(path: Path) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        out.setdefault(rec["step"], {}).update(rec.get("metrics", {}))
    return out


def assert_same_run(a: Path, b: Path) -> None:
    """Same logged losses at every step, same validation, same final weights (up to float summation order)."""
    ha, hb = history(a / "history.jsonl"), history(b / "history.jsonl")
    assert sorted(ha) == sorted(hb) == list(range(1, STEPS + 1))
    for step in ha:
        assert ha[step]["train/loss"] == pytest.approx(hb[step]["train/loss"], rel=1e-5), step
        assert ha[step]["train/grad_norm"] == pytest.approx(hb[step]["train/grad_norm"], rel=1e-4), step
    assert ha[STEPS]["val/loss"] == pytest.approx(hb[STEPS]["val/loss"], rel=1e-5)
    wa = torch.load(a / "latest.pt", weights_only=False)
    wb = torch.load(b / "latest.pt", weights_only=False)
    assert wa["global_step"] == wb["global_step"] == STEPS
    assert wa["model_state_dict"].keys() == wb["model_state_dict"].keys()
    for key, value in wa["model_state_dict"].items():
        torch.testing.assert_close(value, wb["model_state_dict"][key], rtol=1e-4, atol=1e-6)
    assert wa["optimizer_state_dict"]["param_groups"] == wb["optimizer_state_dict"]["param_groups"]


@pytest.mark.slow
def test_ddp_ar_matches_one_process_with_the_same_global_batch_and_resumes(corpus, tmp_path, model_file):
    """2 ranks × batch 4 ≡ 1 process × batch 8, including a stop at step 2 and a resume under DDP."""
    single("ar", tmp_path / "one", corpus, batch_size=8)
    out = tmp_path / "ddp"
    first = torchrun("ar", *flags(out, model_file, corpus, batch_size=4, stop_at_step=2))
    assert "2 × cpu (ddp)" in first.stdout and first.stdout.count("parameters on") == 1  # rank 0 prints
    assert torch.load(out / "latest.pt", weights_only=False)["global_step"] == 2
    torchrun("ar", *flags(out, model_file, corpus, batch_size=4), "--resume_from", str(out / "latest.pt"))
    assert_same_run(out, tmp_path / "one")
    assert not list(out.glob(".*tmp*"))  # no half-written checkpoint left by any rank


@pytest.mark.slow
def test_ddp_diffusion_matches_one_process_accumulating_the_same_shards(corpus, tmp_path, model_file):
    """Masked diffusion draws noise per shard: 2 ranks × batch 4 ≡ 1 process × batch 4 × 2 micro-steps."""
    single("diffusion", tmp_path / "one", corpus, batch_size=4, grad_accum_steps=2)
    torchrun("diffusion", *flags(tmp_path / "ddp", model_file, corpus, batch_size=4))
    assert_same_run(tmp_path / "ddp", tmp_path / "one")


@pytest.mark.slow
def test_fsdp_sdd_matches_one_process_and_saves_a_full_checkpoint(corpus, tmp_path, model_file):
    """FSDP2 (fully_shard) on gloo: same run as 1 process, checkpoint in the single-process format."""
    single("sdd", tmp_path / "one", corpus, batch_size=2, grad_accum_steps=4)
    # Per rank: batch 2 × 2 micro-steps (gradient sync skipped on the first); 2 ranks → 4 shards of 2 rows.
    torchrun("sdd", *flags(tmp_path / "fsdp", model_file, corpus, batch_size=2, grad_accum_steps=2, parallel="fsdp"))
    assert_same_run(tmp_path / "fsdp", tmp_path / "one")


def test_shards_cover_the_global_batch(corpus):
    """rank r, micro m gets shard m·W + r: the union over ranks and micro-steps is the 1-process batch."""
    cfg = TrainConfig(batch_size=2, seq_len=16, grad_accum_steps=2)
    whole = corpus_batches(get_objective("ar"), corpus, TrainConfig(batch_size=8, seq_len=16))[0](3, 0)["tokens"]
    parts = {
        (m, r): corpus_batches(get_objective("ar"), corpus, cfg, r, 2)[0](3, m)["tokens"]
        for m in range(2)
        for r in range(2)
    }
    ordered = torch.cat([parts[(m, r)] for m in range(2) for r in range(2)])
    assert torch.equal(ordered, whole)
    assert not torch.equal(parts[(0, 0)], parts[(0, 1)])


def test_optimizer_state_names_round_trip():
    """DCP's name-keyed optimizer state converts to torch.optim's id-keyed format and back."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    opt = torch.optim.AdamW(
        [
            {"params": [model[0].weight, model[1].weight]},
            {"params": [model[0].bias, model[1].bias], "weight_decay": 0.0},
        ]
    )
    model(torch.randn(2, 3)).sum().backward()
    opt.step()
    by_id = opt.state_dict()
    by_name = _ids_to_fqn(by_id, model, opt)
    assert by_name["param_groups"][1]["params"] == ["0.bias", "1.bias"]
    torch.testing.assert_close(by_name["state"]["1.weight"]["exp_avg"], by_id["state"][1]["exp_avg"])
    back = _fqn_to_ids(by_name)
    assert back["param_groups"] == by_id["param_groups"]
    assert back["state"].keys() == by_id["state"].keys()


def test_single_process_defaults():
    """Without torchrun: one process, rank 0, and gradient_sync is a plain context."""
    info = current()
    assert (info.rank, info.world_size, info.enabled, info.is_main) == (0, 1, False, True)
    with gradient_sync(torch.nn.Linear(2, 2), sync=False):
        pass
    with pytest.raises(Exception, match="parallel must be ddp|fsdp"):
        TrainConfig(parallel="tp")
