"""The three instruction stage scripts by hand: params.yaml sections, flags, outputs, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from lmcore.config import TrainConfig, load_params
from lmcore.models import ModelConfig
from lmcore.objectives import get_objective
from lmcore.train.run import Outputs, pretrain

ROOT = Path(__file__).resolve().parents[1]


def stage(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "stages" / name), *map(str, args)], capture_output=True, text=True, cwd=ROOT
    )


def test_prep_finetune_evaluate_stages(corpus, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "train": {"batch_size": 8, "device": "cpu", "eval_batches": 1, "log_every": 5, "num_samples": 0},
                "prep_instruct": {
                    "source": "builtin:instructions",
                    "families": "count,arithmetic",
                    "num_examples": 120,
                    "max_seq_len": 96,
                },
                "finetune": {
                    "learning_rate": 0.003,
                    "max_steps": 6,
                    "eval_every": 3,
                    "warmup_steps": 2,
                    "wandb": False,
                },
                "evaluate_instruct": {"num_examples": 6, "steps": 4, "device": "cpu", "wandb": False},
            }
        )
    )
    assert load_params(params).train.batch_size == 8  # the new sections do not break the pipeline's params
    cfg = TrainConfig(
        max_steps=4,
        batch_size=4,
        seq_len=64,
        eval_every=4,
        eval_batches=1,
        num_samples=0,
        wandb=False,
        device="cpu",
        warmup_steps=1,
    )
    pretrain(
        get_objective("ar"),
        ModelConfig(d_model=32, n_heads=4, n_layers=2, d_ff=64),
        cfg,
        corpus,
        Outputs(tmp_path / "pre"),
        "pre",
    )
    data = tmp_path / "data_instruct"
    r = stage(
        "prep_instruct.py",
        "--pretrained_checkpoint",
        tmp_path / "pre" / "latest.pt",
        "--output_dir",
        data,
        "--params",
        params,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((data / "config.json").read_text())["counts"]["kept"] == 120
    r = stage(
        "finetune.py",
        "--pretrained_checkpoint",
        tmp_path / "pre" / "latest.pt",
        "--data_dir",
        data,
        "--params",
        params,
        "--checkpoint_dir",
        tmp_path / "ft",
        "--metrics_file",
        tmp_path / "ft.json",
        "--plots_dir",
        tmp_path / "ftplots",
        "--max_steps",
        4,
    )
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "ft.json").read_text())
    facts = json.loads((tmp_path / "ft_facts.json").read_text())
    assert facts["parent_checkpoint"] == str(tmp_path / "pre" / "latest.pt") and "loss" in metrics["train"]
    assert (tmp_path / "ft" / "best.pt").is_file() and (tmp_path / "ftplots").is_dir()
    out = tmp_path / "eval.json"
    r = stage(
        "evaluate_instruct.py",
        "--checkpoints",
        tmp_path / "ft" / "latest.pt",
        "--data_dir",
        data,
        "--output",
        out,
        "--plots_dir",
        tmp_path / "evplots",
        "--params",
        params,
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())["models"]["ar"]
    assert set(res) == {"pretrained", "finetuned"} and res["finetuned"]["num_examples"] == 6
    for m in res.values():
        assert {"rouge_l", "bleu", "format", "exact_match"} <= set(m) and 0 <= m["rouge_l"] <= 1
    rows = [line.split(",") for line in (tmp_path / "evplots" / "exact_match.csv").read_text().splitlines()]
    assert rows[0] == ["family", "architecture", "model", "exact_match"] and rows[-1][0] == "overall"
    assert {(r[1], r[2]) for r in rows[1:]} == {("ar", "pretrained"), ("ar", "finetuned")}
    assert (tmp_path / "evplots" / "exact_match.png").is_file()
    assert not (tmp_path / "evaluate_instruct_ar.json").exists()  # no headline file beside a given --output
    assert "reference:" in (tmp_path / "eval_responses.txt").read_text()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": ""}\n')
    r = stage(
        "prep_instruct.py", "--source", bad, "--tokenizer", corpus, "--output_dir", tmp_path / "x", "--params", params
    )
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "bad.jsonl:1" in r.stderr
    assert not (tmp_path / "x").exists()
