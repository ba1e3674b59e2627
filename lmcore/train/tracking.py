"""One logger interface fanned out to the console, a JSONL history, a DVC metrics file, DVCLive and W&B.

Metric names are the same everywhere: train/loss train/accuracy train/perplexity train/lr train/tokens_per_sec
val/loss val/accuracy val/perplexity (plus objective extras such as train/k). Only rank 0 tracks.
"""
from __future__ import annotations

import csv
import json
import netrc
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from lmcore.files import write_text


class Tracker:
    """Base tracker: every method is a no-op, so this is also the null logger used in tests and on ranks > 0."""

    run_id: str | None = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Record scalar metrics at an optimizer step."""

    def log_samples(self, texts: list[str], step: int) -> None:
        """Record generated text samples."""

    def close(self) -> None:
        """Flush and finish."""


def _fmt(v: float) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class ConsoleTracker(Tracker):
    """One compact line per logged step, plus samples at validation."""

    def __init__(self, stream=sys.stdout) -> None:  # noqa: ANN001 - any text stream
        self.stream = stream

    def log(self, metrics: dict[str, float], step: int) -> None:
        body = "  ".join(f"{k}={_fmt(v)}" for k, v in metrics.items())
        print(f"step {step:>6}  {body}", file=self.stream, flush=True)

    def log_samples(self, texts: list[str], step: int) -> None:
        for i, t in enumerate(texts):
            print(f"  sample {i} @ {step}: {t[:300]!r}", file=self.stream, flush=True)


def _trim_jsonl(path: Path, last_step: int) -> None:
    """Drop history written after `last_step` (a run killed after its last checkpoint logged steps it will redo)."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= last_step]
    path.write_text("".join(ln + "\n" for ln in keep))


class JsonlTracker(Tracker):
    """Append-only history `{"step": n, "metrics"|"samples": ...}` next to the checkpoints; exact-resume tests read it."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        else:
            _trim_jsonl(self.path, resume_step)

    def _write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._write({"step": step, "metrics": metrics})

    def log_samples(self, texts: list[str], step: int) -> None:
        self._write({"step": step, "samples": texts})


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{"train/loss": 1} → {"train": {"loss": 1}}, the shape `dvc metrics show` tabulates."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


class MetricsFileTracker(Tracker):
    """The latest value of every metric, plus fixed run facts, as a DVC metrics JSON (rewritten atomically)."""

    def __init__(self, path: Path, facts: dict[str, Any]) -> None:
        self.path, self.facts, self.latest = Path(path), facts, {}
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.latest.update(metrics)
        self.latest["step"] = step
        self._flush()

    def _flush(self) -> None:
        write_text(self.path, json.dumps({**self.facts, **nest(self.latest)}, indent=2) + "\n")

    def close(self) -> None:
        self._flush()


class DVCLiveTracker(Tracker):
    """DVCLive: TSV curves under `<dir>/plots/metrics/...` for `dvc plots`; no dvc.yaml edits, no auto-commit."""

    def __init__(self, directory: Path, resume_step: int | None = None) -> None:
        from dvclive import Live

        self.dir = Path(directory)
        if resume_step is not None:
            self._trim(resume_step)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.live = Live(dir=str(self.dir), resume=resume_step is not None, save_dvc_exp=False, dvcyaml=False,
                             report=None)

    def _trim(self, last_step: int) -> None:
        for tsv in self.dir.glob("plots/metrics/**/*.tsv"):
            with open(tsv, newline="") as f:
                rows = list(csv.DictReader(f, delimiter="\t"))
            if not rows:
                continue
            keep = [r for r in rows if int(r["step"]) <= last_step]
            with open(tsv, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t")
                w.writeheader()
                w.writerows(keep)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.live.step = step
        for k, v in metrics.items():
            if isinstance(v, (int, float)):
                self.live.log_metric(k, v)
        self.live.make_summary()

    def close(self) -> None:
        self.live.end()


def wandb_credentials_present() -> bool:
    """True when an API key is configured (env or ~/.netrc), so W&B can run online."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbTracker(Tracker):
    """Weights & Biases, online with credentials and offline otherwise; any W&B failure is a warning, never fatal."""

    def __init__(self, project: str, name: str, config: dict[str, Any], run_id: str | None = None) -> None:
        self.run = None
        try:
            import wandb

            mode = os.environ.get("WANDB_MODE") or ("online" if wandb_credentials_present() else "offline")
            self.run = wandb.init(project=project, name=name, id=run_id, resume="allow" if run_id else None,
                                  config=config, mode=mode, settings=wandb.Settings(init_timeout=90, silent=True))
            self.run_id = self.run.id
            self._wandb = wandb
        except Exception as e:  # noqa: BLE001 - tracking must never stop training
            self._fail("init", e)

    def _fail(self, what: str, e: Exception) -> None:
        print(f"warning: W&B {what} failed, continuing without it ({e.__class__.__name__}: {e})", file=sys.stderr)
        self.run = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.run is not None:
            try:
                self.run.log(metrics, step=step)
            except Exception as e:  # noqa: BLE001
                self._fail("log", e)

    def log_samples(self, texts: list[str], step: int) -> None:
        self.log_table("samples", ["step", "sample"], [[step, t] for t in texts], step)

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        """Log a table (one list per row, in `columns` order) under `key` at `step`."""
        if self.run is not None:
            try:
                self.run.log({key: self._wandb.Table(columns=columns, data=rows)}, step=step)
            except Exception as e:  # noqa: BLE001
                self._fail("log", e)

    def close(self) -> None:
        if self.run is not None:
            try:
                self.run.finish()
            except Exception as e:  # noqa: BLE001
                self._fail("finish", e)


class MultiTracker(Tracker):
    """Fans every call out to several trackers."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers
        self.run_id = next((t.run_id for t in trackers if t.run_id), None)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for t in self.trackers:
            t.log(metrics, step)

    def log_samples(self, texts: list[str], step: int) -> None:
        for t in self.trackers:
            t.log_samples(texts, step)

    def close(self) -> None:
        for t in self.trackers:
            t.close()
