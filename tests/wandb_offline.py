"""Reading an offline W&B run back, for tests: the records of its `.wandb` transaction log.

wandb ≥ 0.19 writes offline runs only as that log (no files/config.yaml or wandb-summary.json until a sync) and no
longer ships a Python reader, so this reads the documented container: a 7-byte header (":W&B", magic 0xBEE1,
version 0), then LevelDB-log framing in 32 KiB blocks (a 7-byte record header: CRC32C, length, type FULL=1 /
FIRST=2 / MIDDLE=3 / LAST=4) around serialized `wandb_internal_pb2.Record` protobufs, which wandb parses.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7


def records(path: Path) -> list[Any]:
    """Every Record of a `.wandb` file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B transaction log"
    out, pos, parts = [], HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # the rest of a block too small for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        pos += HEADER
        chunk, pos = data[pos : pos + length], pos + length
        if kind == 0 and length == 0:  # zero padding at the end of a block
            continue
        parts = chunk if kind in (1, 2) else parts + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(parts)
            out.append(record)
            parts = b""
    return out


@dataclass
class OfflineRun:
    """What a test checks of one offline run: its identity, config, history rows, summary and metric definitions."""

    run: Any = None
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)  # name or glob → MetricRecord
    artifacts: list[Any] = field(default_factory=list)
    finished: bool = False  # the log ends with the run's exit record


def _value(json_text: str) -> Any:
    return json.loads(json_text)


def read_run(run_dir: Path) -> OfflineRun:
    """The run in `run_dir` (a `wandb/offline-run-*` folder) read from its `.wandb` log."""
    (path,) = Path(run_dir).glob("*.wandb")
    out = OfflineRun()
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out.run = r.run
            for item in r.run.config.update:
                out.config[item.key] = _value(item.value_json)
        elif kind == "config":
            for item in r.config.update:
                out.config[item.key] = _value(item.value_json)
        elif kind == "history":
            out.history.append(
                {".".join(item.nested_key) or item.key: _value(item.value_json) for item in r.history.item}
            )
        elif kind == "summary":
            for item in r.summary.update:
                out.summary[".".join(item.nested_key) or item.key] = _value(item.value_json)
        elif kind == "metric":
            out.metrics[r.metric.name or r.metric.glob_name] = r.metric
        elif kind == "artifact":
            out.artifacts.append(r.artifact)
        elif kind == "exit":
            out.finished = True
    return out
