"""Reading the project's JSON files (meta.json, config.json, results) with one-line errors that name the file."""
from __future__ import annotations

import json
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
