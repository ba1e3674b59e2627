"""One logger interface fanned out to the console, a JSONL history, a DVC metrics file, DVCLive and W&B.

Metric names are the same everywhere: train/loss train/accuracy train/perplexity train/lr train/tokens_per_sec
val/loss val/accuracy val/perplexity (plus objective extras such as train/k). Only rank 0 tracks.

Trackers are created only once a run has passed every check (lmcore/train/run.py), so a refused run leaves the
files of an earlier one as they were. A resumed run continues them: history and curves keep every step up to
the checkpoint (the steps after it, which the resumed run does again, are dropped), the metrics file keeps the
earlier values until new ones are logged; rewrites go through a temporary file and a rename.
"""

from __future__ import annotations

import csv
import io
import json
import netrc
import os
import sys
import warnings
from pathlib import Path
from typing import Any, ClassVar

from lmcore.errors import DataError
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
    """Training progress on the console (lmcore/progress.py): step/total, loss, tokens/s, lr and the ETA as a bar on
    a terminal, one line per logged interval otherwise (DVC logs); validation metrics and samples as lines."""

    # What the progress shows of a logged interval, under shorter labels; the rest is in history/DVC/W&B.
    SHOWN: ClassVar[dict[str, str]] = {"train/loss": "loss", "train/tokens_per_sec": "tokens/s", "train/lr": "lr"}

    def __init__(
        self, total_steps: int, initial_step: int = 0, desc: str = "train", stream=None, tty: bool | None = None
    ) -> None:
        from lmcore.progress import Progress

        self.stream = stream if stream is not None else sys.stdout
        self.progress = Progress(total_steps, desc, "step", initial_step, self.stream, min_interval=0.0, tty=tty)

    def log(self, metrics: dict[str, float], step: int) -> None:
        if any(k.startswith("train/") for k in metrics):
            shown = {label: metrics.get(k) for k, label in self.SHOWN.items()}
            if metrics.get("train/skipped_steps"):
                shown["skipped"] = int(metrics["train/skipped_steps"])
            self.progress.update(step, **shown)
        rest = {k: v for k, v in metrics.items() if not k.startswith("train/")}
        if rest:
            body = "  ".join(f"{k}={_fmt(v)}" for k, v in rest.items())
            self.progress.write(f"step {step:>6}/{self.progress.total}  {body}")

    def log_samples(self, texts: list[str], step: int) -> None:
        for i, t in enumerate(texts):
            self.progress.write(f"  sample {i} @ {step}: {t[:300]!r}")

    def close(self) -> None:
        self.progress.close()


def read_history(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(line, record) of a history.jsonl. A torn last line (a kill mid-write) is dropped with a warning; any other
    line that is not a JSON record with an integer step is an error naming it."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ValueError("not a record with an integer step")
        except ValueError as e:
            if i == len(lines) and not text.endswith("\n"):
                print(
                    f"warning: {path}:{i}: dropping a torn last line (the run writing it was killed)", file=sys.stderr
                )
                break
            raise DataError(
                f"{path}:{i}: not a history record ({str(e).splitlines()[0]}); fix or delete the line"
            ) from None
        out.append((line, record))
    return out


class JsonlTracker(Tracker):
    """History `{"step": n, "metrics"|"samples": ...}`, one line each, next to the checkpoints (see the module
    docstring for a resume); exact-resume tests read it."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():  # keep steps up to the checkpoint; a kill may have logged later ones
            kept = [line for line, record in read_history(self.path) if record["step"] <= resume_step]
            write_text(self.path, "".join(line + "\n" for line in kept))

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


def flatten(tree: dict[str, Any], prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """The inverse of nest: {"train": {"loss": 1}} → {"train/loss": 1} (keys joined by `sep`, after `prefix`)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}{sep}", sep))
        else:
            out[f"{prefix}{key}"] = value
    return out


def facts_path(metrics_file: Path) -> Path:
    """Where a run's facts go beside its metrics file: metrics/train_ar.json → metrics/train_ar_facts.json."""
    return Path(metrics_file).with_name(f"{Path(metrics_file).stem}_facts.json")


class MetricsFileTracker(Tracker):
    """The latest value of every metric as a DVC metrics JSON (numbers only: `dvc metrics show` tabulates every
    key), and the run's fixed facts (names, kinds, paths, the corpus entropy floor) beside it in
    `facts_path(path)`, a plain output. Both are rewritten atomically.

    Written only when numbers are logged: a run that logs nothing leaves the files as they were. A resumed run
    starts from the earlier file's numbers, so a metric not logged again since the resume keeps its value."""

    def __init__(self, path: Path, facts: dict[str, Any], resume: bool = False) -> None:
        self.path, self.facts, self.latest, self.facts_written = Path(path), facts, {}, False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume and self.path.is_file():
            try:
                earlier = json.loads(self.path.read_text())
            except ValueError:
                earlier = None  # unreadable: the resumed run's numbers replace it
            if isinstance(earlier, dict):
                self.latest = {k: v for k, v in flatten(earlier).items() if "/" in k or k == "step"}

    def log(self, metrics: dict[str, float], step: int) -> None:
        if not self.facts_written:  # with this run's first numbers
            write_text(facts_path(self.path), json.dumps(self.facts, indent=2) + "\n")
            self.facts_written = True
        self.latest.update(metrics)
        self.latest["step"] = step
        write_text(self.path, json.dumps(nest(self.latest), indent=2) + "\n")


class DVCLiveTracker(Tracker):
    """DVCLive: TSV curves under `<dir>/plots/metrics/...` for `dvc plots`; no dvc.yaml edits, no auto-commit."""

    def __init__(self, directory: Path, resume_step: int | None = None) -> None:
        from dvclive import Live

        self.dir = Path(directory)
        if resume_step is not None:
            self._trim(resume_step)
            summary = self.dir / "metrics.json"  # DVCLive's summary, which it writes in place
            try:
                json.loads(summary.read_text()) if summary.is_file() else None
            except ValueError:  # torn by a kill mid-write: DVCLive would fail to resume; the next log rewrites it
                summary.unlink()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.live = Live(
                dir=str(self.dir), resume=resume_step is not None, save_dvc_exp=False, dvcyaml=False, report=None
            )

    def _trim(self, last_step: int) -> None:
        """Keep each curve's rows up to the checkpoint's step (rows that do not parse, e.g. torn by a kill, go)."""
        for tsv in self.dir.glob("plots/metrics/**/*.tsv"):
            with open(tsv, newline="") as f:
                reader = csv.DictReader(f, delimiter="\t")
                rows, fields = list(reader), reader.fieldnames
            if not fields or "step" not in fields:
                continue
            keep = [
                r
                for r in rows
                if str(r.get("step") or "").isdigit() and None not in r.values() and int(r["step"]) <= last_step
            ]
            out = io.StringIO()
            w = csv.DictWriter(out, fieldnames=fields, delimiter="\t", lineterminator="\n")
            w.writeheader()
            w.writerows(keep)
            write_text(tsv, out.getvalue())

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
    """Weights & Biases, online with credentials and offline otherwise; any W&B failure is a warning, never fatal.

    An online start that does not finish within `init_timeout` seconds (server unreachable) falls back to an
    offline run, which `wandb sync` uploads later: training never waits longer than that for W&B.

    `group` and `job_type` link the runs of one experiment (lmcore/train/experiment.py). A training run
    (`step_axis`) logs `train/step` with every row as the x axis of its metrics, with min/max summaries (the
    summary of `val/loss` is its best value, not its last); with `checkpoint_dir` it uploads best.pt and
    latest.pt as a `model` artifact when it ends."""

    def __init__(
        self,
        project: str,
        name: str,
        config: dict[str, Any],
        run_id: str | None = None,
        init_timeout: float = 15.0,
        group: str | None = None,
        job_type: str | None = None,
        step_axis: bool = False,
        checkpoint_dir: Path | None = None,
    ) -> None:
        self.run, self.name, self.step_axis, self.checkpoint_dir = None, name, step_axis, checkpoint_dir
        self.defined: set[str] = set()
        self.last_step: int | None = None
        try:
            import wandb

            self._wandb = wandb
            mode = os.environ.get("WANDB_MODE") or ("online" if wandb_credentials_present() else "offline")
            args = dict(
                project=project,
                name=name,
                id=run_id,
                resume="allow" if run_id else None,
                config=config,
                group=group,
                job_type=job_type,
            )
            try:
                self.run = wandb.init(
                    **args, mode=mode, settings=wandb.Settings(init_timeout=init_timeout, silent=True)
                )
            except Exception as e:
                if mode != "online":
                    raise
                print(
                    f"warning: W&B did not start online ({e.__class__.__name__}; limit train.wandb_init_timeout "
                    f"= {init_timeout:g} s); logging offline instead (upload later with `wandb sync`)",
                    file=sys.stderr,
                )
                self.run = wandb.init(**args, mode="offline", settings=wandb.Settings(silent=True))
            self.run_id = self.run.id
            if step_axis:
                from lmcore.train.experiment import define_metrics

                define_metrics(self.run)
        except Exception as e:
            self._fail("init", e)

    def _fail(self, what: str, e: Exception) -> None:
        print(f"warning: W&B {what} failed, continuing without it ({e.__class__.__name__}: {e})", file=sys.stderr)
        self.run = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.run is not None:
            try:
                if self.step_axis:
                    from lmcore.train.experiment import STEP_METRIC, define_new

                    define_new(self.run, list(metrics), self.defined)
                    metrics = {STEP_METRIC: step, **metrics}
                self.run.log(metrics, step=step)
                self.last_step = step
            except Exception as e:
                self._fail("log", e)

    def log_samples(self, texts: list[str], step: int) -> None:
        if texts:  # num_samples = 0: no empty table per validation
            self.log_table("samples", ["step", "sample"], [[step, t] for t in texts], step)

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        """Log a table (one list per row, in `columns` order) under `key` at `step`."""
        if self.run is not None:
            try:
                self.run.log({key: self._wandb.Table(columns=columns, data=rows)}, step=step)
            except Exception as e:
                self._fail("log", e)

    def log_checkpoints(self) -> None:
        """best.pt and latest.pt of `checkpoint_dir` as one `model` artifact named after the run, aliased
        `latest` and `step-<n>` (a resumed run adds a version)."""
        files = [p for p in (self.checkpoint_dir / "best.pt", self.checkpoint_dir / "latest.pt") if p.is_file()]
        if self.run is None or not files:
            return
        try:
            artifact = self._wandb.Artifact(
                self.name, type="model", metadata={"step": self.last_step, "files": [p.name for p in files]}
            )
            for p in files:
                artifact.add_file(str(p), name=p.name)
            aliases = ["latest"] + ([f"step-{self.last_step}"] if self.last_step is not None else [])
            self.run.log_artifact(artifact, aliases=aliases)
        except Exception as e:
            self._fail("checkpoint upload", e)

    def close(self) -> None:
        if self.run is not None and self.checkpoint_dir is not None:
            self.log_checkpoints()
        if self.run is not None:
            try:
                self.run.finish()
            except Exception as e:
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
