"""Instruction sources: Alpaca, Dolly, custom JSON/JSONL (local or `hf:`), and `builtin:instructions`.

    alpaca                 hf:tatsu-lab/alpaca
    dolly                  hf:databricks/databricks-dolly-15k (context → input, response → output)
    builtin:instructions   generated tasks with exactly checkable answers (builtin.py)
    hf:OWNER/NAME[:config] any hub dataset with instruction/input/output (or Dolly's) fields
    PATH                   a .json list (Alpaca's alpaca_data.json), a .jsonl file, optionally .gz

Records are validated one by one: a bad record is an error naming file:line (the line where the record starts),
or, with skip_bad, it is left out and counted.
"""
from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from lmcore.errors import DataError
from lmcore.instruct.template import Example

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


def _open_text(path: Path) -> str:
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.lower().endswith(".gz") else path.read_bytes()
        return raw.decode("utf-8-sig")
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None


def _json_records(path: Path, text: str) -> Iterator[tuple[str, Any]]:
    """(file:line, record) of a JSON list (or {"data": [...]}), with the line where each record starts."""
    decoder, ws = json.JSONDecoder(), re.compile(r"\s*")
    pos = ws.match(text, 0).end()
    if text.startswith("{", pos):  # {"data": [...]}: parse whole (positions are lost, records are numbered)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
        records = data.get("data") if isinstance(data, dict) else None
        if not isinstance(records, list):
            raise DataError(f"{path}: expected a JSON list of records or an object with a \"data\" list")
        yield from ((f"{path}: record {i}", r) for i, r in enumerate(records))
        return
    if not text.startswith("[", pos):
        raise DataError(f"{path}:1: expected a JSON list of instruction records")
    pos, line, counted, index = ws.match(text, pos + 1).end(), 1, 0, 0
    if text.startswith("]", pos):
        return
    while True:
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            record, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
        yield f"{path}:{line}" + (f" (record {index})" if line == 1 and index else ""), record
        index += 1
        pos = ws.match(text, end).end()
        if text.startswith(",", pos):
            pos = ws.match(text, pos + 1).end()
        elif text.startswith("]", pos):
            return
        else:
            bad_line = line + text.count("\n", counted, pos)
            raise DataError(f"{path}:{bad_line}: invalid JSON (expected ',' or ']' after record {index - 1})")


def _jsonl_records(path: Path, text: str, stats: SourceStats, skip_bad: bool) -> Iterator[tuple[str, Any]]:
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as e:
            if not skip_bad:
                raise DataError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            stats.read += 1
            stats.note(f"{where}: invalid JSON ({e.msg} at column {e.colno})")


def _file_records(path: Path, stats: SourceStats, skip_bad: bool) -> Iterator[tuple[str, Any]]:
    name = path.name.lower().removesuffix(".gz")
    text = _open_text(path)
    if name.endswith(".jsonl"):
        return _jsonl_records(path, text, stats, skip_bad)
    if name.endswith(".json"):
        # Some ".json" files are JSON Lines (e.g. litgpt's dolly fixture): a first line that is a whole object.
        first = text.lstrip().split("\n", 1)[0]
        if first.startswith("{") and _is_object(first):
            return _jsonl_records(path, text, stats, skip_bad)
        return _json_records(path, text)
    raise DataError(f"{path}: unsupported file type for instructions (use .json or .jsonl, optionally .gz)")


def _is_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def _hub_records(spec: str) -> Iterator[tuple[str, Any]]:
    from lmcore.data.sources import parse_hf_spec

    name, config = parse_hf_spec(spec)
    import datasets  # slow to import: only when a hub dataset is asked for

    try:
        ds = datasets.load_dataset(name, config, split="train")
    except Exception as e:  # network, auth, missing dataset: one user-facing line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise DataError(f"{spec}: cannot load from the Hugging Face Hub ({type(e).__name__}: {msg})") from None
    for i, row in enumerate(ds):
        yield f"{spec} [train] row {i}", dict(row)


def iter_examples(spec: str, *, fmt: str = "auto", skip_bad: bool = False, seed: int = 0,
                  families: str | None = None, stats: SourceStats | None = None) -> Iterator[Example]:
    """Validated examples of a source, in order (builtin: generated without end; the caller bounds it)."""
    if fmt not in FORMATS:
        raise DataError(f"format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    stats = stats if stats is not None else SourceStats()
    spec = ALIASES.get(spec, spec)
    if spec.startswith("builtin:"):
        from lmcore.instruct.builtin import builtin_examples

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
