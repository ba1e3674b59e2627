"""stages/benchmark.py on CPU: the tiny preset, a few steps, JSON with throughput, MFU and memory fields."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lmcore.models import ModelConfig, resolve_model_config
from lmcore.train.perf import estimate_train_memory, flops_per_token

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_prints_json_for_each_architecture(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable,
        str(ROOT / "stages" / "benchmark.py"),
        "--architectures",
        "ar,sdd",
        "--sizes",
        "tiny",
        "--seq_len",
        "32",
        "--batch_size",
        "2",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--vocab_size",
        "512",
        "--sdd_k",
        "2",
        "--device",
        "cpu",
        "--output",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == report
    assert "6*(L*(4*d^2 + 2*d*d_ff) + V*d) + 12*L*d*T" in report["mfu_formula"]  # AR, diffusion
    assert "12*L*d*T*k^2" in report["mfu_formula"]  # SDD's attention over T·k slots
    ar, sdd = report["results"]
    assert (ar["architecture"], sdd["architecture"], ar["size"]) == ("ar", "sdd", "tiny")
    for r in (ar, sdd):
        assert "error" not in r, r.get("traceback")
        assert r["tokens_per_sec"] > 0 and r["step_time_ms"] > 0
        assert r["tokens_per_step"] == 2 * 32
        assert r["mfu"] is None and r["peak_bf16_tflops"] is None  # no GPU peak on CPU
        assert r["memory_kind"] == "process_max_rss" and r["peak_memory_mib"] > r["baseline_rss_mib"] > 0
        assert r["estimated_peak_memory_mib"] > 0
        assert r["model"] == {"d_model": 128, "n_heads": 4, "n_layers": 4, "d_ff": 512}
    assert ar["params"] == 128 * 512 + 4 * (4 * 128 * 128 + 2 * 128 * 512) + 9 * 128  # tied head, 9 norms
    assert sdd["slots_per_position"] == 2
    assert sdd["flops_per_token"] > ar["flops_per_token"]  # k = 2 slots per position


def test_loss_paths_alternate_and_are_compared(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "stages" / "benchmark.py"),
        "--architectures",
        "diffusion",
        "--sizes",
        "tiny",
        "--seq_len",
        "16",
        "--batch_size",
        "2",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--loss_steps",
        "1",
        "--vocab_size",
        "256",
        "--device",
        "cpu",
        "--loss_path",
        "lean,reference",
        "--repeats",
        "2",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert [r["loss_path"] for r in report["results"]] == ["lean", "reference"] * 2  # A/B/A/B
    for r in report["results"]:
        assert "error" not in r, r.get("traceback")
        assert r["loss_path_ms"] > 0 and r["loss_path_peak_mib"] is not None and r["loss_path_peak_mib"] >= 0
    (row,) = report["comparison"]
    assert (row["architecture"], row["lean"]["runs"], row["reference"]["runs"]) == ("diffusion", 2, 2)
    ratio = row["reference_over_lean"]["step_time_ms"]
    assert ratio == row["reference"]["step_time_ms"] / row["lean"]["step_time_ms"]
    # Same data, same noise: both paths train the same model to the same loss (up to float rounding).
    lean, ref = (r["final_loss"] for r in report["results"][:2])
    assert abs(lean - ref) < 1e-3 * abs(ref)


def test_unknown_architecture_is_one_line_error():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "benchmark.py"), "--architectures", "gpt"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: --architectures: unknown 'gpt'")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "benchmark.py"), "--loss_path", "fast"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: --loss_path: expected")


def test_xl_preset_is_about_300m_and_fits_80gb_by_estimate():
    cfg = resolve_model_config("xl", vocab_size=32000)
    est = estimate_train_memory(cfg, batch_size=16, seq_len=1024, gradient_checkpointing=False)
    ckpt = estimate_train_memory(cfg, batch_size=16, seq_len=1024, gradient_checkpointing=True)
    assert 330e6 < est["params"] < 340e6  # 334.8M with the 32k vocabulary, 302M without the embedding
    assert ckpt["activation_bytes"] < est["activation_bytes"] / 5
    assert est["total_bytes"] < 80e9


def test_flops_per_token_matches_the_stated_formula():
    cfg = ModelConfig(d_model=64, n_heads=4, n_layers=2, d_ff=256, vocab_size=100)
    n = 2 * (4 * 64 * 64 + 2 * 64 * 256) + 100 * 64
    assert flops_per_token(cfg, 128) == 6 * n + 12 * 2 * 64 * 128
