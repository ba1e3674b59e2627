"""prep_openwebtext: web-scale text → 32k byte-level BPE → train/val memmaps (+ meta.json, tokenizer.json).

A script outside DVC (in DVC: `dvc exp run -S data=openwebtext`, README "Web-scale data"). Defaults come from
the params.yaml dataset `openwebtext` (built-in defaults below when it is absent); flags override, e.g.
    python stages/prep_openwebtext.py --output_dir data_openwebtext --vocab_size 32000 --max_seq_len 1024 \\
        --num_workers 8 [--source hf:HuggingFaceFW/fineweb:sample-10BT --streaming] [--tokenizer_sample_docs N]
Sources: hf:Skylion007/openwebtext (or its parquet export, hf:Skylion007/openwebtext@refs/convert/parquet),
hf:HuggingFaceFW/fineweb:sample-10BT (with --streaming), or local files/folders (.txt/.jsonl/.json/.parquet[.gz]).
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from lmcore.cli import bool_flag, run_stage
from lmcore.config import DatasetConfig, apply_overrides, load_params
from lmcore.data import prepare_corpus

# Used when params.yaml has no `openwebtext` dataset: nanoGPT's OpenWebText split (0.05% held out).
DEFAULT = DatasetConfig(
    source="hf:Skylion007/openwebtext", vocab_size=32000, val_fraction=0.0005, seed=1234, tokenizer_sample_docs=200_000
)


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM (dvc, schedulers, `kill`) unwinds like Ctrl-C, so prepare_corpus removes its temp folder.
    raise SystemExit(128 + signum)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--dataset", default="openwebtext", help="entry of params.yaml `datasets:` (default: openwebtext)")
    p.add_argument("--source", help="hf:NAME[:config][@revision][?key=value&...] | local file or folder")
    p.add_argument("--output_dir", default="data_openwebtext", help="where train/val .bin/.idx, meta.json go")
    p.add_argument("--vocab_size", type=int, help="BPE vocabulary size, special tokens included (default 32000)")
    p.add_argument("--max_seq_len", type=int, default=1024, help="training block length, recorded in meta.json")
    p.add_argument("--num_workers", type=int, help="tokenisation processes (default: params.yaml prepare.num_workers)")
    p.add_argument("--batch_size", type=int, help="documents per tokenisation batch")
    p.add_argument("--tokenizer_sample_docs", type=int, help="train the tokenizer on the first N train documents")
    p.add_argument("--tokenizer", help="use this tokenizer.json instead of training one")
    p.add_argument("--max_docs", type=int, help="documents to read (train + val); default: all")
    p.add_argument("--val_fraction", type=float, help="held-out share when the source has no validation split")
    p.add_argument("--seed", type=int, help="seed of the train/val split")
    p.add_argument("--text_field", help="field holding the text in json/jsonl/parquet/hf records")
    bool_flag(p, "streaming", "stream hf: datasets instead of downloading them whole")
    bool_flag(p, "progress", "show the progress bar (MB/s, ETA)")
    a = p.parse_args()

    params = load_params(a.params)
    base = params.datasets.get(a.dataset, DEFAULT if a.dataset == "openwebtext" else None)
    if base is None:
        params.data = a.dataset
        base = params.dataset()  # ConfigError naming the defined datasets
    ds = apply_overrides(
        base,
        {
            "source": a.source,
            "vocab_size": a.vocab_size,
            "max_docs": a.max_docs,
            "val_fraction": a.val_fraction,
            "seed": a.seed,
            "text_field": a.text_field,
            "streaming": a.streaming,
            "tokenizer_sample_docs": a.tokenizer_sample_docs,
        },
        where=f"datasets.{a.dataset}",
    )
    signal.signal(signal.SIGTERM, _terminate)
    meta = prepare_corpus(
        ds.source,
        Path(a.output_dir),
        vocab_size=ds.vocab_size,
        max_docs=ds.max_docs,
        val_fraction=ds.val_fraction,
        seed=ds.seed,
        num_workers=a.num_workers or params.prepare.num_workers,
        text_field=ds.text_field,
        streaming=ds.streaming,
        tokenizer_sample_docs=ds.tokenizer_sample_docs,
        batch_size=a.batch_size or params.prepare.batch_size,
        progress=a.progress is not False,
        name=a.dataset if a.source is None else None,
        tokenizer=a.tokenizer,
        max_seq_len=a.max_seq_len,
    )
    splits = ", ".join(
        f"{s}: {v['documents']:,} docs / {v['tokens']:,} tokens ({v['text_bytes'] / 1e6:,.1f} MB)"
        for s, v in meta["splits"].items()
    )
    print(
        f"prepared {ds.source} → {a.output_dir} (vocab {meta['vocab_size']}, {meta['dtype']}, "
        f"max_seq_len {meta['max_seq_len']}; {splits})"
    )


if __name__ == "__main__":
    run_stage(main)
