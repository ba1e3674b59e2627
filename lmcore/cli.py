"""What every stage script shares: one-line errors with a non-zero exit, and flags that override params.yaml."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from collections.abc import Callable
from typing import Any

from lmcore.config import field_default, field_help, unwrap_optional
from lmcore.errors import LMError


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(); user errors print one line `error: ...` and exit 2, with no traceback."""
    try:
        main()
    except LMError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def bool_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup, name: str, help: str) -> None:
    """A --name / --no_name pair whose default (None) means: take the value from params.yaml."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(f"--{name}", dest=name, action="store_true", default=None, help=help)
    group.add_argument(f"--no_{name}", dest=name, action="store_false", help=f"turn --{name} off")


def add_dataclass_flags(
    parser: argparse.ArgumentParser, cls: type, title: str, skip: tuple[str, ...] = (), source: str | None = None
) -> list[str]:
    """One --flag per field of dataclass `cls` (default None = keep params.yaml `title:`, or what `source` names);
    returns the field names.

    Each flag's help is the field's own (lmcore.config.doc) plus the built-in default. The flag's type follows the
    field's annotation: bools get a --name/--no_name pair, ints and floats their type, anything else a string; a
    list-of-integers field (sdd.k_schedule, evaluate.steps_sweep) takes its values separated by commas, as in
    `--k_schedule 1,2,4,8` (lmcore.config.int_list).
    """
    group = parser.add_argument_group(f"{title} (params.yaml {source or f'`{title}:`'})")
    hints = typing.get_type_hints(cls)
    names = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        # The default as params.yaml writes it (JSON is YAML); argparse expands %-formats, so % is doubled.
        text = f"{field_help(f)} [built-in default: {json.dumps(field_default(f))}]".replace("%", "%%")
        typ = unwrap_optional(hints[f.name])
        if typ is bool:
            bool_flag(group, f.name, text)  # type: ignore[arg-type]
        else:
            group.add_argument(f"--{f.name}", type=typ if typ in (int, float) else str, help=text)
        names.append(f.name)
    return names


def steps_flags(flags: dict[str, Any]) -> dict[str, Any]:
    """Training flags with one precedence rule added: an explicit --max_steps turns off a FLOPs or tokens budget
    that comes from params.yaml (a budget given as a flag too still wins, and says so in the start-up line)."""
    if flags.get("max_steps") is not None and flags.get("flops_budget") is None and flags.get("tokens_budget") is None:
        return {**flags, "flops_budget": 0.0, "tokens_budget": 0.0}
    return flags
