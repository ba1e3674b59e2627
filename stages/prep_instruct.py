"""Stage prep_instruct: instruction data → template → tokens and response-only loss masks → train/val/test rows.

    python stages/prep_instruct.py --source builtin:instructions --tokenizer data/corpus/tokenizer.json \\
        --output_dir data_instruct --num_examples 6000 --max_seq_len 160
    python stages/prep_instruct.py --source ../shared/data/alpaca/alpaca_data_first2000.json.gz \\
        --pretrained_checkpoint checkpoints/ar/best.pt --num_examples 1000 --skip_bad_records

Sources: alpaca (hf:tatsu-lab/alpaca), dolly (hf:databricks/databricks-dolly-15k), builtin:instructions,
any hf: source (a Hub dataset, a save_to_disk folder, hf:json?data_files=a.jsonl,b.jsonl; see
prep_tinystories.py --help), or a local .json/.jsonl(.gz) with instruction/input/output (Dolly's context/response
also read).
The tokenizer must be the pretrained model's: with --pretrained_checkpoint it is checked against the checkpoint.
Every field of params.yaml `prep_instruct:` is a flag.
"""

from __future__ import annotations

import argparse

from lmcore.cli import add_dataclass_flags, run_stage
from lmcore.config import PrepInstructConfig, apply_overrides, load_params
from lmcore.data.instruct_prepare import prepare_instructions, resolve_tokenizer
from lmcore.data.instruct_sources import SourceStats, iter_examples
from lmcore.errors import DataError


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", help="tokenizer.json (or a prepared data folder) of the pretrained model")
    p.add_argument("--pretrained_checkpoint", help="checkpoint whose tokenizer to use and check against")
    p.add_argument("--output_dir", default="data_instruct")
    p.add_argument("--params", default="params.yaml")
    names = add_dataclass_flags(p, PrepInstructConfig, "prep_instruct")
    a = p.parse_args()
    cfg = apply_overrides(load_params(a.params).prep_instruct, {k: getattr(a, k) for k in names}, where="prep_instruct")
    num = cfg.num_examples or None
    if num is None and cfg.source.startswith("builtin:"):
        raise DataError(f"num_examples: required for {cfg.source} (a generated source never ends)")
    tok, facts = resolve_tokenizer(a.tokenizer, a.pretrained_checkpoint)
    stats = SourceStats()
    examples = iter_examples(
        cfg.source,
        fmt=cfg.format,
        skip_bad=cfg.skip_bad_records,
        seed=cfg.seed,
        families=cfg.families or None,
        stats=stats,
    )
    config = prepare_instructions(
        examples,
        tok,
        a.output_dir,
        max_seq_len=cfg.max_seq_len,
        num_examples=num,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=cfg.seed,
        overflow=cfg.overflow,
        facts={"source": cfg.source, **facts},
        stats=stats,
    )
    c, s = config["counts"], config["splits"]
    print(
        f"wrote {a.output_dir}: train {s['train']['examples']}, val {s['val']['examples']}, "
        f"test {s['test']['examples']} examples of ≤ {cfg.max_seq_len} tokens; truncated {c['truncated']}, "
        f"dropped too long {c['dropped_too_long'] + c['dropped_prompt_too_long']}, duplicates {c['duplicates']}, "
        f"bad records skipped {c['bad_records_skipped']}"
    )


if __name__ == "__main__":
    run_stage(main)
