"""Generative perplexity: how likely a reference model (the judge), never the model being judged, finds the samples.

Two judges (lmcore/eval/runner.py `load_judge` picks one):
- `GrammarJudge`, on builtin:stories: exact, under the generating grammar. The grammar gives each text its exact
  probability (lmcore/data/builtin_stories.py), so the judge is the true distribution of the corpus; its
  gen_nll_per_token is in the unit of the entropy floor. A text the grammar cannot produce has probability 0
  (infinite NLL), so only the valid samples are judged (`judged_samples`); the validity rate says how many.
- `Judge`, an AR checkpoint other than the evaluated one. Each sample is scored as a document: the judge reads
  <eos> (a document start on the packed stream it was trained on), the prompt if any, then the generated tokens;
  the generated tokens up to the first <eos> are scored, that <eos> included when the sample emitted one.
Perplexity = exp(total NLL / total scored tokens), per token over the judged samples. Degenerate text can score
well (a loop of one likely phrase), so report it with unigram entropy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lmcore.errors import CheckpointError
from lmcore.eval.generation import Sample
from lmcore.eval.kinds import GRAMMAR_JUDGE
from lmcore.eval.validity import story_logprob
from lmcore.tokenizer import EOS_ID, PAD_ID, encode_documents
from lmcore.train.checkpoint import LoadedModel


class Judge:
    """An autoregressive checkpoint that scores token sequences."""

    def __init__(self, loaded: LoadedModel, batch_size: int = 32) -> None:
        if not loaded.objective.causal:
            raise CheckpointError(
                f"{loaded.path}: the judge must be an autoregressive checkpoint, "
                f"got architecture '{loaded.architecture}'"
            )
        self.loaded, self.batch_size = loaded, batch_size

    @property
    def tokenizer_identity(self) -> dict | None:
        """The judge's tokenizer identity, to check against the evaluated model's."""
        return self.loaded.info.get("tokenizer")

    @torch.no_grad()
    def sequence_nll(
        self, contexts: Sequence[Sequence[int]], targets: Sequence[Sequence[int]]
    ) -> list[tuple[float, int]]:
        """(sum of -log p, count) of each `targets` row following <eos> + its `contexts` row."""
        model, device = self.loaded.model, self.loaded.device
        out: list[tuple[float, int]] = []
        for lo in range(0, len(targets), self.batch_size):
            ctx, tgt = contexts[lo : lo + self.batch_size], targets[lo : lo + self.batch_size]
            rows = [[EOS_ID, *c, *t] for c, t in zip(ctx, tgt)]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
            scored = torch.zeros((len(rows), width - 1), dtype=torch.bool)
            for i, (r, c, t) in enumerate(zip(rows, ctx, tgt)):
                ids[i, : len(r)] = torch.tensor(r)
                scored[i, len(c) : len(c) + len(t)] = True  # targets at positions 1 + len(c) ... of `ids`
            ids, scored = ids.to(device), scored.to(device)
            with self.loaded.autocast():
                logits = model(ids[:, :-1])
            nll = F.cross_entropy(logits.float().transpose(1, 2), ids[:, 1:], reduction="none")
            sums, counts = (nll * scored).sum(1).tolist(), scored.sum(1).tolist()
            out.extend((float(s), int(c)) for s, c in zip(sums, counts))
        return out

    def perplexity(self, samples: Sequence[Sample]) -> dict[str, float]:
        """{"gen_perplexity", "gen_nll_per_token", "judged_tokens"} of the samples' generated tokens."""
        targets = [s.ids + ([EOS_ID] if s.ended else []) for s in samples]
        results = self.sequence_nll([s.prompt_ids for s in samples], targets)
        total, count = sum(r[0] for r in results), sum(r[1] for r in results)
        if count == 0:
            return {}
        nll = total / count
        return {
            "gen_perplexity": math.exp(min(nll, 50.0)),
            "gen_nll_per_token": nll,
            "judged_tokens": count,
            "judged_samples": len(samples),
        }


class GrammarJudge:
    """The builtin:stories grammar as the judge: exact, under the generating grammar (valid samples only)."""

    name = GRAMMAR_JUDGE

    def __init__(self, tok) -> None:
        self.tok = tok

    def perplexity(self, samples: Sequence[Sample]) -> dict[str, float]:
        """{"gen_perplexity", "gen_nll_per_token", "judged_tokens", "judged_samples"} of the valid samples: −log of
        each story's grammar probability over its tokens counted as the entropy floor counts them (the canonical
        tokenization of its text + the closing <eos>). Continuations are not judged: the probability of a
        continuation given a token prefix would need a sum over the grammar's parses of the prefix."""
        if any(s.prompt_ids for s in samples):
            return {}
        scored = [(lp, s.text) for s in samples if (lp := story_logprob(s.text)) is not None]
        if not scored:
            return {"judged_samples": 0}
        tokens = sum(len(ids) + 1 for ids in encode_documents(self.tok, [text for _, text in scored]))
        nll = -sum(lp for lp, _ in scored) / tokens
        return {
            "gen_perplexity": math.exp(min(nll, 50.0)),
            "gen_nll_per_token": nll,
            "judged_tokens": tokens,
            "judged_samples": len(scored),
        }
