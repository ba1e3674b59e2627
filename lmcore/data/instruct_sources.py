"""Instruction sources: Alpaca, Dolly, custom JSON/JSONL (local or `hf:`), and `builtin:instructions`.

    alpaca                 hf:tatsu-lab/alpaca
    dolly                  hf:databricks/databricks-dolly-15k (context → input, response → output)
    builtin:instructions   generated tasks with exactly checkable answers (builtin_instructions.py)
    hf:...                 any hf: source (lmcore/data/sources.py: a Hub dataset, a save_to_disk folder,
                           hf:json?data_files=...) with instruction/input/output (or Dolly's) fields
    PATH                   a .json list (Alpaca's alpaca_data.json), a .jsonl file, optionally .gz

Files and hub datasets are read by the readers of lmcore/data/sources.py. Records are validated one by one: a bad
record is an error naming file:line (the line where the record starts), or, with skip_bad, it is left out and
counted.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from lmcore.data.instruct_template import Example
from lmcore.data.sources import Record, file_format, json_records, jsonl_records, load_hub, read_lines
from lmcore.errors import DataError

ALIASES = {"alpaca": "hf:tatsu-lab/alpaca", "dolly": "hf:databricks/databricks-dolly-15k"}
FORMATS = ("auto", "alpaca", "dolly")
# Field names per format: (instruction, input, output). Custom JSON uses Alpaca's.
FIELDS = {"alpaca": ("instruction", "input", "output"), "dolly": ("instruction", "context", "response")}


@dataclass
class SourceStats:
    """What reading a source left out, by reason (skip_bad), with the first few messages."""

    read: int = 0
    bad: int = 0
    messages: list[str] = field(default_factory=list)

    def note(self, message: str) -> None:
        """Count one skipped record (keeping the first messages for the report)."""
        self.bad += 1
        if len(self.messages) < 20:
            self.messages.append(message)


def detect_format(record: Any, fmt: str) -> str:
    """`alpaca` or `dolly` for a record under format `fmt` (auto: Dolly when it has `response` but no `output`)."""
    if fmt != "auto":
        return fmt
    if isinstance(record, dict) and "response" in record and "output" not in record:
        return "dolly"
    return "alpaca"


def to_example(record: Any, fmt: str, where: str) -> Example:
    """Validate one record and map it to an Example; DataError(where: what is wrong) otherwise."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object with instruction/input/output, got {type(record).__name__}")
    kind = detect_format(record, fmt)
    f_ins, f_inp, f_out = FIELDS[kind]
    values = {}
    for name, required in ((f_ins, True), (f_inp, False), (f_out, True)):
        value = record.get(name)
        if value is None:
            if required:
                raise DataError(f"{where}: missing field \"{name}\"")
            value = ""
        if not isinstance(value, str):
            raise DataError(f"{where}: \"{name}\" is {type(value).__name__}, expected a string")
        if required and not value.strip():
            raise DataError(f"{where}: \"{name}\" is empty")
        values[name] = value
    category = record.get("category") if isinstance(record.get("category"), str) else None
    return Example(values[f_ins].strip(), values[f_inp].strip(), values[f_out].strip(), category, where)


def _file_records(path: Path, stats: SourceStats, skip_bad: bool) -> Iterator[tuple[str, Any]]:
    """(file:line, record) of a .json list or a .jsonl file (optionally .gz), read by lmcore/data/sources.py."""
    fmt, gz = file_format(path, (".json", ".jsonl"))

    def skip_invalid(message: str) -> None:
        stats.read += 1
        stats.note(message)

    # Some ".json" files are JSON Lines (e.g. litgpt's dolly fixture): a first line that is a whole object.
    if fmt == ".jsonl" or _first_line_is_object(path, gz):
        lines = jsonl_records(path, gz, skip_invalid=skip_invalid if skip_bad else None)
        return ((f"{path}:{r.line}", r.value) for r in lines)
    return ((_json_where(path, r), r.value) for r in json_records(path, gz))


def _json_where(path: Path, record: Record) -> str:
    """file:line of a record in a JSON list (with its index when the list is on one line), or its index."""
    if record.line is None:
        return f"{path}: record {record.index}"
    return f"{path}:{record.line}" + (f" (record {record.index})" if record.line == 1 and record.index else "")


def _first_line_is_object(path: Path, gz: bool) -> bool:
    first = next((line for _, line in read_lines(path, gz) if line.strip()), "")
    if not first.lstrip().startswith("{"):
        return False
    try:
        return isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        return False


def _hub_records(spec: str) -> Iterator[tuple[str, Any]]:
    for i, row in enumerate(load_hub(spec)["train"]):
        yield f"{spec} [train] row {i}", dict(row)


def iter_examples(spec: str, *, fmt: str = "auto", skip_bad: bool = False, seed: int = 0,
                  families: str | None = None, stats: SourceStats | None = None) -> Iterator[Example]:
    """Validated examples of a source, in order (builtin: generated without end; the caller bounds it)."""
    if fmt not in FORMATS:
        raise DataError(f"format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    stats = stats if stats is not None else SourceStats()
    spec = ALIASES.get(spec, spec)
    if spec.startswith("builtin:"):
        from lmcore.data.builtin_instructions import builtin_examples

        if spec != "builtin:instructions":
            raise DataError(f"{spec}: unknown built-in instruction set (known: builtin:instructions)")
        yield from builtin_examples(seed, families)
        return
    if spec.startswith("hf:"):
        records = _hub_records(spec)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise DataError(f"{path}: no such file (instruction sources: alpaca, dolly, builtin:instructions, "
                            "hf:OWNER/NAME, or a .json/.jsonl file)")
        records = _file_records(path, stats, skip_bad)
    for where, record in records:
        stats.read += 1
        try:
            yield to_example(record, fmt, where)
        except DataError as e:
            if not skip_bad:
                raise DataError(f"{e} (pass --skip_bad_records to leave such records out and count them)") from None
            stats.note(str(e))
