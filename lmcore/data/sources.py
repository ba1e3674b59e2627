"""Text sources, one syntax everywhere: `hf:...` (what `datasets` loads), a local file or folder, `builtin:stories`.

`hf:NAME[:config][@revision][?split=S&val_split=S&data_files=A,B&val_files=C&data_dir=D]`, NAME being
  - a Hub dataset:               hf:roneneldan/TinyStories, hf:HuggingFaceFW/fineweb:sample-10BT?split=train[:1%]
  - a `save_to_disk` folder:     hf:data/my_saved_dataset (opened with datasets.load_from_disk)
  - a local folder of files:     hf:./my_dataset (datasets infers the builder; train*/validation* name the splits)
  - a packaged builder + files:  hf:json?data_files=a.jsonl,b.jsonl&val_files=c.jsonl, also parquet, csv, text

A source is a set of named splits ("train", and "val" when the source has its own); each split is a
`DocumentStream` that reads the data afresh on every iteration, so nothing is held in memory and
the data can be read more than once (tokenizer training, then tokenisation).

The readers below (`read_lines`, `read_text`, `jsonl_records`, `json_records`, `load_hub`) are also how
instruction sources (lmcore/data/instruct_sources.py) read their records.
"""
from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple

from lmcore.errors import DataError

SEPARATOR = "<|endoftext|>"
FORMATS = (".txt", ".jsonl", ".json", ".parquet")
HF_VAL_SPLITS = ("validation", "valid", "val", "test")
# Builtin validation stories are taken from this index on, so train (0, 1, 2, ...) never reaches them.
BUILTIN_VAL_START = 1 << 40
# With a source's own val split and max_docs set, val holds max(ceil(max_docs * val_fraction), this).
MIN_OWN_VAL_DOCS = 200


class Document(NamedTuple):
    """One document's text, with its exact log-probability when the source knows it (builtin corpora)."""

    text: str
    logprob: float | None = None


class ReadMeter:
    """How far the latest pass over local files has read (compressed bytes), for an ETA when documents are uncounted."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0

    def fraction(self) -> float | None:
        """Share of the files' bytes read so far by the latest pass (None when the size is unknown)."""
        return min(1.0, self.done / self.total) if self.total > 0 else None


class DocumentStream:
    """A re-iterable stream of documents: each iteration reads the source again, in constant memory."""

    def __init__(self, make: Callable[[], Iterator[Document]], name: str, expected: int | None = None,
                 meter: ReadMeter | None = None) -> None:
        self._make, self.name, self.expected = make, name, expected  # expected: document count when known
        self.meter = meter  # local files: bytes read by the latest pass

    def __iter__(self) -> Iterator[Document]:
        return self._make()

    def __repr__(self) -> str:
        return f"DocumentStream({self.name!r})"


@dataclass
class Source:
    """A named corpus: its splits ("train", and "val" when it has its own) as document streams."""

    name: str
    splits: dict[str, DocumentStream] = field(default_factory=dict)
    unlimited: bool = False  # generated corpora never end: max_docs must bound them

    @property
    def has_own_val_split(self) -> bool:
        """Whether the source ships its own validation documents."""
        return "val" in self.splits

    def iter(self, split: str = "train") -> Iterator[Document]:
        """A fresh iterator over one split's documents."""
        if split not in self.splits:
            raise DataError(f"{self.name}: no split {split!r} (splits: {', '.join(self.splits)})")
        return iter(self.splits[split])


# ---------------------------------------------------------------- opening a spec

def open_source(spec: str, *, text_field: str = "text", streaming: bool = False, seed: int = 0) -> Source:
    """Open an `hf:` source (see the module docstring), `builtin:stories`, or a local file/folder as a Source."""
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"source: expected {HF_SYNTAX}, builtin:NAME or a path, got {spec!r}")
    if spec.startswith("hf:"):
        return _hf_source(spec, text_field, streaming)
    if spec.startswith("builtin:"):
        return _builtin_source(spec, seed)
    path = Path(spec).expanduser()
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]+):", spec)  # 2+ chars: never a Windows drive letter
    if scheme and not path.exists():
        raise DataError(f"{spec}: unknown source scheme '{scheme.group(1)}:' "
                        f"(use {HF_SYNTAX}, builtin:stories, or a local file or folder)")
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        return _folder_source(path, text_field)
    file_format(path)
    return Source(str(path), {"train": _file_stream(path, text_field)})


# hf:PATH[:config][@revision][?key=value&...]: PATH is a Hub name, a local folder (a save_to_disk folder, or files
# `datasets` builds from) or a packaged builder (json, csv, parquet, text, ...) whose files come with data_files.
_HF_SPEC = r"hf:([^:@?]+)(?::([\w.-]+))?(?:@([\w.-]+(?:/[\w.-]+)*))?(?:\?(.*))?"
_HUB_NAME = r"[\w.-]+(?:/[\w.-]+)?"
HF_SYNTAX = "hf:NAME[:config][@revision][?split=S&val_split=S&data_files=A,B&val_files=C&data_dir=D]"
# The query keys: what `datasets.load_dataset` takes, written as text.
HF_QUERY_KEYS = {
    "split": "the split to train on (any `datasets` split expression, e.g. train[:10%]); default train",
    "val_split": "the split to validate on; default: validation|valid|val|test when present, else held out",
    "data_files": "comma-separated files or globs of the train split (required by packaged builders)",
    "val_files": "comma-separated files or globs of the validation split",
    "data_dir": "the folder of a Hub dataset (or a packaged builder) to read",
}


@dataclass(frozen=True)
class HfSpec:
    """A parsed `hf:` source (see HF_SYNTAX)."""

    path: str  # Hub name, local folder or packaged builder
    config: str | None = None
    revision: str | None = None
    split: str | None = None
    val_split: str | None = None
    data_files: tuple[str, ...] = ()
    val_files: tuple[str, ...] = ()
    data_dir: str | None = None

    @property
    def local(self) -> Path | None:
        """The local folder or file PATH names, when it exists (it then wins over a Hub name, as in `datasets`)."""
        path = Path(self.path).expanduser()
        return path if path.exists() else None

    @property
    def saved(self) -> bool:
        """Whether PATH is a folder written by `Dataset(Dict).save_to_disk`."""
        local = self.local
        return local is not None and (
            (local / "dataset_dict.json").is_file() or (local / "state.json").is_file()
        )


def packaged_builders() -> set[str]:
    """The builders `datasets` ships (json, csv, parquet, text, arrow, ...): they read the files they are given."""
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    return set(_PACKAGED_DATASETS_MODULES)


def parse_hf(spec: str) -> HfSpec:
    """Parse HF_SYNTAX; a one-line DataError for a malformed spec or an unknown or repeated query key."""
    m = re.fullmatch(_HF_SPEC, spec)
    if not m:
        raise DataError(f"{spec}: expected {HF_SYNTAX}")
    path, config, revision, query = m.groups()
    fields: dict[str, Any] = {}
    for item in (query or "").split("&") if query is not None else []:
        key, eq, value = item.partition("=")
        if key not in HF_QUERY_KEYS:
            raise DataError(f"{spec}: unknown key {key!r} after '?' (known: {', '.join(HF_QUERY_KEYS)})")
        if not eq or not value.strip():
            raise DataError(f"{spec}: {key} needs a value ({key}=...: {HF_QUERY_KEYS[key]})")
        if key in fields:
            raise DataError(f"{spec}: {key} is given twice")
        files = key.endswith("_files")
        fields[key] = tuple(f.strip() for f in value.split(",") if f.strip()) if files else value.strip()
    hf = HfSpec(path, config, revision, **fields)
    if hf.local is None and not re.fullmatch(_HUB_NAME, path):
        raise DataError(f"{spec}: {path!r} is neither an existing local path nor a Hub name OWNER/NAME; "
                        f"expected {HF_SYNTAX}")
    return hf


def parse_hf_spec(spec: str) -> tuple[str, str | None]:
    """`hf:NAME[:config]...` → (dataset name or path, config or None); see parse_hf for the rest."""
    hf = parse_hf(spec)
    return hf.path, hf.config


def hf_revision(spec: str) -> str | None:
    """The `@revision` of an hf: spec (a branch, tag or commit, e.g. refs/convert/parquet), or None."""
    return parse_hf(spec).revision


def load_hub(spec: str, streaming: bool = False) -> dict[str, Any]:
    """The splits of the `hf:` source `spec` as `datasets` loads them: {"train": ..., "val": ... when the source
    has its own validation split}; a one-line DataError when it cannot be loaded or has no such split.

    A save_to_disk folder is opened with `datasets.load_from_disk` (memory-mapped; `streaming` does not apply);
    anything else goes through `datasets.load_dataset`: a Hub name, a local folder, or a packaged builder with
    its data_files (which it requires: without files `datasets` would scan the working folder)."""
    hf = parse_hf(spec)
    import datasets  # slow to import: only when an hf: source is asked for

    if hf.saved:
        return _saved_splits(spec, hf, datasets)
    if hf.path in packaged_builders() and hf.local is None and not (hf.data_files or hf.data_dir):
        raise DataError(
            f"{spec}: the packaged builder '{hf.path}' reads the files it is given: "
            f"hf:{hf.path}?data_files=PATH[,PATH...] (files or globs; val_files=... for a validation split)"
        )
    files = {"train": list(hf.data_files)} if hf.data_files else {}
    if hf.val_files:
        files["validation"] = list(hf.val_files)
    kwargs: dict[str, Any] = {"streaming": streaming}
    for key, value in (("revision", hf.revision), ("data_files", files or None), ("data_dir", hf.data_dir)):
        if value:
            kwargs[key] = value
    # A revision such as refs/convert/parquet reads the Hub's parquet export of a script-based dataset
    # (datasets >= 4 no longer runs loading scripts, e.g. the original Skylion007/openwebtext).
    path = str(hf.local) if hf.local is not None else hf.path
    try:
        if hf.split or hf.val_split:  # split expressions (train[:10%], train+test) need split=
            names = [hf.split or "train"] + ([hf.val_split] if hf.val_split else [])
            parts = datasets.load_dataset(path, hf.config, split=names, **kwargs)
            return dict(zip(("train", "val"), parts))
        dsets = datasets.load_dataset(path, hf.config, **kwargs)
    except Exception as e:  # network, auth, missing dataset, config, split or files: all one user-facing line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        hub = hf.local is None and hf.path not in packaged_builders()
        where = "from the Hugging Face Hub" if hub else "with datasets"
        raise DataError(f"{spec}: cannot load {where} ({type(e).__name__}: {msg})") from None
    return _named_splits(spec, {name: dsets[name] for name in dsets.keys()})


def _saved_splits(spec: str, hf: HfSpec, datasets: Any) -> dict[str, Any]:
    if hf.config or hf.revision or hf.data_files or hf.val_files or hf.data_dir:
        raise DataError(f"{spec}: a save_to_disk folder takes only split= and val_split= (no :config, @revision "
                        "or files)")
    try:
        saved = datasets.load_from_disk(str(hf.local))
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise DataError(f"{spec}: cannot load the save_to_disk folder ({type(e).__name__}: {msg})") from None
    splits = {"train": saved} if isinstance(saved, datasets.Dataset) else {name: saved[name] for name in saved}
    if hf.split or hf.val_split:
        chosen = {"train": hf.split or "train", **({"val": hf.val_split} if hf.val_split else {})}
        missing = [name for name in chosen.values() if name not in splits]
        if missing:
            raise DataError(f"{spec}: no split {missing[0]!r} in the saved dataset (splits: {', '.join(splits)}; "
                            "split expressions such as train[:10%] need a Hub or file source)")
        return {ours: splits[theirs] for ours, theirs in chosen.items()}
    return _named_splits(spec, splits)


def _named_splits(spec: str, splits: dict[str, Any]) -> dict[str, Any]:
    """`datasets`' split names → ours: train, and val from the first of HF_VAL_SPLITS the source has."""
    if "train" not in splits:
        raise DataError(f"{spec}: no 'train' split (splits: {', '.join(splits) or 'none'}; choose one with ?split=)")
    val = next((name for name in HF_VAL_SPLITS if name in splits), None)
    return {"train": splits["train"], **({"val": splits[val]} if val else {})}


def _hf_source(spec: str, text_field: str, streaming: bool) -> Source:
    splits = load_hub(spec, streaming)
    return Source(spec, {name: _hf_stream(spec, name, ds, text_field) for name, ds in splits.items()})


def _hf_stream(spec: str, split: str, ds: Any, text_field: str) -> DocumentStream:
    def gen() -> Iterator[Document]:
        for i, row in enumerate(ds):
            yield Document(_text_of(row, text_field, f"{spec} [{split}] row {i}"))

    try:
        expected = len(ds)
    except TypeError:  # streaming datasets have no length; their card often still says how many rows
        try:
            own = getattr(ds, "split", None)  # the dataset's own name for the split (ours may be "val")
            expected = int(ds.info.splits[str(own) if own else split].num_examples) or None
        except Exception:  # no info, no splits, or not that split: progress without an ETA
            expected = None
    return DocumentStream(gen, f"{spec} [{split}]", expected)


def _builtin_source(spec: str, seed: int) -> Source:
    name = spec.split(":", 1)[1]
    if name != "stories":
        raise DataError(f"{spec}: unknown built-in corpus {name!r} (known: stories)")
    from lmcore.data import builtin_stories

    def stream(start: int) -> Iterator[Document]:
        for s in builtin_stories.iter_stories(seed, None, start):
            yield Document(s.text, s.logprob)

    return Source(spec, {
        "train": DocumentStream(lambda: stream(0), f"{spec} [train]"),
        "val": DocumentStream(lambda: stream(BUILTIN_VAL_START), f"{spec} [val]"),
    }, unlimited=True)


# ---------------------------------------------------------------- local files and folders

def file_format(path: Path, formats: tuple[str, ...] = FORMATS) -> tuple[str, bool]:
    """(format suffix, gzipped) of a data file, or DataError when it is not one of `formats`."""
    name = path.name.lower()
    gz = name.endswith(".gz")
    stem = name[:-3] if gz else name
    for fmt in formats:
        if stem.endswith(fmt):
            return fmt, gz
    raise DataError(f"{path}: unsupported file type (use {', '.join(formats)}, optionally .gz)")


def is_data_file(path: Path) -> bool:
    """Whether `path` is a data file of a supported format (see file_format)."""
    try:
        file_format(path)
        return True
    except DataError:
        return False


def _folder_source(folder: Path, text_field: str) -> Source:
    files = sorted(
        (p for p in folder.rglob("*")
         if p.is_file() and is_data_file(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts)),
        key=lambda p: p.relative_to(folder).as_posix(),
    )
    if not files:
        raise DataError(f"{folder}: no data files ({', '.join(FORMATS)}, optionally .gz) in this folder")
    train = [p for p in files if p.name.lower().startswith("train")]
    val = [p for p in files if p.name.lower().startswith("val")]  # val*, valid*, validation*
    if train and val:  # the folder has its own split; other files (e.g. test*) are left out
        splits = {"train": _files_stream(folder, train, text_field, "train"),
                  "val": _files_stream(folder, val, text_field, "val")}
    else:
        splits = {"train": _files_stream(folder, files, text_field, "train")}
    return Source(str(folder), splits)


def _files_stream(folder: Path, files: list[Path], text_field: str, split: str) -> DocumentStream:
    sizes = [p.stat().st_size for p in files]
    meter = ReadMeter(sum(sizes))
    streams = [_file_stream(p, text_field, meter, sum(sizes[:i])) for i, p in enumerate(files)]
    return DocumentStream(lambda: itertools.chain.from_iterable(streams), f"{folder} [{split}]", meter=meter)


def _file_stream(path: Path, text_field: str, meter: ReadMeter | None = None, base: int = 0) -> DocumentStream:
    fmt, gz = file_format(path)
    if meter is None:
        meter = ReadMeter(path.stat().st_size)
    reader: Callable[[], Iterator[Document]]
    if fmt == ".txt":
        reader = _TextFile(path, gz, meter, base)
    elif fmt == ".jsonl":
        reader = lambda: _read_jsonl(path, gz, text_field, meter, base)  # noqa: E731
    elif fmt == ".json":
        reader = lambda: _read_json(path, gz, text_field)  # noqa: E731
    else:
        reader = lambda: _read_parquet(path, gz, text_field)  # noqa: E731
    return DocumentStream(lambda: _metered(path, reader(), meter, base), str(path), meter=meter)


def _metered(path: Path, docs: Iterator[Document], meter: ReadMeter, base: int) -> Iterator[Document]:
    meter.done = base  # a new pass (or the next file of a folder) starts here
    yield from _nonempty(path, docs)
    meter.done = base + path.stat().st_size


def _nonempty(path: Path, docs: Iterator[Document]) -> Iterator[Document]:
    n = 0
    for n, doc in enumerate(docs, 1):
        yield doc
    if n == 0:
        raise DataError(f"{path}: no documents in this file")


def read_lines(path: Path, gz: bool, meter: ReadMeter | None = None, base: int = 0) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) pairs, read lazily; decoding and gzip errors name the file and line."""
    lineno = 0
    try:
        # Binary lines decoded one by one: a text-mode reader decodes ahead and would blame the wrong line.
        with open(path, "rb") as raw_file, (gzip.GzipFile(fileobj=raw_file, mode="rb") if gz else raw_file) as f:
            for lineno, raw in enumerate(f, 1):
                if meter is not None and lineno % 64 == 0:  # tell() per line would cost more than it tells
                    meter.done = base + raw_file.tell()
                line = raw.decode("utf-8")
                if line.endswith("\r\n"):
                    line = line[:-2] + "\n"
                yield lineno, line.lstrip("\ufeff") if lineno == 1 else line
    except UnicodeDecodeError as e:
        raise DataError(f"{path}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e})") from None


def read_text(path: Path, gz: bool) -> str:
    """A whole (optionally gzipped) UTF-8 file as text, without a BOM; errors name the file (and the line)."""
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            raw = f.read().removeprefix(codecs.BOM_UTF8)
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line, column = raw.count(b"\n", 0, e.start) + 1, e.start - (raw.rfind(b"\n", 0, e.start) + 1)
        raise DataError(f"{path}:{line}: not valid UTF-8 ({e.reason} at byte {column})") from None


class Record(NamedTuple):
    """One record of a JSON or JSON Lines file: its index, the line where it starts (None when unknown), its value."""

    index: int
    line: int | None
    value: Any


def jsonl_records(path: Path, gz: bool, meter: ReadMeter | None = None, base: int = 0,
                  skip_invalid: Callable[[str], None] | None = None) -> Iterator[Record]:
    """The records of a JSON Lines file, read lazily; blank lines are skipped.

    A line that is not valid JSON is a DataError naming file:line, or, with `skip_invalid`, is passed over after
    `skip_invalid` receives that message (to count it)."""
    index = 0
    for lineno, line in read_lines(path, gz, meter, base):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            message = f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})"
            if skip_invalid is None:
                raise DataError(message) from None
            skip_invalid(message)
            continue
        yield Record(index, lineno, value)
        index += 1


_SPACE = re.compile(r"\s*")


def json_records(path: Path, gz: bool) -> Iterator[Record]:
    """The records of a JSON file holding a list of records, or an object with a "data" list.

    A list is decoded one record at a time (json.JSONDecoder.raw_decode), so each record knows the line it
    starts on and only one decoded record is held at once; an object is parsed whole (its records have no line).
    """
    text = read_text(path, gz)
    pos = _SPACE.match(text).end()
    if not text.startswith("[", pos):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
        records = data.get("data") if isinstance(data, dict) else None
        if not isinstance(records, list):
            raise DataError(f"{path}: expected a JSON list of records or an object with a \"data\" list")
        yield from (Record(i, None, r) for i, r in enumerate(records))
        return
    decoder = json.JSONDecoder()
    pos, line, counted, index = _SPACE.match(text, pos + 1).end(), 1, 0, 0
    closed = text.startswith("]", pos)
    while not closed:
        line += text.count("\n", counted, pos)  # counted incrementally: linear in the file's size
        counted = pos
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
        yield Record(index, line, value)
        index += 1
        pos = _SPACE.match(text, end).end()
        if text.startswith(",", pos):
            pos = _SPACE.match(text, pos + 1).end()
        elif text.startswith("]", pos):
            closed = True
        else:
            where = line + text.count("\n", counted, pos)
            raise DataError(f"{path}:{where}: invalid JSON (expected ',' or ']' after record {index - 1})")
    end = _SPACE.match(text, pos + 1).end()
    if end < len(text):
        where = text.count("\n", 0, end) + 1
        raise DataError(f"{path}:{where}: invalid JSON (extra data after the list)")


def _text_of(record: Any, text_field: str, where: str) -> str:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object with a \"{text_field}\" field, got {type(record).__name__}")
    if text_field not in record:
        raise DataError(f"{where}: no \"{text_field}\" field")
    text = record[text_field]
    if not isinstance(text, str):
        raise DataError(f"{where}: \"{text_field}\" is {type(text).__name__}, expected a string")
    return text


class _TextFile:
    """Documents of a .txt file: separated by <|endoftext|> lines, or one per line when it has none."""

    def __init__(self, path: Path, gz: bool, meter: ReadMeter | None = None, base: int = 0) -> None:
        self.path, self.gz, self.meter, self.base = path, gz, meter, base
        self._separated: bool | None = None  # decided once per file by a scan (see __call__)

    def __call__(self) -> Iterator[Document]:
        if self._separated is None:
            # A scan that stops at the first separator: cheap for separated files; a second pass over a
            # one-per-line file keeps memory constant where buffering until EOF would not.
            self._separated = any(SEPARATOR in line for _, line in read_lines(self.path, self.gz))
        return self._by_separator() if self._separated else self._by_line()

    def _by_line(self) -> Iterator[Document]:
        for _, line in read_lines(self.path, self.gz, self.meter, self.base):
            if line.strip():
                yield Document(line.strip())

    def _by_separator(self) -> Iterator[Document]:
        buf: list[str] = []
        for _, line in read_lines(self.path, self.gz, self.meter, self.base):
            # Normally the separator is a line of its own; GPT-2 style dumps also put it inline.
            *done, rest = line.split(SEPARATOR)
            for part in done:
                buf.append(part)
                text = "".join(buf).strip()
                if text:
                    yield Document(text)
                buf = []
            buf.append(rest)
        text = "".join(buf).strip()
        if text:
            yield Document(text)


def _read_jsonl(path: Path, gz: bool, text_field: str, meter: ReadMeter | None = None,
                base: int = 0) -> Iterator[Document]:
    for record in jsonl_records(path, gz, meter, base):
        yield Document(_text_of(record.value, text_field, f"{path}:{record.line}"))


def _read_json(path: Path, gz: bool, text_field: str) -> Iterator[Document]:
    for r in json_records(path, gz):
        yield Document(r.value if isinstance(r.value, str) else _text_of(r.value, text_field, f"{path}: record {r.index}"))


def _read_parquet(path: Path, gz: bool, text_field: str) -> Iterator[Document]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # Parquet needs random access; a gzipped one (unusual: parquet compresses itself) is inflated in memory.
        pf = pq.ParquetFile(io.BytesIO(gzip.decompress(path.read_bytes())) if gz else path)
    except (pa.ArrowException, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable parquet file ({e})") from None
    schema = pf.schema_arrow
    if text_field not in schema.names:
        raise DataError(f"{path}: no \"{text_field}\" column (columns: {', '.join(schema.names)})")
    kind = schema.field(text_field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(f"{path}: column \"{text_field}\" is {kind}, expected a string column")
    row = 0
    for batch in pf.iter_batches(columns=[text_field], batch_size=4096):
        for text in batch.column(0).to_pylist():
            if text is None:
                raise DataError(f"{path}: row {row}: \"{text_field}\" is null")
            yield Document(text)
            row += 1


# ---------------------------------------------------------------- train/val split

def is_val_index(seed: int, index: int, val_fraction: float) -> bool:
    """Whether document `index` is held out: a hash of (seed, index) falls below val_fraction."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") < val_fraction * 2.0**64


def split_documents(
    source: Source, max_docs: int | None, val_fraction: float, seed: int
) -> tuple[DocumentStream, DocumentStream]:
    """(train, val) document streams; deterministic, disjoint and streaming (no shuffle in memory).

    Without its own val split, the source's first `max_docs` documents (all when None) are read and
    document i goes to val when is_val_index(seed, i, val_fraction). With its own val split, max_docs
    caps train, and val holds max(ceil(max_docs * val_fraction), MIN_OWN_VAL_DOCS) documents (all of
    them when max_docs is None), so a large hub val split does not dwarf a small training subset.
    """
    if max_docs is not None and (isinstance(max_docs, bool) or not isinstance(max_docs, int) or max_docs < 1):
        raise DataError(f"max_docs: must be a positive integer or null, got {max_docs!r}")
    if not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction: must be in [0, 1), got {val_fraction!r}")
    if source.unlimited and max_docs is None:
        raise DataError(f"max_docs: required for {source.name} (a generated corpus never ends)")
    if source.has_own_val_split:
        n_val = None if max_docs is None else max(math.ceil(max_docs * val_fraction), MIN_OWN_VAL_DOCS)
        return _capped(source.splits["train"], max_docs), _capped(source.splits["val"], n_val)

    docs = source.splits["train"]

    def part(to_val: bool) -> Iterator[Document]:
        for i, doc in enumerate(itertools.islice(docs, max_docs)):
            if is_val_index(seed, i, val_fraction) == to_val:
                yield doc

    total = max_docs if docs.expected is None else min(docs.expected, max_docs or docs.expected)
    n_val = None if total is None else round(total * val_fraction)  # an estimate, for progress bars
    return (DocumentStream(lambda: part(False), f"{source.name} [train]", None if total is None else total - n_val,
                           docs.meter),
            DocumentStream(lambda: part(True), f"{source.name} [val]", n_val, docs.meter))


def iter_splits(source: Source, max_docs: int | None, val_fraction: float,
                seed: int) -> Iterator[tuple[str, Document]]:
    """(split, document) pairs in ONE pass over the source: exactly split_documents' train and val, each in order.

    A source with its own val split yields its (capped) train documents, then its val documents.
    """
    train, val = split_documents(source, max_docs, val_fraction, seed)
    if source.has_own_val_split:
        yield from (("train", d) for d in train)
        yield from (("val", d) for d in val)
        return
    for i, doc in enumerate(itertools.islice(source.splits["train"], max_docs)):
        yield ("val" if is_val_index(seed, i, val_fraction) else "train"), doc


def _capped(stream: DocumentStream, n: int | None) -> DocumentStream:
    if n is None:
        return stream
    expected = n if stream.expected is None else min(n, stream.expected)
    return DocumentStream(lambda: itertools.islice(stream, n), stream.name, expected, stream.meter)


def texts(docs: Iterable[Document]) -> Iterator[str]:
    """Just the text of each document."""
    return (d.text for d in docs)
