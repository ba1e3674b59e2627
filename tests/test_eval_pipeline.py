"""Evaluation of tiny trained checkpoints of every architecture: same numbers as training, architecture from the
checkpoint, clear errors, judge perplexity, continuations, and the evaluate/compare/generate stages."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lmcore.config import EvaluateConfig, TrainConfig
from lmcore.data import MemmapCorpus
from lmcore.errors import CheckpointError, ConfigError
from lmcore.eval.generation import Sample, generate
from lmcore.eval.judge import GrammarJudge, Judge
from lmcore.eval.kinds import metric_kinds
from lmcore.eval.runner import evaluate, load_judge, sampler_overrides
from lmcore.eval.validation import validation_metrics
from lmcore.models import ModelConfig
from lmcore.objectives import get_objective
from lmcore.tokenizer import EOS_ID, decode, load_tokenizer
from lmcore.train.checkpoint import load_model, resolve_architecture
from lmcore.train.perf import sampling_flops
from lmcore.train.run import Outputs, pretrain

ROOT = Path(__file__).resolve().parents[1]
TINY = {"d_model": 32, "n_heads": 4, "n_layers": 2, "d_ff": 64}
ARCHS = ("ar", "diffusion", "sdd")


@pytest.fixture(scope="module")
def ckpts(corpus, tmp_path_factory) -> dict[str, Path]:
    """A best.pt per architecture after a few steps on the small story corpus."""
    root = tmp_path_factory.mktemp("eval_ckpts")
    out = {}
    for arch in ARCHS:
        cfg = TrainConfig(
            max_steps=8,
            batch_size=4,
            seq_len=48,
            learning_rate=3e-3,
            warmup_steps=2,
            eval_every=4,
            eval_batches=2,
            log_every=4,
            checkpoint_every=8,
            num_samples=0,
            wandb=False,
            device="cpu",
        )
        pretrain(get_objective(arch), ModelConfig(**TINY), cfg, corpus, Outputs(root / arch), f"{arch}-t")
        out[arch] = root / arch / "best.pt"
    return out


def small_cfg(**kw) -> EvaluateConfig:
    base = dict(
        num_samples=4,
        num_continuations=2,
        prefix_tokens=8,
        length=32,
        steps=4,
        steps_sweep="2,4",
        sweep_samples=2,
        batch_size=4,
        speed_repeats=1,
        judge="",
        device="cpu",
        wandb=False,
    )
    return EvaluateConfig(**{**base, **kw})


@pytest.mark.parametrize("arch", ARCHS)
def test_validation_reproduces_the_training_numbers(arch, ckpts, corpus):
    loaded = load_model(ckpts[arch])
    val = validation_metrics(loaded, corpus)
    best = torch.load(ckpts[arch], weights_only=False)["best_val_loss"]
    assert val["metrics"]["loss"] == pytest.approx(best, rel=1e-6)
    kinds = {
        "ar": ("exact", "exact", "next_token"),
        "diffusion": ("nelbo_bound", "upper_bound", "masked_positions"),
        "sdd": ("denoising_ce", "not_a_likelihood", "corrupted_positions"),
    }[arch]
    assert (val["kind"]["loss"], val["kind"]["perplexity"], val["kind"]["accuracy"]) == kinds
    assert val["metrics"]["perplexity"] == pytest.approx(math.exp(val["metrics"]["loss"]))
    if arch == "diffusion":
        assert val["info"]["t_samples_per_row"] == get_objective("diffusion").cfg.eval_t_samples
    if arch == "sdd":  # accuracy on corrupted positions, beside accuracy on all positions
        assert val["kind"]["all_accuracy"] == "all_positions"
        assert val["metrics"]["all_accuracy"] > val["metrics"]["accuracy"]


@pytest.mark.parametrize("arch", ARCHS)
def test_architecture_is_read_or_inferred_and_contradictions_are_errors(arch, ckpts, tmp_path):
    ckpt = torch.load(ckpts[arch], weights_only=False)
    assert resolve_architecture(ckpt, None, "x") == (arch, "recorded")
    assert resolve_architecture(ckpt, arch, "x") == (arch, "recorded")
    other = next(a for a in ARCHS if a != arch)
    with pytest.raises(
        CheckpointError, match=f"--architecture {other} contradicts the checkpoint, which records architecture '{arch}'"
    ):
        resolve_architecture(ckpt, other, "x")
    del ckpt["architecture"], ckpt["format_version"]  # an older checkpoint: the model config (and weight names) tell
    torch.save(ckpt, tmp_path / "old.pt")
    loaded = load_model(tmp_path / "old.pt")
    assert (loaded.architecture, loaded.architecture_source) == (arch, "inferred")
    with pytest.raises(CheckpointError, match="inferred from its model config"):
        load_model(tmp_path / "old.pt", other)


def test_tokenizer_mismatch_and_a_non_ar_judge_are_errors(ckpts, other_corpus):
    with pytest.raises(CheckpointError, match="tokenizer does not match"):
        evaluate(ckpts["ar"], other_corpus, small_cfg(metrics="perplexity"))
    web = {"source": "hf:Skylion007/openwebtext"}  # a corpus without a grammar: the judge is an AR checkpoint
    with pytest.raises(CheckpointError, match="judge must be an autoregressive checkpoint"):
        load_judge(str(ckpts["diffusion"]), load_model(ckpts["sdd"]), web, None, True, small_cfg())
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_judge("missing/best.pt", load_model(ckpts["sdd"]), web, None, True, small_cfg())
    judge, note = load_judge("missing/best.pt", load_model(ckpts["sdd"]), web, None, False, small_cfg())
    assert judge is None and "does not exist" in note


def test_the_judge_is_never_the_judged_model(ckpts, corpus):
    """On builtin:stories `auto` judges with the grammar (exact); an AR checkpoint is not its own judge; `grammar`
    on a corpus without a grammar is a one-line error."""
    tok, ar = load_tokenizer(corpus), load_model(ckpts["ar"])
    stories = json.loads((corpus / "meta.json").read_text())
    for spec in ("auto", "grammar"):
        judge, note = load_judge(spec, ar, stories, tok, False, small_cfg())
        assert isinstance(judge, GrammarJudge) and note is None
    judge, note = load_judge(str(ckpts["ar"]), ar, {"source": "x.txt"}, tok, True, small_cfg())
    assert judge is None and "is the evaluated checkpoint" in note
    judge, _ = load_judge(str(ckpts["ar"]), load_model(ckpts["sdd"]), {"source": "x.txt"}, tok, True, small_cfg())
    assert isinstance(judge, Judge) and judge.loaded.path.resolve() == ckpts["ar"].resolve()
    with pytest.raises(ConfigError, match="evaluate.judge: 'grammar' needs a builtin:stories corpus"):
        load_judge("grammar", ar, {"source": "x.txt"}, tok, False, small_cfg())
    res = evaluate(ckpts["ar"], corpus, small_cfg(judge=str(ckpts["ar"]), metrics="generation"), log=lambda s: None)
    assert res.results["judge"] is None and "gen_perplexity" not in res.results["generation"]["unconditional"]
    assert "is the evaluated checkpoint" in res.results["judge_note"]


def test_grammar_judge_is_exact_under_the_generating_grammar(corpus):
    """The grammar judge of the validation stories themselves is the corpus entropy per token, exactly (the same
    log-probabilities, the same token count: each story's tokens + <eos>); text it cannot produce is not judged."""
    tok = load_tokenizer(corpus)
    val = MemmapCorpus(corpus, "val")
    stories = [Sample([], [int(t) for t in val.document(i)[:-1]], True) for i in range(val.num_documents)]
    for s in stories:
        s.text = decode(tok, s.ids)
    out = GrammarJudge(tok).perplexity(stories)
    floor = json.loads((corpus / "meta.json").read_text())["entropy"]["val"]
    assert out["judged_samples"] == val.num_documents and out["judged_tokens"] == val.num_tokens
    assert out["gen_nll_per_token"] == pytest.approx(floor["nats_per_token"], rel=1e-9)
    broken = Sample([], stories[0].ids, True)
    broken.text = stories[0].text + " " + stories[0].text  # a story told twice is not a story
    assert GrammarJudge(tok).perplexity([broken]) == {"judged_samples": 0}
    kinds = metric_kinds({"judge": "grammar", "generation": {"unconditional": out}})
    assert kinds["gen_perplexity"] == kinds["gen_nll_per_token"] == "judge_grammar"


def test_judge_scores_exactly_the_generated_tokens(ckpts):
    judge = Judge(load_model(ckpts["ar"]))
    ctx, tgt = [11, 12, 13], [14, 15, EOS_ID]
    (nll, count), (nll_short, _) = judge.sequence_nll([ctx, []], [tgt, [20]])
    ids = torch.tensor([[EOS_ID, *ctx, *tgt]])
    logp = F.log_softmax(judge.loaded.model(ids[:, :-1]).float(), -1)[0]
    expected = -sum(logp[3 + j, t].item() for j, t in enumerate(tgt))  # targets after <eos> + 3 context tokens
    assert count == 3 and nll == pytest.approx(expected, rel=1e-5)
    alone = judge.sequence_nll([[]], [[20]])[0][0]  # padding in a batch changes nothing
    assert nll_short == pytest.approx(alone, rel=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_continuations_keep_the_prompt(arch, ckpts, corpus):
    loaded = load_model(ckpts[arch])
    tok = load_tokenizer(corpus)
    prompts = [[40, 41, 42, 43], [50, 51, 52, 53]]
    samples, timing = generate(loaded, tok, 2, 20, prompts=prompts, steps=3, batch_size=2)
    for s, p in zip(samples, prompts):
        assert s.prompt_ids == p and len(s.prompt_ids) + len(s.ids) <= 20
        assert s.text == decode(tok, p + s.ids) and s.continuation == decode(tok, s.ids)
    assert timing["samples"] == 2 and timing["seconds"] > 0


def run_stage(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, str(ROOT / "stages" / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_evaluate_and_compare_stages(ckpts, corpus, tmp_path):
    # AR and SDD in process, diffusion through the stage script (flags, outputs, exit code).
    for arch in ("ar", "sdd"):
        ev = evaluate(ckpts[arch], corpus, small_cfg(judge=str(ckpts["ar"])), log=lambda s: None)
        (tmp_path / f"eval_{arch}.json").write_text(json.dumps(ev.results))
        # Sampling compute per generated token (the closing <eos> included), from the model's shape.
        loaded = load_model(ckpts[arch])
        if arch == "ar":  # one KV-cache decode per token, each row as long as it ran
            unc, samples = ev.results["generation"]["unconditional"], ev.samples["unconditional"]
            flops = sum(
                sampling_flops(loaded.model_config, len(s.ids) + s.ended, None, architecture="ar") for s in samples
            )
        else:  # `steps` passes over the whole 32-token row, whatever its text length
            unc, samples = ev.results["quality_vs_steps"]["steps_2"], ev.samples["steps_2"]
            flops = len(samples) * sampling_flops(loaded.model_config, 32, 2, loaded.objective.k, architecture=arch)
        tokens = sum(len(s.ids) + s.ended for s in samples)
        assert unc["sampling_flops_per_token"] == pytest.approx(flops / tokens, rel=1e-12)
        assert unc["seconds_per_token"] > 0 and ev.results["kind"]["sampling_flops_per_token"] == "flops_formula"
    proc = run_stage(
        "evaluate.py",
        "--checkpoint",
        str(ckpts["diffusion"]),
        "--data_dir",
        str(corpus),
        "--output",
        str(tmp_path / "eval_diffusion.json"),
        "--judge",
        str(ckpts["ar"]),
        "--num_samples",
        "4",
        "--num_continuations",
        "2",
        "--prefix_tokens",
        "8",
        "--length",
        "32",
        "--steps",
        "4",
        "--steps_sweep",
        "2,4",
        "--sweep_samples",
        "2",
        "--speed_repeats",
        "1",
        "--device",
        "cpu",
        "--no_wandb",
        "--params",
        str(tmp_path / "none.yaml"),
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads((tmp_path / "eval_diffusion.json").read_text())
    assert res["architecture"] == "diffusion" and res["architecture_source"] == "recorded"
    assert res["kind"]["val.perplexity"] == "upper_bound" and res["kind"]["val.loss"] == "nelbo_bound"
    assert "upper bound" in res["kind_notes"]["upper_bound"]
    unc = res["generation"]["unconditional"]
    for key in (
        "self_bleu4",
        "distinct_1",
        "distinct_2",
        "distinct_3",
        "repeated_4gram_rate",
        "mean_length_words",
        "proper_ending_fraction",
        "unigram_entropy",
        "validity_rate",
        "gen_perplexity",
    ):
        assert key in unc and res["kind"][key], key
    assert res["kind"]["gen_perplexity"] == "judge_ar" and res["kind"]["validity_rate"] == "grammar_exact"
    assert res["kind"]["tokens_per_sec"] == "measured"
    assert res["generation"]["reference"]["validity_rate"] == 1.0  # real validation stories
    assert res["generation"]["continuation"]["prefix_tokens"] == 8
    assert sorted(res["quality_vs_steps"]) == ["steps_2", "steps_4"]
    assert res["speed"]["device"] == "cpu" and res["speed"]["dtype"] == "fp32"
    assert res["speed"]["batch_1"]["batch_size"] == 1 and res["speed"]["batch_1"]["tokens_per_sec"] > 0
    samples = (tmp_path / "eval_diffusion_samples.txt").read_text()
    assert samples.count("### unconditional") == 4 and samples.count("### continuation") == 2

    ar = json.loads((tmp_path / "eval_ar.json").read_text())
    assert "quality_vs_steps" not in ar and ar["speed"]["batched"]["steps"] is None  # AR: KV cache, no steps
    assert ar["kind"]["val.loss"] == "exact"

    proc = run_stage(
        "compare.py",
        "--inputs",
        *(str(tmp_path / f"eval_{a}.json") for a in ARCHS),
        "--output",
        str(tmp_path / "comparison.md"),
        "--plot",
        str(tmp_path / "q.png"),
        "--sampling_plot",
        str(tmp_path / "qf.png"),
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "qf.png").read_bytes()[:4] == b"\x89PNG"
    table = (tmp_path / "comparison.md").read_text()
    assert "sampling FLOPs/token" in table and "| ar | KV cache |" in table
    assert "| metric | ar | diffusion | sdd | reference |" in table
    assert "(upper_bound)" in table and "(not_a_likelihood)" in table and "| validity rate |" in table
    assert "## Quality against sampling steps" in table
    assert (tmp_path / "q.png").read_bytes()[:4] == b"\x89PNG"

    proc = run_stage("compare.py", "--inputs", str(tmp_path / "missing.json"), "--output", str(tmp_path / "c.md"))
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "missing.json" in proc.stderr
    assert not (tmp_path / "c.md").exists()


def test_stage_errors_are_one_line(ckpts, corpus, tmp_path):
    proc = run_stage(
        "evaluate.py",
        "--checkpoint",
        str(ckpts["sdd"]),
        "--data_dir",
        str(corpus),
        "--architecture",
        "ar",
        "--output",
        str(tmp_path / "x.json"),
        "--no_wandb",
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "--architecture ar contradicts the checkpoint, which records architecture 'sdd'" in proc.stderr
    assert not (tmp_path / "x.json").exists()
    proc = run_stage(
        "generate.py",
        "--checkpoint",
        str(ckpts["ar"]),
        "--prompt",
        "Once upon a time",
        "--num_samples",
        "2",
        "--max_new_tokens",
        "10",
        "--device",
        "cpu",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("=== sample") == 2 and proc.stdout.count("Once upon a time") == 2


def test_sampler_settings_change_for_one_evaluation(ckpts):
    """evaluate.sampler: key=value pairs on the checkpoint's objective section, validated like params.yaml."""
    loaded = load_model(ckpts["sdd"])
    assert loaded.objective.cfg.renoise is True
    assert sampler_overrides(loaded, "renoise=false, sampling_steps=8") == {"renoise": False, "sampling_steps": 8}
    assert loaded.objective.cfg.renoise is False and loaded.objective.cfg.sampling_steps == 8
    assert sampler_overrides(loaded, "") == {}
    for bad, message in (("nope=1", "nope"), ("renoise", "expected key=value"), ("renoise=maybe", "true/false")):
        with pytest.raises(ConfigError, match=message):
            sampler_overrides(load_model(ckpts["sdd"]), bad)
