"""One evaluation of one checkpoint, the same for every architecture: validation metrics, generation quality
(unconditional and continuations of validation prefixes, with a reference row from real validation documents),
and sampling speed, with quality against sampling steps where the sampler has steps."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lmcore.config import EvaluateConfig, apply_overrides
from lmcore.data import MemmapCorpus, load_meta
from lmcore.errors import CheckpointError, ConfigError
from lmcore.eval.generation import Sample, generate, steps_knob
from lmcore.eval.judge import GrammarJudge, Judge
from lmcore.eval.kinds import GRAMMAR_JUDGE, KIND_NOTES, metric_kinds
from lmcore.eval.speed import device_facts, measure, rate, warm_up
from lmcore.eval.text_metrics import text_metrics
from lmcore.eval.validation import validation_metrics
from lmcore.eval.validity import applies, story_logprob, validity_of_scores
from lmcore.tokenizer import EOS_ID, decode, load_tokenizer
from lmcore.train.checkpoint import LoadedModel, check_data, load_model
from lmcore.train.perf import sampling_flops


@dataclass
class Evaluation:
    """The results JSON (nested dict) and the samples behind it, by section."""

    results: dict[str, Any]
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    checkpoint_info: dict[str, Any] = field(default_factory=dict)  # what the checkpoint records (W&B config)


class _Context:
    """What every part of one evaluation shares."""

    def __init__(
        self,
        loaded: LoadedModel,
        tok,
        meta: dict[str, Any],
        data_dir: Path,
        cfg: EvaluateConfig,
        judge: Judge | GrammarJudge | None,
    ) -> None:
        self.loaded, self.tok, self.meta, self.data_dir, self.cfg, self.judge = loaded, tok, meta, data_dir, cfg, judge
        self.stories = applies(meta)
        self.entropy = (meta.get("entropy") or {}).get("val", {}).get("nats_per_story")
        train_cfg = loaded.info.get("train_config") or {}
        self.length = cfg.length or int(train_cfg.get("seq_len", 128))
        self.steps = cfg.steps if steps_knob(loaded) is not None else None

    def quality(self, samples: list[Sample], texts: list[str] | None = None) -> dict[str, float]:
        """Text statistics (of `texts`, default the full texts) + validity of the full texts + judge perplexity."""
        out = text_metrics(
            texts if texts is not None else [s.text for s in samples],
            [s.ids for s in samples],
            [s.ended for s in samples],
        )
        if self.stories:
            scores = [story_logprob(s.text) for s in samples]
            for s, score in zip(samples, scores):
                s.meta["valid"] = score is not None
            out.update(validity_of_scores(scores, self.entropy))
        if self.judge is not None and samples:
            out.update(self.judge.perplexity(samples))
        return out

    def generate(
        self,
        num: int,
        tag: int,
        steps: int | None,
        prompts: list[list[int]] | None = None,
    ) -> tuple[list[Sample], dict[str, float]]:
        cfg = self.cfg
        what = "continuations" if prompts is not None else f"samples, {steps} steps" if steps else "samples"
        return generate(
            self.loaded,
            self.tok,
            num,
            self.length,
            prompts=prompts,
            steps=steps,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            batch_size=min(cfg.batch_size, max(num, 1)),
            seed=cfg.seed,
            tag=tag,
            progress=f"evaluate {self.loaded.architecture}: {what}",
        )


def _sampling_compute(ctx: _Context, samples: list[Sample], steps: int | None, seconds: float) -> dict[str, float]:
    """Sampling compute per generated token (the closing <eos> included, as tokens/s counts): the sampler's forward
    FLOPs (lmcore/train/perf.py `sampling_flops`: AR decodes each row's tokens with a KV cache; diffusion and SDD
    pay `steps` passes over the whole row whatever its text length) and the measured wall time of the batched run."""
    tokens = sum(len(s.ids) + s.ended for s in samples)
    if not tokens:
        return {}
    loaded = ctx.loaded
    arch, k = loaded.architecture, loaded.objective.slots_per_position()
    if steps is None:  # left to right, unconditional: one cached forward and one head per generated token
        flops = sum(sampling_flops(loaded.model_config, len(s.ids) + s.ended, None, architecture=arch) for s in samples)
    else:
        flops = len(samples) * sampling_flops(loaded.model_config, ctx.length, steps, k, architecture=arch)
    return {"sampling_flops_per_token": flops / tokens, "seconds_per_token": seconds / tokens}


def _val_documents(data_dir: Path, meta: dict[str, Any], num: int, min_len: int) -> list[list[int]]:
    """Up to `num` validation documents (without <eos>) of at least `min_len` tokens, evenly spread over the split."""
    val = MemmapCorpus(data_dir, "val", meta)
    picks = np.linspace(0, val.num_documents - 1, num=min(max(num, 0) * 2, val.num_documents)).astype(int)
    docs = []
    for i in dict.fromkeys(picks.tolist()):
        lo, hi = int(val.offsets[i]), int(val.offsets[i + 1])
        toks = [int(t) for t in val.tokens[lo:hi] if int(t) != EOS_ID]
        if len(toks) >= min_len:
            docs.append(toks)
        if len(docs) == num:
            break
    return docs


def _generation(ctx: _Context, ev: Evaluation, timing: dict[str, float]) -> None:
    cfg, res = ctx.cfg, ev.results
    section: dict[str, Any] = {
        "steps": ctx.steps,
        "length": ctx.length,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
    }
    start = time.perf_counter()
    if cfg.num_samples:
        samples, t = ctx.generate(cfg.num_samples, 0, ctx.steps)
        ev.samples["unconditional"] = samples
        section["unconditional"] = {**ctx.quality(samples), **_sampling_compute(ctx, samples, ctx.steps, t["seconds"])}
        res.setdefault("speed", {})["batched"] = {
            "steps": ctx.steps,
            **rate(t["tokens"], t["seconds"], t["samples"], t["batch_size"]),
        }
    if cfg.num_continuations:
        docs = _val_documents(ctx.data_dir, ctx.meta, cfg.num_continuations, cfg.prefix_tokens + 1)
        prompts = [d[: cfg.prefix_tokens] for d in docs]
        samples, _ = ctx.generate(len(prompts), 1, ctx.steps, prompts)
        ev.samples["continuation"] = samples
        section["continuation"] = {
            "prefix_tokens": cfg.prefix_tokens,
            **ctx.quality(samples, [s.continuation for s in samples]),
        }
    # Whole validation documents through the same metrics: what the numbers are for the text the model learns.
    docs = _val_documents(ctx.data_dir, ctx.meta, max(cfg.num_samples, 2), 1)
    real = [Sample([], d, True) for d in docs]
    for s in real:
        s.text = s.continuation = decode(ctx.tok, s.ids)
    section["reference"] = ctx.quality(real)
    timing["generation_s"] = time.perf_counter() - start
    res["generation"] = section


def _speed(ctx: _Context, ev: Evaluation, timing: dict[str, float]) -> None:
    cfg, res = ctx.cfg, ev.results
    start = time.perf_counter()
    speed = res.setdefault("speed", {})
    speed.update({**device_facts(ctx.loaded), "length": ctx.length})
    warm_up(ctx.loaded, ctx.length, ctx.steps)
    speed["batch_1"] = {
        "steps": ctx.steps,
        **measure(ctx.loaded, ctx.length, ctx.steps, 1, cfg.speed_repeats, cfg.seed, cfg.temperature, cfg.top_p),
    }
    if "batched" not in speed:
        speed["batched"] = {
            "steps": ctx.steps,
            **measure(ctx.loaded, ctx.length, ctx.steps, cfg.batch_size, 1, cfg.seed, cfg.temperature, cfg.top_p),
        }
    if ctx.steps is not None:  # quality and speed against the number of sampling steps
        sweep: dict[str, Any] = {}
        for steps in cfg.sweep():
            if steps == ctx.steps and "unconditional" in ev.samples:  # already sampled, and with more samples
                samples, batched = ev.samples["unconditional"], speed["batched"]
                seconds = batched["seconds_per_sample"] * batched["samples"]
            else:
                samples, t = ctx.generate(cfg.sweep_samples, 10 + steps, steps)
                ev.samples[f"steps_{steps}"] = samples
                batched = rate(t["tokens"], t["seconds"], t["samples"], t["batch_size"])
                seconds = t["seconds"]
            one = measure(ctx.loaded, ctx.length, steps, 1, cfg.speed_repeats, cfg.seed, cfg.temperature, cfg.top_p)
            sweep[f"steps_{steps}"] = {
                "steps": steps,
                "samples": len(samples),
                **ctx.quality(samples),
                **_sampling_compute(ctx, samples, steps, seconds),
                "tokens_per_sec_batched": batched["tokens_per_sec"],
                "seconds_per_sample_batched": batched["seconds_per_sample"],
                "batch_size": batched["batch_size"],
                "tokens_per_sec_batch1": one["tokens_per_sec"],
                "seconds_per_sample_batch1": one["seconds_per_sample"],
            }
        res["quality_vs_steps"] = sweep
    timing["speed_s"] = time.perf_counter() - start


DEFAULT_AR_JUDGE = "checkpoints/ar/best.pt"  # what `judge: auto` uses on corpora without a grammar


def load_judge(
    spec: str | None, loaded: LoadedModel, meta: dict[str, Any], tok, required: bool, cfg: EvaluateConfig
) -> tuple[Judge | GrammarJudge | None, str | None]:
    """The generative-perplexity judge and, when there is none, why: (judge, None) or (None, note).

    `grammar`: the builtin:stories grammar (exact, under the generating grammar); other corpora are an error.
    `auto`: the grammar where the corpus has one, else the pipeline's AR checkpoint (DEFAULT_AR_JUDGE) when it
    exists. A path: an AR checkpoint with the same tokenizer; named explicitly (`required`) it must exist. A
    judge is never the model it judges: an AR checkpoint that is the evaluated one is not used (the note says so).
    """
    spec = (spec or "").strip()
    if not spec:
        return None, "no judge (evaluate.judge is empty)"
    if spec in (GRAMMAR_JUDGE, "auto") and applies(meta):
        return GrammarJudge(tok), None
    if spec == GRAMMAR_JUDGE:
        raise ConfigError(
            f"evaluate.judge: '{GRAMMAR_JUDGE}' needs a builtin:stories corpus; {loaded.path}'s data is "
            f"{meta.get('source')!r} (name an AR checkpoint instead)"
        )
    path = DEFAULT_AR_JUDGE if spec == "auto" else spec
    if not required and not Path(path).exists():
        return None, f"no judge: {path} does not exist"
    if Path(path).resolve() == loaded.path.resolve():
        return None, f"not computed: the judge {path} is the evaluated checkpoint (a model does not judge itself)"
    judge_model = load_model(path, None, cfg.device, cfg.dtype)
    theirs, ours = judge_model.info.get("tokenizer") or {}, loaded.info.get("tokenizer") or {}
    if theirs.get("sha256") != ours.get("sha256"):
        raise CheckpointError(
            f"{path}: the judge's tokenizer differs from {loaded.path}'s "
            f"(vocab {theirs.get('vocab_size')} vs {ours.get('vocab_size')}); "
            "generative perplexity needs the same tokenizer"
        )
    return Judge(judge_model), None


def sampler_overrides(loaded: LoadedModel, spec: str) -> dict[str, Any]:
    """Apply `evaluate.sampler` ("key=value,key=value", values read as YAML) to the loaded objective's settings,
    validated like its params.yaml section; returns the changes (recorded in the results)."""
    pairs: dict[str, Any] = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"evaluate.sampler: expected key=value pairs, got {item!r}")
        pairs[key.strip()] = yaml.safe_load(value)
    if pairs:
        where = f"evaluate.sampler ({loaded.architecture} section)"
        loaded.objective.cfg = apply_overrides(loaded.objective.cfg, pairs, where)
    return pairs


def evaluate(
    checkpoint: str | Path,
    data_dir: str | Path,
    cfg: EvaluateConfig,
    architecture: str | None = None,
    judge: str | None = None,
    judge_required: bool = False,
    log: Callable[[str], None] = print,
) -> Evaluation:
    """Evaluate one checkpoint of any architecture on a prepared corpus; see EvaluateConfig for the knobs."""
    start = time.perf_counter()
    loaded = load_model(checkpoint, architecture, cfg.device, cfg.dtype)
    changed = sampler_overrides(loaded, cfg.sampler)
    data_dir = Path(data_dir)
    meta = load_meta(data_dir)
    check_data(loaded, meta, data_dir)
    tok = load_tokenizer(data_dir / meta.get("tokenizer", "tokenizer.json"))
    groups = cfg.metric_groups()
    judge_path = judge if judge is not None else cfg.judge
    ev = Evaluation(
        {
            "architecture": loaded.architecture,
            "architecture_source": loaded.architecture_source,
            "metric_kind": loaded.objective.metric_kind,
            "checkpoint": str(checkpoint),
            "step": loaded.info.get("global_step"),
            "data_dir": str(data_dir),
            "source": meta.get("source"),
            "num_params": sum(p.numel() for p in loaded.model.parameters()),
            **({"sampler_overrides": changed} if changed else {}),
        }
    )
    ev.checkpoint_info = {
        **loaded.info,
        "path": str(checkpoint),
        "model_config": loaded.model_config.to_dict(),
        "num_params": ev.results["num_params"],
    }
    timing: dict[str, float] = {}
    log(
        f"evaluating {checkpoint}: {loaded.architecture} ({loaded.architecture_source}), step "
        f"{ev.results['step']}, on {loaded.device}"
    )
    if groups & {"perplexity", "accuracy"}:
        t0 = time.perf_counter()
        val = validation_metrics(loaded, data_dir, cfg.eval_batches)
        ev.results["val"], ev.results["val_info"] = val["metrics"], val["info"]
        timing["validation_s"] = time.perf_counter() - t0
        log(f"  val: {_short(val['metrics'])}")
    if groups & {"generation", "speed"}:
        judge_obj, judge_note = load_judge(judge_path, loaded, meta, tok, judge_required, cfg)
        ev.results["judge"] = (
            GRAMMAR_JUDGE if isinstance(judge_obj, GrammarJudge) else str(judge_obj.loaded.path) if judge_obj else None
        )
        if judge_note:
            ev.results["judge_note"] = judge_note
            log(f"  generative perplexity: {judge_note}")
        ctx = _Context(loaded, tok, meta, data_dir, cfg, judge_obj)
        if "generation" in groups:
            _generation(ctx, ev, timing)
            log(f"  generation: {_short(ev.results['generation'].get('unconditional', {}))}")
        if "speed" in groups:
            _speed(ctx, ev, timing)
            log(f"  speed: {_short(ev.results['speed']['batched'])}")
    timing["total_s"] = time.perf_counter() - start
    ev.results["timing"] = timing
    kind = metric_kinds(ev.results)
    ev.results["kind"] = kind
    # Spelled out for the validation numbers, whose meaning differs across architectures
    # (docs/architecture.md, "Metrics").
    ev.results["kind_notes"] = {
        k: KIND_NOTES[k] for k in sorted({v for n, v in kind.items() if n.startswith("val.")}) if k in KIND_NOTES
    }
    order = (
        "val",
        "val_info",
        "judge",
        "judge_note",
        "generation",
        "speed",
        "quality_vs_steps",
        "timing",
        "kind",
        "kind_notes",
    )
    ev.results = {
        **{k: v for k, v in ev.results.items() if k not in order},
        **{k: ev.results[k] for k in order if k in ev.results},
    }
    return ev


def _short(metrics: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
