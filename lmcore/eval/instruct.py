"""Instruction evaluation: responses to held-out test prompts from any architecture, scored against references.

Generation goes through each objective's `sample(..., prompt=...)`, prompts grouped by length so a batch shares
one: AR decodes left to right until <eos> (after the <eos> that opens a document, as in training); diffusion and
SDD infill the whole response region of a training-width row with the prompt held fixed. The response is what
comes before the first <eos>/<ignore>/<pad>.

Scores (each a mean over the test examples unless noted):
  rouge_l        ROUGE-L F1 against the reference (Google's `rouge-score`, Porter stemming off)
  bleu           corpus BLEU-4 (sacrebleu, 13a tokens; 0–100)
  format/*       non_empty, terminated (<eos> within the budget), no_template_header, compliant (all three)
  exact_match/*  exact answer (up to surrounding whitespace), per built-in task family and overall
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

from lmcore.config import EvaluateInstructConfig
from lmcore.data.builtin_instructions import FAMILIES, exact_match
from lmcore.data.instruct_dataset import InstructSplit, load_config
from lmcore.data.instruct_template import has_template_header
from lmcore.eval.generation import doc_start, sample_rows, split_row
from lmcore.progress import Progress
from lmcore.tokenizer import decode, load_tokenizer
from lmcore.train.checkpoint import LoadedModel, check_data, load_model
from lmcore.train.trainer import step_generator


@dataclass
class Response:
    """One generated answer to one test example."""

    example: dict[str, Any]
    text: str
    tokens: int
    ended: bool
    scores: dict[str, float] = field(default_factory=dict)


@torch.no_grad()
def respond(
    loaded: LoadedModel, tok, split: InstructSplit, indices: list[int], cfg: EvaluateInstructConfig
) -> list[Response]:
    """Generate a response to each test example in `indices` (in that order)."""
    examples = split.examples()
    start = doc_start(loaded)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in indices:
        groups[int(examples[i]["prompt_tokens"])].append(i)
    out: dict[int, Response] = {}
    call = 0
    progress = Progress(len(indices), f"respond {loaded.path}", "sample")
    for plen, members in sorted(groups.items()):
        for lo in range(0, len(members), cfg.batch_size):
            batch = members[lo : lo + cfg.batch_size]
            tokens, _ = split.rows(batch)
            prompt = torch.cat(
                (
                    torch.tensor([start] * len(batch), dtype=torch.long).view(len(batch), -1),
                    torch.from_numpy(tokens[:, :plen]),
                ),
                1,
            ).to(loaded.device)
            gen = step_generator(cfg.seed, 2000, call, loaded.device)  # disjoint from training's generators
            ids, _ = sample_rows(
                loaded,
                len(batch),
                split.width + len(start),
                gen,
                prompt=prompt,
                steps=cfg.steps or None,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
            )
            call += 1
            for i, row in zip(batch, ids.tolist()):
                body, ended = split_row(row, prompt.shape[1])
                out[i] = Response(examples[i], decode(tok, body), len(body), ended)
            progress.update(len(out))
    progress.close()
    return [out[i] for i in indices]


def score(responses: list[Response]) -> dict[str, Any]:
    """ROUGE-L, BLEU, format compliance and exact match per built-in family of one model's responses."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    families: dict[str, list[bool]] = defaultdict(list)
    fmt: dict[str, list[bool]] = defaultdict(list)
    rouge = []
    for r in responses:
        ref = r.example["output"]
        r.scores["rouge_l"] = scorer.score(ref, r.text)["rougeL"].fmeasure
        rouge.append(r.scores["rouge_l"])
        checks = {
            "non_empty": bool(r.text.strip()),
            "terminated": r.ended,
            "no_template_header": not has_template_header(r.text),
        }
        checks["compliant"] = all(checks.values())
        for k, v in checks.items():
            fmt[k].append(v)
        family = r.example.get("family")
        if family in FAMILIES:
            r.scores["exact_match"] = float(exact_match(r.text, ref))
            families[family].append(bool(r.scores["exact_match"]))
    n = max(len(responses), 1)
    result: dict[str, Any] = {
        "num_examples": len(responses),
        "rouge_l": sum(rouge) / n,
        "bleu": BLEU().corpus_score([r.text for r in responses], [[r.example["output"] for r in responses]]).score
        if responses
        else 0.0,
        "format": {k: sum(v) / len(v) for k, v in fmt.items()},
        "mean_response_tokens": sum(r.tokens for r in responses) / n,
    }
    if families:
        hits = [h for v in families.values() for h in v]
        result["exact_match"] = {
            "overall": sum(hits) / len(hits),
            **{f: sum(v) / len(v) for f, v in sorted(families.items())},
        }
    return result


def evaluate_checkpoint(
    path: str | Path,
    data_dir: str | Path,
    cfg: EvaluateInstructConfig,
    indices: list[int] | None = None,
    info: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[Response]]:
    """Generate and score one checkpoint's responses to the test split (the first num_examples, or `indices`).

    `info`, when given, receives what the checkpoint records (for the W&B config; lmcore/eval/wandb_log.py)."""
    data = load_config(data_dir)
    loaded = load_model(path, device=cfg.device, dtype=cfg.dtype)
    check_data(loaded, data, data_dir)
    tok = load_tokenizer(Path(data_dir) / data.get("tokenizer", "tokenizer.json"))
    split = InstructSplit(data_dir, "test", data)
    if indices is None:
        indices = list(range(len(split) if not cfg.num_examples else min(cfg.num_examples, len(split))))
    if info is not None:
        info.update(loaded.info, path=str(path), model_config=loaded.model_config.to_dict())
        info["num_params"] = sum(p.numel() for p in loaded.model.parameters())
    responses = respond(loaded, tok, split, indices, cfg)
    result = {
        "checkpoint": str(path),
        "architecture": loaded.architecture,
        "global_step": loaded.info.get("global_step"),
        **score(responses),
    }
    return result, responses


def compare(
    finetuned: list[str | Path],
    data_dir: str | Path,
    cfg: EvaluateInstructConfig,
    pretrained: list[str | Path | None] | None = None,
    infos: dict[str, dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], dict[str, list[Response]]]:
    """Each fine-tuned checkpoint beside its pretrained parent (the `parent` it records by default).

    Returns the results ({architecture: {"pretrained": ..., "finetuned": ...}}) and the responses by model;
    `infos`, when given, receives each model's checkpoint record under the same keys as the responses."""
    infos = {} if infos is None else infos
    results: dict[str, Any] = {}
    responses: dict[str, list[Response]] = {}
    for i, ft in enumerate(finetuned):
        ft_info: dict[str, Any] = {}
        ft_result, ft_resp = evaluate_checkpoint(ft, data_dir, cfg, info=ft_info)
        arch = ft_result["architecture"]
        entry = {"finetuned": ft_result}
        responses[f"{arch}/finetuned"], infos[f"{arch}/finetuned"] = ft_resp, ft_info
        parent = pretrained[i] if pretrained and i < len(pretrained) else _parent_of(ft)
        if parent:
            infos[f"{arch}/pretrained"] = {}
            entry["pretrained"], responses[f"{arch}/pretrained"] = evaluate_checkpoint(
                parent, data_dir, cfg, info=infos[f"{arch}/pretrained"]
            )
        results[arch] = entry
    return results, responses


def _parent_of(path: str | Path) -> str | None:
    from lmcore.train.checkpoint import load_checkpoint

    return (load_checkpoint(path).get("parent") or {}).get("path")
