"""Instruction data: sources and their validation, built-in tasks, the template, exact response masks, splits,
truncation/drop counts, tokenizer checks and atomic output."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lmcore.data.builtin_instructions import FAMILIES, builtin_examples
from lmcore.data.instruct_dataset import InstructSplit, load_config
from lmcore.data.instruct_prepare import prepare_instructions, resolve_tokenizer
from lmcore.data.instruct_sources import SourceStats, iter_examples
from lmcore.data.instruct_template import format_prompt
from lmcore.errors import CheckpointError, DataError
from lmcore.tokenizer import EOS_ID, PAD_ID, decode, encode_documents, load_tokenizer, tokenizer_identity


def prep(corpus: Path, out: Path, source: str, **kw) -> dict:
    tok, facts = resolve_tokenizer(corpus, None)
    stats = SourceStats()
    examples = iter_examples(source, skip_bad=kw.pop("skip_bad", False), families=kw.pop("families", None), stats=stats)
    kw = {"max_seq_len": 160, "num_examples": None, **kw}
    return prepare_instructions(examples, tok, out, facts={"source": source, **facts}, stats=stats, **kw)


def check_rows(data: Path) -> int:
    """Every row: the prompt decodes to the template, the mask is 1 exactly on response tokens + <eos>."""
    tok = load_tokenizer(data)
    rows = 0
    for split in ("train", "val", "test"):
        s = InstructSplit(data, split)
        for i, ex in enumerate(s.examples()):
            tokens, mask = s.rows([i])
            tokens, mask = tokens[0], mask[0]
            p, r = ex["prompt_tokens"], ex["response_tokens"]
            assert decode(tok, tokens[:p]) == format_prompt(ex["instruction"], ex["input"])
            assert (mask[:p] == 0).all() and (mask[p : p + r] == 1).all() and (mask[p + r :] == 0).all()
            assert (tokens[p + r :] == PAD_ID).all() and (tokens[: p + r] != PAD_ID).all()
            if ex["truncated"]:
                # the response's own tokens, cut (a cut may split a character's bytes, so compare ids)
                assert p + r == s.width and EOS_ID not in tokens
                assert encode_documents(tok, [ex["output"]])[0][:r] == tokens[p:].tolist()
            else:
                assert tokens[p + r - 1] == EOS_ID and decode(tok, tokens[p : p + r - 1]) == ex["output"]
            rows += 1
    return rows


def test_builtin_tasks_have_exact_answers():
    examples = list(zip(range(80), builtin_examples(5)))
    assert {e.family for _, e in examples} == set(FAMILIES)
    for _, e in examples:
        words = e.input.split()
        expected = {
            "copy": " ".join(words),
            "reverse": " ".join(words[::-1]),
            "sort": " ".join(sorted(words)),
            "count": str(len(words)),
            "uppercase": e.input.upper(),
        }.get(e.family)
        if e.family == "arithmetic":
            a, op, b = words
            expected = str(int(a) + int(b) if op == "+" else int(a) - int(b))
        elif e.family == "character":
            expected = e.input.split("named ", 1)[1].split(".", 1)[0]
        elif e.family == "animal":
            assert f" {e.output} named " in e.input
            expected = e.output
        assert e.output == expected, e
    again = [e for _, e in zip(range(80), builtin_examples(5))]
    assert again == [e for _, e in examples] and again != [e for _, e in zip(range(80), builtin_examples(6))]


def test_template_leaves_out_an_empty_input():
    assert format_prompt("Do it.", "") == "### Instruction:\nDo it.\n\n### Response:\n"
    assert format_prompt("Do it.", "x") == "### Instruction:\nDo it.\n\n### Input:\nx\n\n### Response:\n"


def test_builtin_rows_masks_and_split(corpus, tmp_path):
    cfg = prep(corpus, tmp_path / "b", "builtin:instructions", num_examples=200, seed=4)
    assert check_rows(tmp_path / "b") == 200
    sizes = {s: cfg["splits"][s]["examples"] for s in ("train", "val", "test")}
    assert sizes == {"train": 180, "val": 10, "test": 10}
    keys = {s: {(e["instruction"], e["input"]) for e in InstructSplit(tmp_path / "b", s).examples()} for s in sizes}
    assert not keys["train"] & keys["test"] and not keys["val"] & keys["test"]  # held out
    assert cfg["tokenizer_identity"] == tokenizer_identity(load_tokenizer(corpus))
    again = prep(corpus, tmp_path / "b2", "builtin:instructions", num_examples=200, seed=4)
    for s in sizes:  # seeded: the same split twice
        assert (tmp_path / "b" / f"{s}.tokens.bin").read_bytes() == (tmp_path / "b2" / f"{s}.tokens.bin").read_bytes()
    assert again["counts"] == cfg["counts"]


def test_overflow_truncates_or_drops_and_counts(corpus, tmp_path):
    t = prep(
        corpus, tmp_path / "t", "builtin:instructions", num_examples=40, families="character,count", max_seq_len=84
    )
    assert check_rows(tmp_path / "t") == 40
    d = prep(
        corpus,
        tmp_path / "d",
        "builtin:instructions",
        num_examples=40,
        families="character,count",
        max_seq_len=84,
        overflow="drop",
    )
    assert check_rows(tmp_path / "d") == 40
    # character prompts carry a whole paragraph: longer than 84 tokens, so dropped either way and counted
    assert t["counts"]["dropped_prompt_too_long"] > 0 and d["counts"]["dropped_prompt_too_long"] > 0
    t2 = prep(corpus, tmp_path / "t2", "builtin:instructions", num_examples=30, families="sort", max_seq_len=84)
    d2 = prep(
        corpus,
        tmp_path / "d2",
        "builtin:instructions",
        num_examples=30,
        families="sort",
        max_seq_len=84,
        overflow="drop",
    )
    assert t2["counts"]["truncated"] > 0 and d2["counts"]["dropped_too_long"] > 0 and d2["counts"]["truncated"] == 0
    check_rows(tmp_path / "t2")


def test_shared_alpaca_and_dolly(shared_data, corpus, tmp_path):
    a = prep(
        corpus,
        tmp_path / "a",
        str(shared_data / "alpaca" / "alpaca_data_first2000.json.gz"),
        num_examples=1000,
        skip_bad=True,
        max_seq_len=256,
    )
    assert a["counts"]["kept"] == 1000 and check_rows(tmp_path / "a") == 1000
    assert a["counts"]["bad_records_skipped"] >= 1  # the original's empty outputs (e.g. "Convert 20 inches ...")
    assert '"output" is empty' in a["bad_record_examples"][0] and ".json.gz:" in a["bad_record_examples"][0]
    c = prep(
        corpus,
        tmp_path / "c",
        str(shared_data / "alpaca" / "alpaca_data_cleaned_subset12k.json.gz"),
        num_examples=300,
        max_seq_len=128,
    )
    assert c["counts"]["kept"] == 300 and check_rows(tmp_path / "c") == 300
    d = prep(
        corpus,
        tmp_path / "d",
        str(shared_data / "dolly" / "databricks-dolly-15k_first12.jsonl.gz"),
        max_seq_len=256,
        val_fraction=0.1,
        test_fraction=0.1,
    )
    assert d["counts"]["records_read"] == 12 and check_rows(tmp_path / "d") == d["counts"]["kept"]
    first = next(iter_examples(str(shared_data / "dolly" / "databricks-dolly-15k_first12.jsonl.gz")))
    assert first.input.startswith("Virgin Australia") and first.output.startswith("Virgin Australia commenced")
    assert first.family == "closed_qa"


def test_bad_records_name_file_and_line(corpus, tmp_path):
    jsonl = tmp_path / "custom.jsonl"
    jsonl.write_text(
        '{"instruction": "a", "input": "", "output": "b"}\n\n'
        '{"instruction": "c", "output": 3}\n{"oops\n{"instruction": "d", "output": "e"}\n'
    )
    with pytest.raises(DataError, match=r"custom.jsonl:3: \"output\" is int"):
        list(iter_examples(str(jsonl)))
    stats = SourceStats()
    kept = list(iter_examples(str(jsonl), skip_bad=True, stats=stats))
    assert [e.output for e in kept] == ["b", "e"] and stats.bad == 2 and stats.read == 4
    assert "custom.jsonl:4: invalid JSON" in stats.messages[1]
    lst = tmp_path / "custom.json.gz"
    records = [{"instruction": "x", "input": "", "output": "y"}, {"instruction": "", "output": "z"}]
    lst.write_bytes(gzip.compress(json.dumps(records, indent=2).encode()))
    with pytest.raises(DataError, match=r"custom.json.gz:7: \"instruction\" is empty"):
        list(iter_examples(str(lst)))
    with pytest.raises(DataError, match="unknown built-in"):
        list(iter_examples("builtin:nope"))


def test_tokenizer_must_match_the_checkpoint_and_output_is_atomic(corpus, other_corpus, tmp_path):
    ckpt = tmp_path / "fake.pt"
    torch.save(
        {
            "global_step": 1,
            "model_state_dict": {},
            "model_config": {},
            "architecture": "ar",
            "tokenizer": tokenizer_identity(load_tokenizer(corpus)),
            "data_dir": str(corpus),
        },
        ckpt,
    )
    tok, facts = resolve_tokenizer(None, ckpt)  # found through the checkpoint's data_dir
    assert facts["tokenizer_identity"]["sha256"] == tokenizer_identity(tok)["sha256"]
    with pytest.raises(CheckpointError, match="model's own tokenizer"):
        resolve_tokenizer(other_corpus, ckpt)
    out = tmp_path / "data"
    prep(corpus, out, "builtin:instructions", num_examples=30)
    before = (out / "config.json").read_bytes()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n[1]\n')
    with pytest.raises(DataError, match="bad.jsonl:2"):
        prep(corpus, out, str(bad))
    assert (out / "config.json").read_bytes() == before and load_config(out)["counts"]["kept"] == 30
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".data")]  # no temp folder left behind
    np.testing.assert_array_equal(InstructSplit(out, "train").rows([0])[0].shape, (1, 160))
