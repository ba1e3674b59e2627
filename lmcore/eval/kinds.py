"""What kind of number each evaluation metric is, so that results say where architectures are not comparable."""

from __future__ import annotations

from typing import Any

# val/loss, val/perplexity and val/accuracy by the objective's metric_kind (docs/architecture.md, "Metrics").
VAL_KINDS: dict[str, dict[str, str]] = {
    "exact": {"loss": "exact", "perplexity": "exact", "accuracy": "next_token"},
    "nelbo_bound": {"loss": "nelbo_bound", "perplexity": "upper_bound", "accuracy": "masked_positions"},
    "denoising_ce": {"loss": "denoising_ce", "perplexity": "not_a_likelihood", "accuracy": "corrupted_positions"},
}
# Extra metrics an objective reports (SDD's `all_`/`ignore_` pairs, AR's figures on packed windows).
EXTRA_KINDS = {
    "all_accuracy": "all_positions",
    "ignore_accuracy": "ignore_positions",
    "window_loss": "exact_windows",
    "window_accuracy": "next_token_windows",
}
# The `evaluate.judge` value that makes the builtin:stories grammar the generative-perplexity judge.
GRAMMAR_JUDGE = "grammar"
# Generation and speed metrics mean the same for every architecture (gen_* under an AR judge; see metric_kinds).
SAMPLE_KINDS = {
    "gen_perplexity": "judge_ar",
    "gen_nll_per_token": "judge_ar",
    "judged_tokens": "count",
    "judged_samples": "count",
    "validity_rate": "grammar_exact",
    "valid": "count",
    "grammar_nll_per_valid_story": "grammar_exact",
    "corpus_entropy_per_story": "grammar_exact",
    "sampling_flops_per_token": "flops_formula",
    "seconds_per_token": "measured",
    "tokens_per_sec": "measured",
    "seconds_per_sample": "measured",
}

KIND_NOTES = {
    "exact": "exact next-token cross-entropy per document token, each document read from its start (nats/token); "
    "exp(loss) is the true perplexity",
    "exact_windows": "exact next-token cross-entropy on windows of the packed stream (which start mid-document)",
    "next_token_windows": "top-1 next-token accuracy on windows of the packed stream",
    "nelbo_bound": "continuous-time NELBO per document token (nats); an upper bound on the NLL",
    "upper_bound": "exp(NELBO): an upper bound on perplexity",
    "denoising_ce": "denoising cross-entropy on a t grid over (0,1) (nats/position); not a likelihood",
    "not_a_likelihood": "exp(denoising cross-entropy): not a perplexity of the text",
    "next_token": "top-1 next-token accuracy",
    "masked_positions": "top-1 accuracy on masked positions that hold text (<ignore> padding excluded)",
    "corrupted_positions": "top-1 accuracy on corrupted text positions (truth no longer the top candidate; "
    "<ignore> padding excluded)",
    "all_positions": "top-1 accuracy on all scored positions, copyable ones included",
    "ignore_positions": "top-1 accuracy on the <ignore> padding after <eos>",
    "sample_statistic": "statistic of the decoded samples; same definition for every architecture",
    "judge_ar": "exact NLL of the generated tokens under a separate judge AR checkpoint (per token, up to <eos>)",
    "judge_grammar": "exact NLL per token under the generating grammar (builtin:stories), over the valid samples "
    "(an invalid one has probability 0); tokens counted as the entropy floor counts them",
    "grammar_exact": "exact: parsed by the builtin:stories grammar (valid = the grammar can produce it)",
    "measured": "wall-clock measurement on the recorded device and dtype",
    "flops_formula": "sampler forward FLOPs per generated token from the model's shape (lmcore/train/perf.py "
    "sampling_flops: AR one KV-cache decode per token; diffusion and SDD steps × the whole row)",
    "count": "a count",
}


def val_kinds(metric_kind: str, names: list[str]) -> dict[str, str]:
    """The kind of each validation metric name for an objective with this metric_kind."""
    base = VAL_KINDS[metric_kind]
    return {n: base.get(n) or EXTRA_KINDS.get(n, "other") for n in names}


def metric_kinds(results: dict[str, Any]) -> dict[str, str]:
    """{metric: kind} for every metric in a results dict: `val.<name>` for validation metrics (their kind depends
    on the objective), the bare name for generation and speed metrics (the same in every section and sweep row)."""
    from lmcore.eval.text_metrics import TEXT_KINDS

    known = {**TEXT_KINDS, **SAMPLE_KINDS}
    if results.get("judge") == GRAMMAR_JUDGE:
        known.update(gen_perplexity="judge_grammar", gen_nll_per_token="judge_grammar")
    out: dict[str, str] = {}
    if "val" in results:
        names = list(results["val"])
        out.update({f"val.{n}": k for n, k in val_kinds(results["metric_kind"], names).items()})

    def walk(tree: Any) -> None:
        for key, value in tree.items():
            if isinstance(value, dict):
                walk(value)
                continue
            base = key.rsplit("_batch", 1)[0]  # tokens_per_sec_batch1 / _batched → tokens_per_sec
            kind = known.get(key) or known.get(base)
            if kind and isinstance(value, (int, float)) and not isinstance(value, bool):
                out[key if key in known else base] = kind

    for section in ("generation", "speed", "quality_vs_steps"):
        if isinstance(results.get(section), dict):
            walk(results[section])
    return out
