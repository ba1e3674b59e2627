"""Corpus preparation and memmap loading: contents, determinism across workers, atomicity, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lmcore.data import MemmapCorpus, load_meta, open_source, prepare_corpus, split_documents
from lmcore.data import prepare as prepare_mod
from lmcore.data.sources import is_val_index
from lmcore.errors import DataError
from lmcore.tokenizer import EOS_ID, decode, load_tokenizer, tokenizer_identity

STORIES = dict(vocab_size=512, max_docs=2000, val_fraction=0.05, seed=11, progress=False)
FILES = ["meta.json", "tokenizer.json", "train.bin", "train.idx", "val.bin", "val.idx"]


@pytest.fixture(scope="module")
def stories(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("prep") / "stories"
    return out, prepare_corpus("builtin:stories", out, **STORIES)


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def test_meta_and_files(stories):
    out, meta = stories
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert load_meta(out) == meta == json.loads((out / "meta.json").read_text())
    assert meta["format_version"] == 1 and meta["source"] == "builtin:stories" and meta["dtype"] == "uint16"
    assert meta["vocab_size"] == 512 and meta["eos_id"] == EOS_ID and meta["special_tokens"]["<ignore>"] == 5
    assert meta["tokenizer_identity"] == tokenizer_identity(load_tokenizer(out / meta["tokenizer"]))
    assert (meta["seed"], meta["val_fraction"], meta["max_docs"]) == (11, 0.05, 2000)
    for split in ("train", "val"):
        info = meta["splits"][split]
        assert (out / info["bin"]).stat().st_size == 2 * info["tokens"]
        assert (out / info["offsets"]).stat().st_size == 8 * (info["documents"] + 1)
        e = meta["entropy"][split]
        assert e["stories"] == info["documents"] and e["nats_per_token"] > 0
        assert e["nats_per_story"] == pytest.approx(e["nats_per_token"] * info["tokens"] / info["documents"])
    assert meta["splits"]["train"]["documents"] == 2000


def test_documents_decode_back(stories):
    out, meta = stories
    tok = load_tokenizer(out / "tokenizer.json")
    train, val = split_documents(open_source("builtin:stories", seed=11), 2000, 0.05, 11)
    for split, docs in (("train", list(train)), ("val", list(val))):
        c = MemmapCorpus(out, split)
        assert c.num_documents == len(docs) and len(c) == c.num_tokens == meta["splits"][split]["tokens"]
        assert c.tokens.dtype == np.uint16 and not c.tokens.flags.writeable
        offsets = np.asarray(c.offsets)
        assert offsets[0] == 0 and offsets[-1] == c.num_tokens and np.all(np.diff(offsets) > 1)
        assert np.all(np.asarray(c.tokens)[offsets[1:] - 1] == EOS_ID)  # every document ends with <eos>
        assert np.count_nonzero(np.asarray(c.tokens) == EOS_ID) == c.num_documents  # and nowhere else
        for i in (0, 1, len(docs) // 2, len(docs) - 1):
            assert decode(tok, c.document(i), stop_at_eos=False) == docs[i].text
        nats = -sum(d.logprob for d in docs)
        assert meta["entropy"][split]["nats_per_token"] == pytest.approx(nats / c.num_tokens)


def test_workers_give_identical_bytes(tmp_path):
    kw = dict(STORIES, max_docs=600, batch_size=37)
    one = prepare_corpus("builtin:stories", tmp_path / "one", num_workers=1, **kw)
    two = prepare_corpus("builtin:stories", tmp_path / "two", num_workers=2, **kw)
    assert one == two
    for name in FILES:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


class Boom(RuntimeError):
    pass


def explode_after(monkeypatch, n: int, exc: type[BaseException] = Boom) -> None:
    calls = [0]
    real = prepare_mod._BatchEncoder.__call__

    def call(self, texts):
        calls[0] += 1
        if calls[0] > n:
            raise exc("interrupted")
        return real(self, texts)

    monkeypatch.setattr(prepare_mod._BatchEncoder, "__call__", call)


@pytest.mark.parametrize("exc, workers", [(Boom, 1), (KeyboardInterrupt, 1), (Boom, 2)])
def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch, exc, workers):
    explode_after(monkeypatch, 3, exc)  # in a worker process too: they are forked after the patch
    out = tmp_path / "corpus"
    with pytest.raises(exc):
        prepare_corpus("builtin:stories", out, **dict(STORIES, max_docs=500, batch_size=50, num_workers=workers))
    assert not out.exists() and leftovers(out) == []
    with pytest.raises(DataError, match="no meta.json"):
        load_meta(out)


def test_failed_rerun_keeps_previous_output_and_good_rerun_replaces_it(tmp_path, monkeypatch):
    out = tmp_path / "corpus"
    kw = dict(STORIES, max_docs=300)
    first = prepare_corpus("builtin:stories", out, **kw)
    with monkeypatch.context() as m:
        explode_after(m, 1)
        with pytest.raises(Boom):
            prepare_corpus("builtin:stories", out, **dict(kw, seed=12, batch_size=50))
    assert load_meta(out) == first and leftovers(out) == []
    second = prepare_corpus("builtin:stories", out, **dict(kw, seed=12))
    assert load_meta(out) == second and second["tokenizer_identity"] != first["tokenizer_identity"]
    assert leftovers(out) == []


def test_stale_temp_of_a_killed_run_is_removed(tmp_path):
    out = tmp_path / "corpus"
    dead = tmp_path / ".corpus.tmp-999999999"  # no such process
    dead.mkdir()
    (dead / "train.bin").write_bytes(b"partial")
    prepare_corpus("builtin:stories", out, **dict(STORIES, max_docs=100))
    assert leftovers(out) == []


def test_refuses_to_replace_a_folder_that_is_not_a_corpus(tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="precious: exists and is not a prepared corpus"):
        prepare_corpus("builtin:stories", tmp_path / "precious", **STORIES)
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def test_empty_splits_are_errors(tmp_path):
    src = tmp_path / "docs.txt"
    src.write_text("".join(f"document {i}\n" for i in range(20)))
    with pytest.raises(DataError, match=r"docs.txt: the val split is empty"):
        prepare_corpus(str(src), tmp_path / "a", **dict(STORIES, max_docs=None, val_fraction=0.0))
    seed = next(s for s in range(1000) if is_val_index(s, 0, 0.5))
    one = tmp_path / "one.txt"
    one.write_text("the only document\n")
    with pytest.raises(DataError, match=r"one.txt: the train split is empty"):
        prepare_corpus(str(one), tmp_path / "b", **dict(STORIES, max_docs=None, val_fraction=0.5, seed=seed))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and leftovers(tmp_path / "b") == []


def test_bad_records_surface_as_data_errors(tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(30)) + "{broken\n")
    with pytest.raises(DataError, match=r"d.jsonl:31: invalid JSON"):
        prepare_corpus(str(src), tmp_path / "out", **dict(STORIES, max_docs=None, val_fraction=0.2))
    assert leftovers(tmp_path / "out") == []


@pytest.mark.parametrize(
    "key, value",
    [("vocab_size", 100), ("num_workers", 0), ("batch_size", 0), ("tokenizer_sample_docs", -1), ("max_docs", 0)],
)
def test_bad_parameters(tmp_path, key, value):
    with pytest.raises(DataError, match=key):
        prepare_corpus("builtin:stories", tmp_path / "out", **{**STORIES, key: value})


def test_tokenizer_sample_and_text_file(tmp_path):
    src = tmp_path / "docs.txt"
    src.write_text("<|endoftext|>\n".join(f"Story {i}: the cat sat on mat {i % 7}.\n" for i in range(300)))
    meta = prepare_corpus(
        str(src),
        tmp_path / "out",
        vocab_size=300,
        max_docs=None,
        val_fraction=0.1,
        seed=0,
        tokenizer_sample_docs=10,
        progress=False,
    )
    assert "entropy" not in meta and meta["tokenizer_sample_docs"] == 10
    assert sum(s["documents"] for s in meta["splits"].values()) == 300


def test_load_meta_errors(stories, tmp_path):
    out, _meta = stories
    with pytest.raises(DataError, match=r"nothing: no meta.json \(run the prep stage first\)"):
        load_meta(tmp_path / "nothing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "meta.json").write_text("{oops")
    with pytest.raises(DataError, match=r"meta.json: corrupt meta.json"):
        load_meta(bad)
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in FILES:
        (copy / name).write_bytes((out / name).read_bytes())
    (copy / "val.bin").write_bytes((out / "val.bin").read_bytes()[:-2])
    with pytest.raises(DataError, match=r"val.bin: \d+ bytes, but meta.json says \d+ uint16 tokens"):
        load_meta(copy)
    (copy / "val.bin").unlink()
    with pytest.raises(DataError, match=r"val.bin: missing"):
        load_meta(copy)
    with pytest.raises(DataError, match=r"no split 'test'"):
        MemmapCorpus(out, "test")


def test_real_tinystories_sample(shared_data, tmp_path):
    spec = str(shared_data / "tinystories" / "train.jsonl.gz")
    meta = prepare_corpus(
        spec, tmp_path / "ts", vocab_size=512, max_docs=500, val_fraction=0.05, seed=0, num_workers=2, progress=False
    )
    assert "entropy" not in meta and meta["splits"]["train"]["documents"] + meta["splits"]["val"]["documents"] == 500
    tok = load_tokenizer(tmp_path / "ts" / "tokenizer.json")
    train, val = split_documents(open_source(spec), 500, 0.05, 0)
    for split, docs in (("train", list(train)), ("val", list(val))):
        c = MemmapCorpus(tmp_path / "ts", split)
        assert c.num_documents == len(docs)
        assert all(decode(tok, c.document(i)) == docs[i].text for i in range(len(docs)))
