"""Sources: every local format (plain and .gz), folders, hub and builtin plumbing, bad inputs, the seeded split."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmcore.data import Document, open_source, split_documents
from lmcore.data.sources import BUILTIN_VAL_START, MIN_OWN_VAL_DOCS, is_val_index, json_records, parse_hf_spec
from lmcore.errors import DataError

DOCS = ["First story.\nIt has two lines.", "Second story: ünïcödé 🙂", "Third story."]


def write(path: Path, data: str | bytes) -> Path:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def texts(spec, split: str = "train", **kw) -> list[str]:
    return [d.text for d in open_source(str(spec), **kw).iter(split)]


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


FORMATS = {
    "txt": lambda: "\n<|endoftext|>\n".join(DOCS) + "\n<|endoftext|>\n",
    "jsonl": lambda: "\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(DOCS)) + "\n\n",
    "json": lambda: json.dumps([{"text": t} for t in DOCS]),
    "parquet": lambda: parquet_bytes(pa.table({"id": [1, 2, 3], "text": DOCS})),
}


@pytest.mark.parametrize("gz", ["", ".gz"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_local_format(tmp_path, fmt, gz):
    path = write(tmp_path / f"docs.{fmt}{gz}", FORMATS[fmt]())
    src = open_source(str(path))
    assert src.name == str(path) and not src.has_own_val_split
    assert [d.text for d in src.iter("train")] == DOCS
    assert list(src.iter("train")) == [Document(t, None) for t in DOCS]  # re-iterable, reads afresh


def test_txt_separators_and_one_per_line(tmp_path):
    sep = write(tmp_path / "sep.txt", "  a\n\nstill a \n  <|endoftext|>  \r\n<|endoftext|>\nb<|endoftext|>c\n")
    assert texts(sep) == ["a\n\nstill a", "b", "c"]  # stripped, empty docs skipped, inline separator split
    lines = write(tmp_path / "lines.txt.gz", "\ufeffone\n\n  two  \r\nthree")
    assert texts(lines) == ["one", "two", "three"]


def test_json_variants_and_text_field(tmp_path):
    assert texts(write(tmp_path / "d.json", json.dumps({"data": [{"text": "x"}, "y"]}))) == ["x", "y"]
    p = write(tmp_path / "d.jsonl", '{"body": "x"}\n{"body": "y"}\n')
    assert texts(p, text_field="body") == ["x", "y"]


def test_folder_with_own_splits(tmp_path):
    write(tmp_path / "train-00001.jsonl", '{"text": "t2"}\n')
    write(tmp_path / "train-00000.jsonl.gz", '{"text": "t1"}\n')
    write(tmp_path / "validation.txt", "v1\nv2\n")
    write(tmp_path / "test.txt", "left out\n")
    write(tmp_path / "README.md", "not data")
    src = open_source(str(tmp_path))
    assert src.has_own_val_split
    assert texts(tmp_path) == ["t1", "t2"] and texts(tmp_path, "val") == ["v1", "v2"]
    assert [d.text for d in split_documents(src, None, 0.5, 0)[1]] == ["v1", "v2"]


def test_folder_without_splits_is_all_train(tmp_path):
    write(tmp_path / "b.txt", "b1\nb2\n")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "a.json.gz", json.dumps(["a1"]))
    (tmp_path / ".cache").mkdir()
    write(tmp_path / ".cache" / "x.txt", "hidden\n")
    src = open_source(str(tmp_path))
    assert not src.has_own_val_split and list(src.splits) == ["train"]
    assert texts(tmp_path) == ["b1", "b2", "a1"]  # sorted by relative path: "b.txt" < "sub/a.json.gz"


def bad(tmp_path: Path, name: str, data: str | bytes) -> str:
    return str(write(tmp_path / name, data))


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("d.jsonl", '{"text": "ok"}\n\n{"text": oops}\n', r"d.jsonl:3: invalid JSON \(Expecting value"),
        ("d.jsonl", '{"text": "ok"}\n{"body": "x"}\n', r'd.jsonl:2: no "text" field'),
        ("d.jsonl", '{"text": 3}\n', r'd.jsonl:1: "text" is int, expected a string'),
        ("d.jsonl", '["text"]\n', r"d.jsonl:1: expected a JSON object"),
        ("d.jsonl.gz", '{"text": "a"}\n{"text": "b"', r"d.jsonl.gz:2: invalid JSON"),
        ("d.jsonl", "\n  \n", r"d.jsonl: no documents"),
        ("d.txt", "", r"d.txt: no documents"),
        ("d.txt", "<|endoftext|>\n \n<|endoftext|>\n", r"d.txt: no documents"),
        ("d.txt", b"good line\nbad \xff byte\n", r"d.txt:2: not valid UTF-8"),
        ("d.json", '{"rows": []}', r'd.json: expected a JSON list of records or an object with a "data" list'),
        ("d.json", '[{"text": "a"},\n {"txt": "b"}]', r'd.json: record 1: no "text" field'),
        ("d.json", "[\n{,", r"d.json:2: invalid JSON"),
        ("d.json", "[]", r"d.json: no documents"),
        ("d.parquet", parquet_bytes(pa.table({"body": ["x"]})), r'd.parquet: no "text" column \(columns: body\)'),
        ("d.parquet", parquet_bytes(pa.table({"text": [1, 2]})), r'd.parquet: column "text" is int64'),
        ("d.parquet", parquet_bytes(pa.table({"text": ["a", None]})), r'd.parquet: row 1: "text" is null'),
        ("d.parquet", b"PAR1 garbage", r"d.parquet: not a readable parquet file"),
    ],
)
def test_bad_records_name_file_and_line(tmp_path, name, data, message):
    with pytest.raises(DataError, match=message):
        texts(bad(tmp_path, name, data))


def test_json_records_know_their_lines(tmp_path):
    path = write(tmp_path / "d.json.gz", '\ufeff[\n {"a": 1},\n\n {"b": 2}, {"c": 3}\n]\n')
    assert [(r.index, r.line, r.value) for r in json_records(path, True)] == [
        (0, 2, {"a": 1}),
        (1, 4, {"b": 2}),
        (2, 4, {"c": 3}),
    ]
    with pytest.raises(DataError, match=r"e.json:2: invalid JSON \(extra data after the list\)"):
        list(json_records(write(tmp_path / "e.json", "[1]\n[2]"), False))
    with pytest.raises(DataError, match=r"f.json:1: invalid JSON \(Expecting value"):
        list(json_records(write(tmp_path / "f.json", "[1, ]"), False))


def test_bad_specs(tmp_path):
    with pytest.raises(DataError, match=r"nowhere.jsonl: no such file or folder"):
        open_source(str(tmp_path / "nowhere.jsonl"))
    with pytest.raises(DataError, match=r"data.csv: unsupported file type"):
        open_source(bad(tmp_path, "data.csv", "a,b\n"))
    with pytest.raises(DataError, match=r"foo:bar: unknown source scheme 'foo:'"):
        open_source("foo:bar")
    with pytest.raises(DataError, match=r"builtin:poems: unknown built-in corpus"):
        open_source("builtin:poems")
    (tmp_path / "fake.txt.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"fake.txt.gz: cannot read \(BadGzipFile"):
        texts(tmp_path / "fake.txt.gz")
    (tmp_path / "empty").mkdir()
    write(tmp_path / "empty" / "notes.md", "no data here")
    with pytest.raises(DataError, match=r"empty: no data files"):
        open_source(str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"source: expected"):
        open_source("")


def test_hf_spec_parsing():
    assert parse_hf_spec("hf:roneneldan/TinyStories") == ("roneneldan/TinyStories", None)
    assert parse_hf_spec("hf:Salesforce/wikitext:wikitext-103-raw-v1") == ("Salesforce/wikitext", "wikitext-103-raw-v1")
    assert parse_hf_spec("hf:openwebtext") == ("openwebtext", None)
    for spec in ("hf:", "hf:a/b/c", "hf:a/b:", "hf:a b"):
        with pytest.raises(DataError, match="expected hf:NAME"):
            open_source(spec)


class FakeSplit(list):
    """Stands in for a datasets.Dataset: iterable rows, a length."""


def test_hf_plumbing(monkeypatch):
    import datasets

    calls = []

    def fake_load(name, config=None, streaming=False):
        calls.append((name, config, streaming))
        return {
            "train": FakeSplit([{"text": "a"}, {"text": "b"}]),
            "test": FakeSplit([{"text": "c"}]),
            "valid": FakeSplit([{"text": "v"}]),
        }

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    src = open_source("hf:owner/name:cfg", streaming=True)
    assert calls == [("owner/name", "cfg", True)]
    assert src.has_own_val_split and src.splits["train"].expected == 2
    assert texts("hf:owner/name") == ["a", "b"] and texts("hf:owner/name", "val") == ["v"]  # valid before test

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: {"train": [{"content": "x"}]})
    assert not open_source("hf:o/n").has_own_val_split
    assert texts("hf:o/n", text_field="content") == ["x"]
    with pytest.raises(DataError, match=r'hf:o/n \[train\] row 0: no "text" field'):
        texts("hf:o/n")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: {"validation": []})
    with pytest.raises(DataError, match=r"hf:o/n: no 'train' split \(splits: validation; choose one with \?split=\)"):
        open_source("hf:o/n")

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach the Hub\nsecond line")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(
        DataError,
        match=r"hf:o/n: cannot load from the Hugging Face Hub \(ConnectionError: "
        r"Couldn't reach the Hub\)$",
    ):
        open_source("hf:o/n")


def test_builtin_stories_with_logprob():
    src = open_source("builtin:stories", seed=7)
    assert src.has_own_val_split and src.unlimited
    train, val = split_documents(src, 50, 0.1, seed=7)
    t, v = list(train), list(val)
    assert len(t) == 50 and len(v) == MIN_OWN_VAL_DOCS
    assert all(d.logprob is not None and d.logprob < 0 for d in t + v)
    assert t == list(train)  # deterministic
    from lmcore.data.builtin_stories import story

    assert t[3] == Document(*story(7, 3)) and v[0] == Document(*story(7, BUILTIN_VAL_START))
    assert next(open_source("builtin:stories", seed=8).iter("train")).text != t[0].text  # seed picks the corpus
    with pytest.raises(DataError, match="max_docs: required for builtin:stories"):
        split_documents(src, None, 0.1, 7)


def test_seeded_split_is_deterministic_disjoint_and_streaming(tmp_path):
    path = write(tmp_path / "d.jsonl", "".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(2000)))
    src = open_source(str(path))
    train, val = split_documents(src, None, 0.1, seed=3)
    t, v = [d.text for d in train], [d.text for d in val]
    assert not set(t) & set(v) and len(t) + len(v) == 2000
    assert 150 < len(v) < 250
    assert [d.text for d in split_documents(src, None, 0.1, seed=3)[1]] == v  # same seed, same split
    assert [d.text for d in split_documents(src, None, 0.1, seed=4)[1]] != v
    assert v == [f"doc {i}" for i in range(2000) if is_val_index(3, i, 0.1)]  # order kept, no shuffle
    # max_docs caps the documents read (train + val), and the first documents keep their assignment.
    t5, v5 = (list(s) for s in split_documents(src, 500, 0.1, seed=3))
    assert len(t5) + len(v5) == 500 and [d.text for d in v5] == v[: len(v5)]


def test_own_val_split_caps(tmp_path):
    write(tmp_path / "train.jsonl", "".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(100)))
    write(tmp_path / "val.jsonl", "".join(json.dumps({"text": f"v{i}"}) + "\n" for i in range(300)))
    src = open_source(str(tmp_path))
    t, v = (list(s) for s in split_documents(src, 40, 0.01, 0))
    assert len(t) == 40 and len(v) == MIN_OWN_VAL_DOCS
    t, v = (list(s) for s in split_documents(src, None, 0.01, 0))
    assert len(t) == 100 and len(v) == 300


@pytest.mark.parametrize(
    "max_docs, val_fraction, message",
    [
        (0, 0.1, "max_docs: must be a positive integer"),
        (10, 1.0, r"val_fraction: must be in \[0, 1\)"),
        (10, -0.1, r"val_fraction: must be in \[0, 1\)"),
    ],
)
def test_bad_split_parameters(tmp_path, max_docs, val_fraction, message):
    src = open_source(str(write(tmp_path / "d.txt", "a\nb\n")))
    with pytest.raises(DataError, match=message):
        split_documents(src, max_docs, val_fraction, 0)


def test_real_samples(shared_data):
    ts = open_source(str(shared_data / "tinystories" / "train.jsonl.gz"))
    docs = list(ts.iter("train"))
    assert len(docs) == 1727 and docs[0].text.startswith("Once upon a time there was a little boy named Ben")
    alpaca = open_source(str(shared_data / "alpaca" / "alpaca_data_first2000.json.gz"), text_field="instruction")
    assert next(alpaca.iter("train")).text == "Give three tips for staying healthy."
    owt = list(open_source(str(shared_data / "openwebtext" / "first100_docs_raw.txt.gz")).iter("train"))
    assert len(owt) > 100  # no separators: one document per non-empty line


# ---------------------------------------------------------------- hf: sources that `datasets` reads locally


def test_hf_query_syntax():
    from lmcore.data.sources import parse_hf

    hf = parse_hf("hf:HuggingFaceFW/fineweb:sample-10BT@main?split=train[:1%]&val_split=train[99%:]")
    assert (hf.path, hf.config, hf.revision, hf.split, hf.val_split) == (
        "HuggingFaceFW/fineweb",
        "sample-10BT",
        "main",
        "train[:1%]",
        "train[99%:]",
    )
    assert parse_hf("hf:json?data_files=a.jsonl, b/*.jsonl&val_files=c.jsonl").data_files == ("a.jsonl", "b/*.jsonl")
    with pytest.raises(DataError, match=r"hf:json\?files=a: unknown key 'files' after '\?' \(known: split, val_split"):
        open_source("hf:json?files=a")
    with pytest.raises(DataError, match=r"split is given twice"):
        open_source("hf:o/n?split=a&split=b")
    with pytest.raises(DataError, match=r"data_files needs a value"):
        open_source("hf:json?data_files=")


def test_packaged_builder_without_files_is_refused_before_loading(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("must not scan the working folder"))
    for builder in ("json", "parquet", "csv", "text"):
        with pytest.raises(
            DataError,
            match=rf"^hf:{builder}: the packaged builder '{builder}' reads the files it is "
            rf"given: hf:{builder}\?data_files=PATH",
        ):
            open_source(f"hf:{builder}")


def test_hf_json_and_parquet_with_data_files(tmp_path):
    a = write(tmp_path / "a.jsonl", "".join(json.dumps({"text": f"a{i}"}) + "\n" for i in range(3)))
    b = write(tmp_path / "b.jsonl", json.dumps({"text": "b0"}) + "\n")
    src = open_source(f"hf:json?data_files={a},{b}")
    assert not src.has_own_val_split and [d.text for d in src.iter()] == ["a0", "a1", "a2", "b0"]
    pq.write_table(pa.table({"body": ["p0", "p1", "p2"]}), tmp_path / "train.parquet")
    pq.write_table(pa.table({"body": ["v0"]}), tmp_path / "val.parquet")
    spec = f"hf:parquet?data_files={tmp_path}/train*.parquet&val_files={tmp_path / 'val.parquet'}"
    src = open_source(spec, text_field="body")
    assert [d.text for d in src.iter("train")] == ["p0", "p1", "p2"] and [d.text for d in src.iter("val")] == ["v0"]
    sliced = open_source(f"hf:json?data_files={a}&split=train[:2]&val_split=train[2:]")
    assert [d.text for d in sliced.iter("train")] == ["a0", "a1"] and [d.text for d in sliced.iter("val")] == ["a2"]
    write(tmp_path / "t.txt", "line one\nline two\n")
    assert [d.text for d in open_source(f"hf:text?data_files={tmp_path / 't.txt'}").iter()] == ["line one", "line two"]
    with pytest.raises(DataError, match=r"hf:json\?data_files=.*missing.jsonl: cannot load with datasets \("):
        open_source(f"hf:json?data_files={tmp_path / 'missing.jsonl'}")


def test_hf_save_to_disk_folders_and_local_folders(tmp_path):
    import datasets

    saved = tmp_path / "saved"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": ["s0", "s1"]}),
            "validation": datasets.Dataset.from_dict({"text": ["sv"]}),
            "extra": datasets.Dataset.from_dict({"text": ["e0"]}),
        }
    ).save_to_disk(str(saved))
    src = open_source(f"hf:{saved}")
    assert [d.text for d in src.iter("train")] == ["s0", "s1"] and [d.text for d in src.iter("val")] == ["sv"]
    chosen = open_source(f"hf:{saved}?split=extra")
    assert [d.text for d in chosen.iter()] == ["e0"] and not chosen.has_own_val_split
    with pytest.raises(DataError, match=r"no split 'nope' in the saved dataset \(splits: train, validation, extra"):
        open_source(f"hf:{saved}?split=nope")
    with pytest.raises(DataError, match=r"a save_to_disk folder takes only split= and val_split="):
        open_source(f"hf:{saved}:cfg")
    one = tmp_path / "one"
    datasets.Dataset.from_dict({"text": ["only"]}).save_to_disk(str(one))  # a single Dataset: the train split
    assert [d.text for d in open_source(f"hf:{one}").iter()] == ["only"]

    folder = tmp_path / "repo"  # a local folder of files after hf:, read as `datasets` reads a Hub repo
    folder.mkdir()
    write(folder / "train.jsonl", json.dumps({"text": "r0"}) + "\n")
    write(folder / "validation.jsonl", json.dumps({"text": "rv"}) + "\n")
    src = open_source(f"hf:{folder}")
    assert [d.text for d in src.iter("train")] == ["r0"] and [d.text for d in src.iter("val")] == ["rv"]


def test_instruction_sources_take_the_same_hf_forms(tmp_path):
    from lmcore.data.instruct_sources import iter_examples

    rows = [{"instruction": f"Say {i}", "input": "", "output": str(i)} for i in range(3)]
    path = write(tmp_path / "alpaca.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    examples = list(iter_examples(f"hf:json?data_files={path}"))
    assert [(e.instruction, e.output) for e in examples] == [("Say 0", "0"), ("Say 1", "1"), ("Say 2", "2")]
