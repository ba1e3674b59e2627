"""Stage prep_tinystories: text source → seeded split → byte-level BPE → memmap corpus + meta.json + tokenizer.json.

Defaults come from the params.yaml dataset selected by `data:`; flags override them for manual runs, e.g.
    python stages/prep_tinystories.py --source ../shared/data/tinystories/train.jsonl.gz --output_dir data/ts
    python stages/prep_tinystories.py --source "hf:json?data_files=a.jsonl,b.jsonl&val_files=c.jsonl"
    python stages/prep_tinystories.py --source hf:data/my_saved_dataset      # a save_to_disk folder
    python stages/prep_tinystories.py --source "hf:roneneldan/TinyStories?split=train[:10%]&val_split=validation"

hf: sources are what `datasets` loads: hf:NAME[:config][@revision][?split=S&val_split=S&data_files=A,B&
val_files=C&data_dir=D], NAME a Hub dataset, a save_to_disk folder, a local folder of data files, or a packaged
builder (json, csv, parquet, text) that reads the data_files it is given (quote the spec in a shell).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lmcore.cli import bool_flag, run_stage
from lmcore.config import apply_overrides, load_params
from lmcore.data import prepare_corpus


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--dataset", help="which entry of params.yaml `datasets:` to use (default: `data:`)")
    p.add_argument(
        "--source", help="hf:NAME[:config][@revision][?key=value&...] | local file or folder | builtin:stories"
    )
    p.add_argument("--output_dir", default="data/corpus", help="where train.bin/val.bin/meta.json/tokenizer.json go")
    p.add_argument("--vocab_size", type=int, help="BPE vocabulary size, special tokens included")
    p.add_argument("--max_stories", "--max_docs", dest="max_docs", type=int, help="documents to read (train + val)")
    p.add_argument("--val_fraction", type=float, help="held-out share when the source has no validation split")
    p.add_argument("--seed", type=int, help="seed of the split (and of builtin:stories)")
    p.add_argument("--text_field", help="field holding the text in json/jsonl/parquet/hf records")
    p.add_argument("--num_workers", type=int, help="tokenisation processes")
    bool_flag(p, "streaming", "stream hf: datasets instead of downloading them whole")
    a = p.parse_args()

    params = load_params(a.params)
    if a.dataset:
        params.data = a.dataset
    name = params.data
    ds = apply_overrides(
        params.dataset(),
        {
            "source": a.source,
            "vocab_size": a.vocab_size,
            "max_docs": a.max_docs,
            "val_fraction": a.val_fraction,
            "seed": a.seed,
            "text_field": a.text_field,
            "streaming": a.streaming,
        },
        where=f"datasets.{name}",
    )
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
        batch_size=params.prepare.batch_size,
        name=name if a.source is None else None,
    )
    splits = ", ".join(f"{s}: {v['documents']:,} docs / {v['tokens']:,} tokens" for s, v in meta["splits"].items())
    print(f"prepared {ds.source} → {a.output_dir} (vocab {meta['vocab_size']}, {meta['dtype']}; {splits})")
    if "entropy" in meta:
        e = meta["entropy"]["val"]
        print(f"entropy floor (val): {e['nats_per_story']:.2f} nats/story, {e['nats_per_token']:.4f} nats/token")


if __name__ == "__main__":
    run_stage(main)
