"""What every stage script shares: one-line errors with a non-zero exit, and flags that override params.yaml."""
from __future__ import annotations

import argparse
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


def bool_flag(parser: argparse.ArgumentParser, name: str, help: str) -> None:
    """A --name / --no_name pair whose default (None) means: take the value from params.yaml."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(f"--{name}", dest=name, action="store_true", default=None, help=help)
    group.add_argument(f"--no_{name}", dest=name, action="store_false", help=f"disable: {help}")
