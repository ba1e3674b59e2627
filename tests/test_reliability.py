"""Lose nothing: refused runs leave every earlier file byte-identical, one writer per run folder, NaN/inf stops
cleanly, corpus and checkpoint integrity, leftovers of killed writers, W&B that cannot stall a run.

The stage scripts run in subprocesses on tiny models. One finished run (4 steps) is made once per module and
copied into each test that needs an earlier run to protect.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lmcore.config import TrainConfig
from lmcore.data.integrity import scan_tokens
from lmcore.data.memmap import DTYPES, load_meta
from lmcore.errors import ConfigError, TrainingError
from lmcore.models import ModelConfig
from lmcore.objectives import get_objective
from lmcore.train.run import Outputs, pretrain
from lmcore.train.rundir import LOCK_FILE, remove_stale_temp

ROOT = Path(__file__).resolve().parents[1]
TINY = {"d_model": 32, "n_heads": 4, "n_layers": 2, "d_ff": 64}
STEPS = 4  # of the shared finished run; checkpoints at 2 and 4


def run_stage(
    script: str, *args: object, env: dict[str, str | None] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run stages/<script> to the end (W&B off unless `env` says otherwise)."""
    full_env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}  # None: unset
    return subprocess.run(
        [sys.executable, str(ROOT / "stages" / script), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=full_env,
        timeout=timeout,
    )


def train_args(corpus: Path, run: Path, model: Path, **flags: object) -> list[str]:
    """The shared tiny run's flags (outputs under `run`), with `flags` added or replaced (True: a bare flag)."""
    base: dict[str, object] = {
        "architecture": "ar",
        "data_dir": corpus,
        "model_config": model,
        "max_steps": STEPS,
        "batch_size": 4,
        "seq_len": 32,
        "log_every": 1,
        "eval_every": 2,
        "checkpoint_every": 2,
        "eval_batches": 1,
        "num_samples": 1,
        "warmup_steps": 1,
        "device": "cpu",
        "no_wandb": True,
        "checkpoint_dir": run / "ckpt",
        "metrics_file": run / "m.json",
        "plots_dir": run / "plots",
    }
    out: list[str] = []
    for key, value in {**base, **flags}.items():
        if value is True:
            out.append(f"--{key}")
        elif value is not None:
            out += [f"--{key}", str(value)]
    return out


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (checkpoints, history, lock, metrics JSON, DVCLive plots)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def one_error_line(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 2 with exactly one stderr line `error: ...` containing every fragment, and no traceback."""
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def history(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


@pytest.fixture(scope="module")
def finished(corpus: Path, model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A completed 4-step AR run: <dir>/ckpt (latest.pt, best.pt, history.jsonl), <dir>/m.json, <dir>/plots."""
    run = tmp_path_factory.mktemp("finished")
    proc = run_stage("train.py", *train_args(corpus, run, model))
    assert proc.returncode == 0, proc.stderr
    return run


@pytest.fixture
def earlier(finished: Path, tmp_path: Path) -> Path:
    """A private copy of the finished run, to refuse runs on."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    return run


@pytest.fixture
def bad_corpus(corpus: Path, tmp_path: Path) -> Path:
    """A copy of the corpus to damage."""
    out = tmp_path / "bad_corpus"
    shutil.copytree(corpus, out)
    return out


def put_token(corpus: Path, token: int) -> None:
    """Overwrite the first token of train.bin (after meta.json was written, as a hand edit would)."""
    time.sleep(0.01)  # the file's mtime must be later than meta.json's
    tokens = np.memmap(corpus / "train.bin", dtype=DTYPES[load_meta(corpus)["dtype"]], mode="r+")
    tokens[0] = token
    tokens.flush()
    del tokens


def edit_meta(corpus: Path, edit) -> None:
    meta = json.loads((corpus / "meta.json").read_text())
    edit(meta)
    (corpus / "meta.json").write_text(json.dumps(meta))


# ---------------------------------------------------------------- refused runs touch nothing

REFUSED = {
    # name: (extra flags, resume?, fragments of the one error line)
    "device_cuda": ({"device": "cuda"}, False, ["--device cuda", "CUDA is not available"]),
    "learning_rate_nan": ({"learning_rate": "nan"}, False, ["train.learning_rate must be a finite number"]),
    "learning_rate_inf": ({"learning_rate": "inf"}, True, ["train.learning_rate must be a finite number"]),
    "other_model_config": ({"model_config": "small"}, True, ["model config differs", "d_model"]),
    "other_seq_len": ({"seq_len": 16}, True, ["train.seq_len 32 → 16", "--allow_changed_settings"]),
    "other_batch_and_seed": ({"batch_size": 8, "seed": 7}, True, ["train.batch_size 4 → 8", "train.seed 1337 → 7"]),
    "checkpoint_dir_is_a_file": (
        {"checkpoint_dir": "{run}/ckpt/latest.pt"},
        False,
        ["--checkpoint_dir", "latest.pt: exists and is not a folder"],
    ),
    "metrics_file_is_a_folder": ({"metrics_file": "{run}/plots"}, False, ["--metrics_file", "is a folder"]),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_run_leaves_the_earlier_run_byte_identical(case, earlier, corpus, model):
    if case == "device_cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    flags, resume, fragments = REFUSED[case]
    flags = {k: str(v).format(run=earlier) for k, v in flags.items()}
    if resume:
        flags["resume_from"] = earlier / "ckpt" / "latest.pt"
    before = snapshot(earlier)
    proc = run_stage("train.py", *train_args(corpus, earlier, model, **flags))
    one_error_line(proc, *fragments)
    assert snapshot(earlier) == before


@pytest.mark.parametrize("damage", ["id_in_bin", "id_in_bin_of_old_corpus", "meta_vocab_smaller", "bin_changed"])
def test_corpus_with_ids_outside_the_vocabulary_is_refused(damage, earlier, bad_corpus, model):
    if damage == "id_in_bin":
        put_token(bad_corpus, 600)  # vocabulary 512
        fragments = ["train.bin: token id 600 is outside the vocabulary of 512"]
    elif damage == "id_in_bin_of_old_corpus":  # prepared before max_token_id/sha256 were recorded: scanned
        edit_meta(bad_corpus, lambda m: [s.pop(k) for s in m["splits"].values() for k in ("max_token_id", "sha256")])
        put_token(bad_corpus, 513)
        fragments = ["train.bin: token id 513 is outside the vocabulary of 512"]
    elif damage == "meta_vocab_smaller":
        edit_meta(bad_corpus, lambda m: m.update(vocab_size=300))
        fragments = ["is outside the vocabulary of 300", "meta.json vocab_size 300"]
    else:  # every id fits, but the file is not the one prepared
        put_token(bad_corpus, 7)
        fragments = ["train.bin: changed since the corpus was prepared"]
    before = snapshot(earlier)
    proc = run_stage("train.py", *train_args(bad_corpus, earlier, model))
    one_error_line(proc, *fragments)
    assert snapshot(earlier) == before


def test_prepared_corpus_records_its_largest_id_and_checksum(corpus):
    meta = load_meta(corpus)
    for split in meta["splits"].values():
        top, digest = scan_tokens(corpus / split["bin"], DTYPES[meta["dtype"]], split["tokens"])
        assert split["max_token_id"] == top < meta["vocab_size"]
        assert split["sha256"] == digest == hashlib.sha256((corpus / split["bin"]).read_bytes()).hexdigest()


def test_damaged_history_is_refused_before_anything_is_touched(earlier, corpus, model):
    path = earlier / "ckpt" / "history.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    before = snapshot(earlier)
    proc = run_stage(
        "train.py", *train_args(corpus, earlier, model, max_steps=6, resume_from=earlier / "ckpt" / "latest.pt")
    )
    one_error_line(proc, "history.jsonl:2: not a history record")
    assert snapshot(earlier) == before


def test_resume_of_a_finished_run_changes_nothing(earlier, corpus, model):
    before = snapshot(earlier)
    proc = run_stage("train.py", *train_args(corpus, earlier, model, resume_from=earlier / "ckpt" / "latest.pt"))
    assert proc.returncode == 0, proc.stderr
    assert "nothing to do" in proc.stdout
    assert snapshot(earlier) == before
    metrics = json.loads((earlier / "m.json").read_text())
    assert metrics["train"]["loss"] > 0 and metrics["val"]["loss"] > 0  # the finished run's numbers


def test_resume_appends_and_drops_a_torn_last_line(earlier, corpus, model, tmp_path):
    ckpt = earlier / "ckpt"
    old = (ckpt / "history.jsonl").read_text()
    with open(ckpt / "history.jsonl", "a") as f:
        f.write('{"step": 5, "metri')  # a kill in the middle of a line
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale, live = ckpt / f".latest.pt.tmp-{dead.pid}", ckpt / f".best.pt.tmp-{os.getpid()}"
    stale.write_bytes(b"half a checkpoint")
    live.write_bytes(b"being written")
    proc = run_stage("train.py", *train_args(corpus, earlier, model, max_steps=6, resume_from=ckpt / "latest.pt"))
    assert proc.returncode == 0, proc.stderr
    assert "dropping a torn last line" in proc.stderr
    new = (ckpt / "history.jsonl").read_text()
    assert new.startswith(old)  # what the finished run logged is kept as it was
    assert sorted({r["step"] for r in history(ckpt / "history.jsonl")}) == list(range(1, 7))
    assert not stale.exists() and live.exists()  # only the dead writer's leftover goes
    curve = (earlier / "plots" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert [int(row.split("\t")[0]) for row in curve[1:]] == list(range(1, 7))
    metrics = json.loads((earlier / "m.json").read_text())
    assert metrics["step"] == 6 and "loss" in metrics["val"]


def test_allowed_setting_changes_are_recorded_in_the_checkpoint(earlier, corpus, model):
    proc = run_stage(
        "train.py",
        *train_args(
            corpus,
            earlier,
            model,
            max_steps=6,
            batch_size=8,
            resume_from=earlier / "ckpt" / "latest.pt",
            allow_changed_settings=True,
        ),
    )
    assert proc.returncode == 0, proc.stderr
    assert "train.batch_size 4 → 8" in proc.stdout
    ckpt = torch.load(earlier / "ckpt" / "latest.pt", weights_only=False)
    assert ckpt["global_step"] == 6
    assert ckpt["changed_settings"] == [{"at_step": STEPS, "changes": {"train.batch_size": [4, 8]}}]


def test_changed_corpus_is_refused_at_resume(earlier, other_corpus, model):
    """Same architecture and model, data with other contents (here another tokenizer, which is checked first)."""
    before = snapshot(earlier)
    proc = run_stage(
        "train.py", *train_args(other_corpus, earlier, model, max_steps=6, resume_from=earlier / "ckpt" / "latest.pt")
    )
    one_error_line(proc, "tokenizer does not match")
    assert snapshot(earlier) == before


def test_changed_data_contents_are_named(earlier, bad_corpus, model):
    """A corpus with the same tokenizer but other tokens: the checksum differs, named as a setting."""
    meta = json.loads((bad_corpus / "meta.json").read_text())
    meta["splits"]["train"]["sha256"] = "0" * 64
    (bad_corpus / "meta.json").write_text(json.dumps(meta))
    before = snapshot(earlier)
    proc = run_stage(
        "train.py", *train_args(bad_corpus, earlier, model, max_steps=6, resume_from=earlier / "ckpt" / "latest.pt")
    )
    one_error_line(proc, "data.train.sha256", "--allow_changed_settings")
    assert snapshot(earlier) == before


# ---------------------------------------------------------------- NaN/inf


def test_exploding_run_stops_without_overwriting_checkpoints(earlier, corpus, model):
    """A learning rate of 1e30 is finite (accepted) but blows the weights up: the next step's loss is NaN."""
    ckpt = earlier / "ckpt"
    before = {name: (ckpt / name).read_bytes() for name in ("latest.pt", "best.pt")}
    proc = run_stage(
        "train.py", *train_args(corpus, earlier, model, max_steps=8, learning_rate=1e30, resume_from=ckpt / "latest.pt")
    )
    one_error_line(proc, "became NaN/inf at step 6", f"{ckpt / 'latest.pt'} at step {STEPS}")
    assert {name: (ckpt / name).read_bytes() for name in before} == before
    logged = [v for r in history(ckpt / "history.jsonl") for v in r.get("metrics", {}).values()]
    assert all(np.isfinite(logged))  # the bad step was never logged


class _NaNAtStep3:
    """Wraps an objective so that the loss of optimizer step 3 (0-based 2) is NaN."""

    def __init__(self, inner) -> None:
        self.inner, self.current = inner, 0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def on_step(self, step: int) -> dict[str, float]:
        self.current = step
        return self.inner.on_step(step)

    def loss(self, model, batch, gen):
        loss, metrics = self.inner.loss(model, batch, gen)
        return (loss * float("nan") if self.current == 2 else loss), metrics


def _cfg(**kw) -> TrainConfig:
    base = dict(
        max_steps=6,
        batch_size=4,
        seq_len=32,
        learning_rate=3e-3,
        warmup_steps=1,
        eval_every=3,
        eval_batches=1,
        log_every=2,
        checkpoint_every=2,
        num_samples=0,
        wandb=False,
        device="cpu",
    )
    return TrainConfig(**{**base, **kw})


def test_nonfinite_step_stops_the_run_at_the_next_check(corpus, tmp_path):
    objective = _NaNAtStep3(get_objective("ar"))
    with pytest.raises(TrainingError, match="became NaN/inf at step 3.*latest.pt at step 2"):
        pretrain(objective, ModelConfig(**TINY), _cfg(), corpus, Outputs(tmp_path), "nan")
    ckpt = torch.load(tmp_path / "latest.pt", weights_only=False)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(t).all() for t in ckpt["model_state_dict"].values())


def test_skip_nonfinite_steps_skips_and_counts(corpus, tmp_path):
    objective = _NaNAtStep3(get_objective("ar"))
    pretrain(objective, ModelConfig(**TINY), _cfg(skip_nonfinite_steps=True), corpus, Outputs(tmp_path), "skip")
    logged = {r["step"]: r["metrics"] for r in history(tmp_path / "history.jsonl") if "metrics" in r}
    assert logged[2]["train/skipped_steps"] == 0 and logged[4]["train/skipped_steps"] == 1
    assert np.isfinite(logged[4]["train/loss"])  # the mean over the steps that were taken
    ckpt = torch.load(tmp_path / "latest.pt", weights_only=False)
    assert ckpt["global_step"] == 6
    assert all(torch.isfinite(t).all() for t in ckpt["model_state_dict"].values())


@pytest.mark.parametrize("field", ["learning_rate", "grad_clip", "beta1", "wandb_init_timeout"])
def test_train_config_rejects_nonfinite_numbers(field):
    for value in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(ConfigError, match=f"train.{field} must be a finite number"):
            TrainConfig(**{field: value})


# ---------------------------------------------------------------- one writer per folder


@pytest.mark.slow
def test_second_writer_is_refused_and_a_killed_writer_leaves_no_lock(earlier, corpus, model):
    ckpt = earlier / "ckpt"
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "stages" / "train.py"),
            *train_args(corpus, earlier, model, max_steps=100000, checkpoint_every=1),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline, lock = time.time() + 120, ckpt / LOCK_FILE
        while time.time() < deadline and lock.read_text().strip() != str(first.pid):
            time.sleep(0.05)  # until the first run holds the lock (the finished run's PID is in the file before)
        assert first.poll() is None, first.stderr.read() if first.stderr else ""
        second = run_stage(
            "train.py", *train_args(corpus, earlier, model, max_steps=100000, resume_from=ckpt / "latest.pt")
        )
        one_error_line(second, f"another run (PID {first.pid}) is writing into this folder")
        steps = [r["step"] for r in history(ckpt / "history.jsonl")]
        assert steps == sorted(steps)  # one writer: no second history interleaved
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert (ckpt / LOCK_FILE).read_text().strip() == str(first.pid)  # the file stays, the lock does not
    (ckpt / f".latest.pt.tmp-{first.pid}").write_bytes(b"torn")  # as a kill mid-save leaves it
    third = run_stage("train.py", *train_args(corpus, earlier, model, max_steps=2))
    assert third.returncode == 0, third.stderr
    assert not (ckpt / f".latest.pt.tmp-{first.pid}").exists()


def test_only_leftovers_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    names = [f".m.json.tmp-{dead.pid}", f".m.json.tmp-{os.getpid()}", f".other.json.tmp-{dead.pid}", "m.json"]
    for name in names:
        (tmp_path / name).write_text("x")
    removed = remove_stale_temp(tmp_path, "m.json")  # as for a shared metrics/ folder
    assert [p.name for p in removed] == [names[0]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:])
    assert [p.name for p in remove_stale_temp(tmp_path)] == [names[2]]  # a checkpoint folder: any name


def test_dvc_ignores_the_lock_and_temporary_files():
    paths = ["checkpoints/ar/.run.lock", "checkpoints/ar/.latest.pt.tmp-4242", "metrics/.train_ar.json.tmp-17"]
    proc = subprocess.run(["dvc", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == paths
    kept = subprocess.run(
        ["dvc", "check-ignore", "checkpoints/ar/latest.pt"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert kept.returncode == 1  # the checkpoints themselves stay outputs


# ---------------------------------------------------------------- fine-tuning


@pytest.fixture(scope="module")
def instruct_data(finished: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("instruct") / "data"
    proc = run_stage(
        "prep_instruct.py",
        "--pretrained_checkpoint",
        finished / "ckpt" / "latest.pt",
        "--output_dir",
        out,
        "--source",
        "builtin:instructions",
        "--families",
        "count,arithmetic",
        "--num_examples",
        60,
        "--max_seq_len",
        96,
    )
    assert proc.returncode == 0, proc.stderr
    return out


def finetune_args(pretrained: Path, data: Path, run: Path, **flags: object) -> list[str]:
    base: dict[str, object] = {
        "pretrained_checkpoint": pretrained,
        "data_dir": data,
        "max_steps": 2,
        "batch_size": 4,
        "eval_every": 2,
        "checkpoint_every": 2,
        "eval_batches": 1,
        "num_samples": 0,
        "log_every": 1,
        "warmup_steps": 1,
        "device": "cpu",
        "no_wandb": True,
        "checkpoint_dir": run / "ft",
        "metrics_file": run / "ft.json",
        "plots_dir": run / "ftplots",
        "params": run / "none.yaml",
    }
    out: list[str] = []
    for key, value in {**base, **flags}.items():
        out += [f"--{key}"] if value is True else [f"--{key}", str(value)]
    return out


@pytest.mark.slow
def test_finetune_resume_checks(earlier, instruct_data):
    pretrained = earlier / "ckpt" / "latest.pt"
    before = snapshot(earlier)
    proc = run_stage("finetune.py", *finetune_args(pretrained, instruct_data, earlier, resume_from=pretrained))
    one_error_line(proc, "a pretrain checkpoint cannot resume a finetune run", "--pretrained_checkpoint")
    assert snapshot(earlier) == before
    proc = run_stage("finetune.py", *finetune_args(pretrained, instruct_data, earlier))
    assert proc.returncode == 0, proc.stderr
    before = snapshot(earlier)
    ft = earlier / "ft" / "latest.pt"
    proc = run_stage(
        "finetune.py", *finetune_args(pretrained, instruct_data, earlier, resume_from=ft, max_steps=4, batch_size=2)
    )
    one_error_line(proc, "train.batch_size 4 → 2")
    assert snapshot(earlier) == before
    proc = run_stage("finetune.py", *finetune_args(pretrained, instruct_data, earlier, resume_from=ft))
    assert proc.returncode == 0 and "nothing to do" in proc.stdout, proc.stderr
    assert snapshot(earlier) == before


# ---------------------------------------------------------------- W&B


@pytest.mark.slow
def test_unreachable_wandb_server_costs_at_most_the_init_timeout(earlier, corpus, model, tmp_path):
    env = {
        "WANDB_MODE": None,
        "WANDB_API_KEY": "x" * 40,
        "WANDB_BASE_URL": "http://127.0.0.1:9",
        "WANDB_DIR": str(tmp_path),
        "WANDB_SILENT": "true",
    }
    start = time.time()
    proc = run_stage(
        "train.py",
        *train_args(corpus, tmp_path / "w", model, max_steps=2, no_wandb=None, wandb=True, wandb_init_timeout=3),
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "logging offline instead" in proc.stderr and "Traceback" not in proc.stderr
    assert time.time() - start < 80  # the old 90 s stall alone would exceed this
    assert list((tmp_path / "wandb").glob("offline-run-*"))
