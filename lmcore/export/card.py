"""The model card (README.md) of an export: how to load it, the model, its training data and steps, its metrics."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import lmcore
from lmcore.eval.kinds import KIND_NOTES, val_kinds
from lmcore.export.native import NATIVE_FORMAT
from lmcore.tokenizer import SPECIAL_TOKENS
from lmcore.train.checkpoint import LoadedModel

# Written beside the checkpoints by the trainer's JsonlTracker (lmcore/train/run.py, make_tracker).
HISTORY_FILE = "history.jsonl"

AR_USAGE = """```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{path}")
model = AutoModelForCausalLM.from_pretrained("{path}")
inputs = tokenizer("Once upon a time", return_tensors="pt")  # starts with {opener}, the document opener
out = model.generate(**inputs, max_new_tokens=100)               # sampling settings: generation_config.json
print(tokenizer.decode(out[0], skip_special_tokens=True))
```

The tokenizer puts {opener} in front of the text, as lmcore's AR model saw every document start in training (documents
are joined by `<eos>` in the packed token stream); `add_special_tokens=False` encodes the text alone, exactly as
lmcore does. Text is encoded literally: the string "<eos>" in a prompt is its characters, not the token
(`split_special_tokens`). `generate` samples with temperature 1 and no top-k/top-p, as lmcore's sampler does by
default; `do_sample=False` decodes greedily."""

NATIVE_USAGE = """No transformers class runs this model: `config.json` is lmcore's own (`"format": "{format}"`, no
`model_type`), and `model.safetensors` holds lmcore's weights under lmcore's parameter names. Load it with lmcore
installed (in the project: `pip install -e ".[hf]"`):

```python
import torch
from transformers import AutoTokenizer
from lmcore.export import load_native

objective, model = load_native("{path}")
tokenizer = AutoTokenizer.from_pretrained("{path}")
ids = objective.sample(model, num=1, length=128, gen=torch.Generator().manual_seed(0))
print(tokenizer.decode(ids[0], skip_special_tokens=True))
```

The tokenizer files load with `AutoTokenizer` (they add no special token: this objective trains on one document
per row). Evaluate or sample from the original checkpoint with `stages/evaluate.py` / `stages/generate.py`."""


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def val_metrics_at(history: Path, step: int) -> dict[str, float]:
    """The validation metrics logged at `step` in a run's history.jsonl (later lines win, as after a resume)."""
    out: dict[str, float] = {}
    if not history.is_file():
        return out
    for line in history.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash; the history is informative here, not required
        if record.get("step") == step and isinstance(record.get("metrics"), dict):
            out.update({k: v for k, v in record["metrics"].items() if k.startswith("val/") and k != "val/best_loss"})
    return out


def _data_rows(data_dir: str | None) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [("data folder", f"`{data_dir}`" if data_dir else "not recorded")]
    meta_path = Path(data_dir) / "meta.json" if data_dir else None
    if meta_path is not None and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            meta = {}
        if isinstance(meta.get("source"), str):
            rows.append(("source", f"`{meta['source']}`"))
        for name, split in (meta.get("splits") or {}).items():
            if isinstance(split, dict) and "tokens" in split:
                rows.append((f"{name} split", f"{split['tokens']} tokens, {split.get('documents', '?')} documents"))
    return rows


def _metrics_section(loaded: LoadedModel) -> str:
    step = loaded.info.get("global_step")
    metrics = val_metrics_at(loaded.path.parent / HISTORY_FILE, step)
    if not metrics:
        best = loaded.info.get("best_val_loss")
        if not isinstance(best, (int, float)) or not math.isfinite(best):
            return "No validation metrics recorded with this checkpoint."
        metrics = {"val/loss": float(best)}
        where = "The checkpoint's `best_val_loss` (its run's history.jsonl was not found beside it)."
    else:
        where = f"Validation metrics logged at step {step} (`{HISTORY_FILE}` beside the checkpoint)."
    kinds = val_kinds(loaded.objective.metric_kind, [k.split("/", 1)[1] for k in metrics])
    rows = []
    for name, value in metrics.items():
        kind = kinds[name.split("/", 1)[1]]
        # KIND_NOTES["exact"] describes the loss; AR's perplexity shares the kind.
        meaning = (
            "exp(val/loss): the model's perplexity"
            if name == "val/perplexity" and kind == "exact"
            else re.sub(r"(<\w+>)", r"`\1`", KIND_NOTES.get(kind, ""))
        )  # <ignore> is a token, not HTML
        rows.append((f"`{name}`", _number(value), kind, meaning))
    return (
        f"{where} The kind says what each number is; losses of different kinds are not comparable across "
        f"architectures (lmcore README, Metrics).\n\n" + _table(rows, ("metric", "value", "kind", "meaning"))
    )


def model_card(
    loaded: LoadedModel, path: str, transformers_class: str | None, transformers_version: str, opener: str
) -> str:
    """README.md text for the export folder of `loaded` (published at `path`)."""
    cfg, info = loaded.model_config, loaded.info
    train = info.get("train_config") or {}
    tok = info.get("tokenizer") or {}
    front = [
        "---",
        f"library_name: {'transformers' if transformers_class else 'lmcore'}",
        f"tags: [lmcore, {loaded.architecture}]",
    ]
    if transformers_class:
        front.append("pipeline_tag: text-generation")
    front.append("---")
    if transformers_class:
        runs = (
            f"`{transformers_class}` (transformers {transformers_version}) computes exactly lmcore's function: "
            "the same pre-norm blocks, rotary positions, GELU MLP and head; its LayerNorm biases, which "
            "lmcore's LayerNorms lack, are zeros (the weight mapping: `lmcore/export/weights.py`)."
        )
        usage = AR_USAGE.format(path=path, opener=f"`{opener}`")
    else:
        runs = "Weights only: no transformers class implements this architecture."
        usage = NATIVE_USAGE.format(path=path, format=NATIVE_FORMAT)
    model_rows = [
        ("architecture", f"`{loaded.architecture}` (objective metric kind `{loaded.objective.metric_kind}`)"),
        ("parameters", f"{loaded.model.num_params():,}"),
    ]
    model_rows += [(k, v) for k, v in cfg.to_dict().items() if k != "gradient_checkpointing"]
    steps = f"{info.get('global_step')} of {train.get('max_steps', '?')} (`max_steps`, the LR schedule's length)"
    train_rows = [
        ("optimizer steps", steps),
        (
            "tokens per step",
            (
                f"{train.get('batch_size', '?')} rows × {train.get('grad_accum_steps', '?')} "
                f"accumulation × {train.get('seq_len', '?')} tokens, per process"
            ),
        ),
    ]
    if (info.get("parent") or {}).get("path"):
        train_rows.append(("fine-tuned from", f"`{info['parent']['path']}`"))
    train_rows += _data_rows(info.get("data_dir"))
    train_rows.append(
        (
            "tokenizer",
            (f"byte-level BPE, vocabulary {tok.get('vocab_size', '?')}, sha256 `{str(tok.get('sha256', '?'))[:16]}…`"),
        )
    )
    settings = [(k, f"`{v}`") for k, v in train.items()]
    objective = [(k, f"`{v}`") for k, v in (info.get("objective_config") or {}).items()]
    specials = [(f"`{token}`", i) for i, token in enumerate(SPECIAL_TOKENS)]
    return "\n".join(
        [
            *front,
            "",
            f"# lmcore `{loaded.architecture}` model",
            "",
            f"Exported from `{loaded.path}` by `stages/export_hf.py` (lmcore {lmcore.__version__}). {runs}",
            "",
            "## Loading",
            "",
            usage,
            "",
            "## Model",
            "",
            _table(model_rows, ("field", "value")),
            "",
            "## Training",
            "",
            _table(train_rows, ("what", "value")),
            "",
            "Training settings (`train:` in params.yaml):",
            "",
            _table(settings, ("setting", "value")),
            *(
                ["", f"Objective settings (`{loaded.architecture}:`):", "", _table(objective, ("setting", "value"))]
                if objective
                else []
            ),
            "",
            "## Metrics",
            "",
            _metrics_section(loaded),
            "",
            "## Special tokens",
            "",
            (
                "Fixed ids in every lmcore tokenizer; the exported tokenizer sets pad, bos, eos, unk and mask, and "
                "`<ignore>` (the padding after `<eos>` that document objectives predict) as an extra special token."
            ),
            "",
            _table(specials, ("token", "id")),
            "",
        ]
    )
