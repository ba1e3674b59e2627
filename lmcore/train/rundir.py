"""A run folder's guards: outputs that can be written, one writer at a time, and no leftovers of killed writers.

The lock is an OS file lock (fcntl.flock) on `<checkpoint_dir>/.run.lock`: the kernel drops it when its holder
ends, however it ends (SIGKILL included), so a lock is never stale; the file itself stays and holds the PID of
the last run that took it. Temporary files are named `.<name>.tmp-<PID>` (atomic writes, see atomic_torch_save);
one whose PID is no longer running was left by a killed writer and is removed when the next run starts.
"""

from __future__ import annotations

import fcntl
import os
import re
import sys
from pathlib import Path

from lmcore.errors import ConfigError, RunFolderBusyError
from lmcore.files import pid_alive

LOCK_FILE = ".run.lock"
# `.<name>.tmp-<PID>` (atomic_torch_save) or `.<stem>.tmp-<PID><suffix>` (lmcore.files.atomic_write)
_TEMP = re.compile(r"^\..+\.tmp-(\d+)(\.[A-Za-z0-9]+)?$")


def temp_path(path: Path) -> Path:
    """Where this process writes `path` before renaming it into place (PID in the name, see remove_stale_temp)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def check_output_paths(checkpoint_dir: Path, metrics_file: Path | None, plots_dir: Path | None) -> None:
    """Output folders must be folders (or not exist yet) and the metrics file a file; checked before any is written."""
    for flag, path, folder in (
        ("--checkpoint_dir", checkpoint_dir, True),
        ("--metrics_file", metrics_file, False),
        ("--plots_dir", plots_dir, True),
    ):
        if path is None:
            continue
        if path.exists() and path.is_dir() != folder:
            raise ConfigError(f"{flag} {path}: exists and is {'not ' if folder else ''}a folder")
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise ConfigError(f"{flag} {path}: {blocker} exists and is not a folder")


def remove_stale_temp(folder: Path, name: str | None = None) -> list[Path]:
    """Delete `.<name>.tmp-<PID>` files in `folder` (of any name, or only of `name`) whose writer is no longer
    running; returns what was removed."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        m = _TEMP.match(path.name)
        if name is not None and not path.name.startswith((f".{name}.tmp-", f".{Path(name).stem}.tmp-")):
            continue
        if m and path.is_file() and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        print(
            f"removed {len(removed)} temporary file(s) of killed runs from {folder}: "
            f"{', '.join(p.name for p in removed)}",
            file=sys.stderr,
        )
    return removed


class RunLock:
    """An exclusive lock on a checkpoint folder, held while a run writes into it (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or refuse in one line naming the PID of the run that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # No O_TRUNC: a refused run must not wipe the holder's PID.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunFolderBusyError(
                f"{self.path.parent}: another run (PID {holder}) is writing into this folder; "
                f"wait for it to end or use another --checkpoint_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        """Give the lock up (ending the process does the same)."""
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
