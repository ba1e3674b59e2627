"""Web-scale preparation: the OpenWebText sample with 1 and 2 workers, the prep_openwebtext stage, kills, blocks."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lmcore.data import MemmapCorpus, MemmapDataset, load_meta, open_source, prepare_corpus, split_documents
from lmcore.data.sources import hf_revision, iter_splits, parse_hf_spec
from lmcore.errors import DataError
from lmcore.tokenizer import EOS_ID, decode, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "stages" / "prep_openwebtext.py"
FILES = ["meta.json", "tokenizer.json", "train.bin", "train.idx", "val.bin", "val.idx"]
OWT = dict(vocab_size=1024, max_docs=None, val_fraction=0.05, seed=3, progress=False, batch_size=97)


@pytest.fixture(scope="module")
def owt(shared_data) -> Path:
    return shared_data / "openwebtext"


@pytest.fixture(scope="module")
def prepared(owt, tmp_path_factory) -> dict[int, Path]:
    """The whole OpenWebText sample folder prepared with 1 and with 2 workers."""
    root = tmp_path_factory.mktemp("owt")
    for w in (1, 2):
        prepare_corpus(str(owt), root / f"w{w}", num_workers=w, max_seq_len=64, **OWT)
    return {1: root / "w1", 2: root / "w2"}


def test_one_and_two_workers_give_identical_bytes(prepared):
    for name in FILES:
        assert (prepared[1] / name).read_bytes() == (prepared[2] / name).read_bytes(), name
    meta = load_meta(prepared[1])
    assert meta["max_seq_len"] == 64 and meta["splits"]["train"]["tokens"] > 100_000


def test_sample_content_round_trips(prepared, owt):
    meta = load_meta(prepared[2])
    tok = load_tokenizer(prepared[2])
    train, val = split_documents(open_source(str(owt)), None, 0.05, 3)
    for split, docs in (("train", train), ("val", val)):
        docs = list(docs)
        c = MemmapCorpus(prepared[2], split)
        assert c.num_documents == len(docs) == meta["splits"][split]["documents"]
        assert meta["splits"][split]["text_bytes"] == sum(len(d.text.encode()) for d in docs)
        assert np.count_nonzero(np.asarray(c.tokens) == EOS_ID) == c.num_documents  # <eos> between documents only
        for i in (0, len(docs) // 3, len(docs) - 1):
            assert decode(tok, c.document(i), stop_at_eos=False) == docs[i].text


def test_iter_splits_is_split_documents_in_one_pass(owt):
    src = open_source(str(owt))
    pairs = list(iter_splits(src, 700, 0.1, 5))
    train, val = split_documents(src, 700, 0.1, 5)
    assert [d for s, d in pairs if s == "train"] == list(train) and [d for s, d in pairs if s == "val"] == list(val)
    assert len(pairs) == 700
    own = open_source("builtin:stories", seed=1)
    got = list(iter_splits(own, 30, 0.1, 1))
    t, v = split_documents(own, 30, 0.1, 1)
    assert got == [("train", d) for d in t] + [("val", d) for d in v]


def test_read_meter_measures_local_files(owt):
    stream = open_source(str(owt)).splits["train"]
    assert stream.meter is not None and stream.meter.total == sum(p.stat().st_size for p in owt.iterdir())
    seen = []
    for i, _ in enumerate(stream):
        if i % 500 == 0:
            seen.append(stream.meter.fraction())
    assert seen[0] < 0.1 and seen == sorted(seen) and 0.3 < seen[len(seen) // 2] < 1.0
    assert stream.meter.fraction() == 1.0


def test_memmap_dataset_blocks(prepared):
    ds = MemmapDataset(prepared[1], "train")  # block_size from meta.json max_seq_len
    corpus = MemmapCorpus(prepared[1], "train")
    assert ds.block_size == 64 and len(ds) == (corpus.num_tokens - 1) // 64
    b0, b1, last = ds[0], ds[1], ds[-1]
    assert b0.dtype == torch.int64 and b0.shape == (65,)
    assert b0[-1] == b1[0]  # consecutive blocks overlap by the one target token
    assert torch.equal(
        last, torch.from_numpy(np.asarray(corpus.tokens[(len(ds) - 1) * 64 : len(ds) * 64 + 1], dtype=np.int64))
    )
    loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=False, num_workers=1)  # pickles by path
    assert torch.equal(next(iter(loader)), torch.stack([ds[i] for i in range(8)]))
    assert MemmapDataset(prepared[1], "val", block_size=16, overlap=0)[0].shape == (16,)
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(DataError, match="fewer than one block"):
        MemmapDataset(prepared[1], "val", block_size=10**9)


def test_max_seq_len_larger_than_a_split_is_an_error(owt, tmp_path):
    with pytest.raises(DataError, match=r"the val split has \d+ tokens, fewer than one block"):
        prepare_corpus(str(owt / "sample.jsonl.gz"), tmp_path / "out", **dict(OWT, max_docs=200, max_seq_len=4000))
    assert not (tmp_path / "out").exists()


def test_given_tokenizer_is_reused(prepared, owt, tmp_path):
    meta = prepare_corpus(
        str(owt / "sample.jsonl.gz"),
        tmp_path / "reuse",
        **dict(OWT, vocab_size=0),
        tokenizer=prepared[1] / "tokenizer.json",
    )
    assert meta["tokenizer_identity"] == load_meta(prepared[1])["tokenizer_identity"]
    assert meta["tokenizer_from"].endswith("tokenizer.json")


def test_hf_revision_and_streaming_row_count(monkeypatch):
    assert parse_hf_spec("hf:Skylion007/openwebtext@refs/convert/parquet") == ("Skylion007/openwebtext", None)
    assert hf_revision("hf:Skylion007/openwebtext@refs/convert/parquet") == "refs/convert/parquet"
    assert hf_revision("hf:HuggingFaceFW/fineweb:sample-10BT") is None
    import datasets

    class Streamed(list):  # an IterableDataset: no len(), but its card counts the rows
        def __len__(self):
            raise TypeError("no len")

        info = type("Info", (), {"splits": {"train": type("S", (), {"num_examples": 14_868_862})()}})()

    calls = []

    def fake_load(name, config=None, streaming=False, **kw):
        calls.append((name, config, streaming, kw))
        return {"train": Streamed([{"text": "a"}])}

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    src = open_source("hf:HuggingFaceFW/fineweb:sample-10BT", streaming=True)
    assert src.splits["train"].expected == 14_868_862
    open_source("hf:Skylion007/openwebtext@refs/convert/parquet")
    assert calls == [
        ("HuggingFaceFW/fineweb", "sample-10BT", True, {}),
        ("Skylion007/openwebtext", None, False, {"revision": "refs/convert/parquet"}),
    ]


def _stage(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(STAGE), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_stage_runs_and_reports_errors(owt, tmp_path):
    res = _stage(
        "--source",
        str(owt / "sample.jsonl.gz"),
        "--output_dir",
        "out",
        "--vocab_size",
        "600",
        "--max_seq_len",
        "32",
        "--num_workers",
        "2",
        "--max_docs",
        "400",
        "--tokenizer_sample_docs",
        "100",
        "--val_fraction",
        "0.05",
        "--no_progress",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    meta = load_meta(tmp_path / "out")
    assert meta["vocab_size"] == 600 and meta["max_seq_len"] == 32 and meta["tokenizer_sample_docs"] == 100
    assert sum(s["documents"] for s in meta["splits"].values()) == 400
    assert "prepared" in res.stdout and "max_seq_len 32" in res.stdout
    bad = _stage("--source", str(tmp_path / "missing.jsonl"), "--output_dir", "x", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: ") and "no such file" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_progress_bar_shows_rate_and_eta(owt, tmp_path):
    res = _stage(
        "--source",
        str(owt),
        "--output_dir",
        "out",
        "--vocab_size",
        "600",
        "--max_seq_len",
        "32",
        "--num_workers",
        "1",
        "--batch_size",
        "200",
        "--val_fraction",
        "0.05",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    bar = res.stderr.replace("\r", "\n")
    assert "B/s" in bar and "tokenise" in bar and "<" in bar  # rate, and a remaining-time estimate


def _start(out: Path, tmp_path: Path, *extra: str) -> subprocess.Popen:
    # A long run: builtin stories are generated while they are tokenised, so it is killed mid-way.
    return subprocess.Popen(
        [
            sys.executable,
            str(STAGE),
            "--source",
            "builtin:stories",
            "--output_dir",
            str(out),
            "--vocab_size",
            "300",
            "--max_docs",
            "3000000",
            "--tokenizer_sample_docs",
            "300",
            "--max_seq_len",
            "16",
            "--num_workers",
            "2",
            "--batch_size",
            "200",
            "--val_fraction",
            "0.05",
            "--no_progress",
            *extra,
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for_partial_bin(out: Path, proc: subprocess.Popen) -> Path:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for tmp in out.parent.glob(f".{out.name}.tmp-*"):
            if (tmp / "train.bin").is_file() and (tmp / "train.bin").stat().st_size > 10_000:
                return tmp
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the run never started writing train.bin")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_leaves_nothing_a_later_stage_accepts(tmp_path, sig):
    out = tmp_path / "corpus"
    previous = prepare_corpus(
        "builtin:stories", out, vocab_size=300, max_docs=300, val_fraction=0.05, seed=0, progress=False
    )
    proc = _start(out, tmp_path)
    tmp = _wait_for_partial_bin(out, proc)
    running = _processes_with(f"\0{out}\0")
    assert proc.pid in running and len(running) >= 3  # the stage and its 2 pool workers
    proc.send_signal(sig)
    proc.wait(timeout=30)
    assert proc.returncode == (-9 if sig == signal.SIGKILL else 128 + signal.SIGTERM)
    assert load_meta(out) == previous  # the old corpus, untouched and still consistent
    assert MemmapCorpus(out, "train").num_documents == previous["splits"]["train"]["documents"]
    if sig == signal.SIGTERM:
        assert not tmp.exists()  # cleaned up on the way out
    else:
        with pytest.raises(DataError, match="no meta.json"):
            load_meta(tmp)  # the partial files carry no meta.json: nothing would load them
    # Pool workers do not outlive their parent.
    time.sleep(0.5)
    assert _processes_with(f"\0{out}\0") == []


def _processes_with(arg: str) -> list[int]:
    """Pids whose command line contains `arg` (NUL-separated), from /proc."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if arg in cmdline.read_bytes().decode(errors="replace"):
                pids.append(int(cmdline.parent.name))
        except OSError:  # gone meanwhile
            pass
    return pids


def test_killed_first_run_leaves_no_output_and_rerun_cleans_up(tmp_path):
    out = tmp_path / "corpus"
    proc = _start(out, tmp_path)
    tmp = _wait_for_partial_bin(out, proc)
    proc.kill()
    proc.wait(timeout=30)
    assert not out.exists() and tmp.exists()
    res = _stage(
        "--source",
        "builtin:stories",
        "--output_dir",
        str(out),
        "--vocab_size",
        "300",
        "--max_docs",
        "400",
        "--max_seq_len",
        "16",
        "--val_fraction",
        "0.05",
        "--no_progress",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert not tmp.exists() and load_meta(out)["splits"]["train"]["documents"] > 0
