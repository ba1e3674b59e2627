"""LR schedule, MFU formula, atomic checkpoints and their error messages, tracker history trimming."""

import json
import math

import pytest
import torch

from lmcore.config import TrainConfig
from lmcore.errors import CheckpointError
from lmcore.models import ModelConfig
from lmcore.train.checkpoint import FORMAT_VERSION, atomic_torch_save, load_checkpoint, migrate
from lmcore.train.optim import lr_at
from lmcore.train.perf import flops_per_token
from lmcore.train.tracking import DVCLiveTracker, JsonlTracker, nest


def test_lr_warmup_then_cosine_to_floor():
    cfg = TrainConfig(max_steps=110, warmup_steps=10, learning_rate=1.0, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.55)  # halfway through the cosine
    assert lr_at(110, cfg) == pytest.approx(0.1)
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(10, 110))


def test_flops_per_token_formula():
    cfg = ModelConfig(d_model=768, n_heads=12, n_layers=12, d_ff=3072, vocab_size=50304)
    n = 12 * 12 * 768 * 768 + 50304 * 768
    assert flops_per_token(cfg, 1024) == pytest.approx(6 * n + 12 * 12 * 768 * 1024)
    blocks = 12 * 12 * 768 * 768
    assert flops_per_token(cfg, 1024, 4) == pytest.approx(6 * (4 * blocks + 50304 * 768) + 12 * 12 * 768 * 1024 * 16)


def test_atomic_save_and_load(tmp_path):
    path = tmp_path / "ck" / "latest.pt"
    atomic_torch_save({"global_step": 3, "model_state_dict": {}, "model_config": {"causal": True}}, path)
    assert load_checkpoint(path)["global_step"] == 3
    assert load_checkpoint(path.parent)["global_step"] == 3  # a folder means its latest.pt
    assert [p.name for p in path.parent.iterdir()] == ["latest.pt"]  # no temp file left behind


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "latest.pt"
    atomic_torch_save({"global_step": 1, "model_state_dict": {}, "model_config": {}}, path)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_torch_save({"global_step": 2, "x": Boom()}, path)
    assert load_checkpoint(path)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a readable checkpoint"),
        (b"garbage" * 10, "not a readable checkpoint"),
    ],
)
def test_corrupt_checkpoint_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "latest.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_truncated_and_foreign_checkpoints(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"global_step": 1, "model_state_dict": {"w": torch.zeros(1000)}, "model_config": {}}, good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.pt: not a readable checkpoint"):
        load_checkpoint(cut)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state": 1}, foreign)
    with pytest.raises(CheckpointError, match="missing global_step"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_old_checkpoints_are_migrated_and_newer_ones_refused():
    def infer_architecture(ckpt: dict) -> str:  # what a format-0 file (no version field) migrates to
        return migrate({"global_step": 0, "model_state_dict": {}, **ckpt}, "x")["architecture"]

    assert infer_architecture({"architecture": "sdd"}) == "sdd"
    assert infer_architecture({"model_config": {"causal": True}}) == "ar"
    assert infer_architecture({"model_config": {"causal": False}}) == "diffusion"
    v1 = migrate(
        {"format_version": 1, "architecture": "ar", "parent_checkpoint": "pre/best.pt", "model_config": {}}, "x"
    )
    assert (
        v1["format_version"] == FORMAT_VERSION and v1["kind"] == "finetune" and v1["parent"] == {"path": "pre/best.pt"}
    )
    assert migrate({"format_version": 1, "architecture": "ar", "model_config": {}}, "x")["kind"] == "pretrain"
    v2 = migrate(
        {
            "format_version": 2,
            "architecture": "sdd",
            "model_config": {},
            "kind": "pretrain",
            "objective_config": {"eps": 0.02, "num_steps": 8, "fixed_k": 2},
            "log_buffer": {"train/all_acc": [0.5], "train/loss": [1.0]},
        },
        "x",
    )
    assert v2["objective_config"] == {"candidate_prob": 0.02, "sampling_steps": 8, "fixed_k": 2}
    assert v2["log_buffer"] == {"train/all_accuracy": [0.5], "train/loss": [1.0]}
    assert migrate(
        {
            "format_version": 2,
            "architecture": "diffusion",
            "model_config": {},
            "kind": "pretrain",
            "objective_config": {"eps": 0.001},
        },
        "x",
    )["objective_config"] == {"t_min": 0.001}
    with pytest.raises(CheckpointError, match="newer than this lmcore reads"):
        migrate({"format_version": FORMAT_VERSION + 1}, "x")


def test_history_is_trimmed_to_the_resumed_step(tmp_path):
    path = tmp_path / "history.jsonl"
    t = JsonlTracker(path)
    for s in range(1, 8):
        t.log({"train/loss": float(s)}, s)
    JsonlTracker(path, resume_step=4)
    assert [json.loads(ln)["step"] for ln in path.read_text().splitlines()] == [1, 2, 3, 4]


def test_dvclive_curves_are_trimmed_on_resume(tmp_path):
    t = DVCLiveTracker(tmp_path / "live")
    for s in range(1, 6):
        t.log({"train/loss": 1.0 / s}, s)
    t.close()
    t = DVCLiveTracker(tmp_path / "live", resume_step=3)
    t.log({"train/loss": 0.0}, 4)
    t.close()
    lines = (tmp_path / "live/plots/metrics/train/loss.tsv").read_text().splitlines()
    rows = [dict(zip(lines[0].split("\t"), ln.split("\t"))) for ln in lines[1:]]
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    assert math.isclose(float(rows[-1]["loss"]), 0.0)


def test_dvclive_resumes_after_a_kill_tore_its_summary(tmp_path):
    t = DVCLiveTracker(tmp_path / "live")
    t.log({"train/loss": 1.0}, 1)
    t.close()
    (tmp_path / "live/metrics.json").write_text("")  # SIGKILL while DVCLive rewrote it in place
    t = DVCLiveTracker(tmp_path / "live", resume_step=1)
    t.log({"train/loss": 0.5}, 2)
    t.close()
    assert json.loads((tmp_path / "live/metrics.json").read_text())["train"]["loss"] == 0.5


def test_nest_builds_dvc_metrics_shape():
    assert nest({"train/loss": 1, "val/loss": 2, "step": 3}) == {"train": {"loss": 1}, "val": {"loss": 2}, "step": 3}
