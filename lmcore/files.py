"""Reading and writing the project's files: JSON objects read with one-line errors that name the file; results
(text, JSON, figures) and prepared folders written under a temporary name and renamed when complete, so a
reader never sees a half-written file and a failed run leaves the previous output in place."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmcore.errors import DataError


def read_json_object(path: Path, missing: str, what: str) -> dict[str, Any]:
    """The JSON object in `path`; DataError `{missing}` when absent, `{path}: corrupt {what} (...)` when unreadable."""
    if not path.is_file():
        raise DataError(missing)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: corrupt {what} ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: corrupt {what} (expected a JSON object)")
    return data


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Create `path` atomically: `write` fills a temp file beside it (same suffix), which then replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The suffix stays last so writers that infer the format from the name (savefig) still can.
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: Path, text: str) -> None:
    """Write a UTF-8 text file atomically."""
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (non-finite floats become null, which JSON and DVC can read)."""
    write_text(path, json.dumps(_finite(obj), indent=2) + "\n")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def replace_dir(tmp: Path, target: Path) -> None:
    """Make the complete folder `tmp` the folder `target`; a previous `target` is moved aside, put back if the
    swap fails, and deleted only once the new one is in place."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)  # a directory cannot be renamed onto a non-empty one
    try:
        os.replace(tmp, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this machine (a temp file's writer may still be writing it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True
