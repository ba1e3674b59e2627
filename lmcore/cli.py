"""What every stage script shares: one-line errors with a non-zero exit, and flags that override params.yaml."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Callable

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
    group.add_argument(f"--no_{name}", dest=name, action="store_false", help=f"disable: {help}")


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, title: str,
                        skip: tuple[str, ...] = ()) -> list[str]:
    """One --flag per field of dataclass `cls` (default None = keep params.yaml); returns the field names.

    The flag's type follows the field's default: bools get a --name/--no_name pair, lists and None-defaults
    take a string (a list field such as SDD's k_schedule accepts "1,2,4,8").
    """
    group = parser.add_argument_group(title)
    names = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        comment = f"overrides params.yaml {title}.{f.name} (built-in default {default!r})"
        if isinstance(default, bool):
            bool_flag(group, f.name, comment)  # type: ignore[arg-type]
        else:
            typ = type(default) if isinstance(default, (int, float)) else str
            group.add_argument(f"--{f.name}", type=typ, help=comment)
        names.append(f.name)
    return names
