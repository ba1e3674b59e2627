"""Like-for-like numbers across architectures: AR validated per document from its start on the same documents as
the document objectives; best.pt chosen within one SDD curriculum stage."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_trainer import history, tiny_model, train_cfg  # the trainer tests' tiny run helpers
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lmcore.config import TrainConfig
from lmcore.data import MemmapCorpus
from lmcore.models import ModelConfig
from lmcore.objectives import get_objective
from lmcore.objectives.sdd import SDDObjective
from lmcore.tokenizer import EOS_ID, IGNORE_ID
from lmcore.train.perf import flops_breakdown, forward_flops_breakdown, sampling_flops
from lmcore.train.run import Outputs, corpus_batches, pretrain
from lmcore.train.trainer import stats_to_metrics, validation_totals

TINY = {"d_model": 32, "n_heads": 4, "n_layers": 2, "d_ff": 64}
SEQ_LEN = 48  # shorter than many stories: the crop must be the same for every architecture


def cfg(**kw) -> TrainConfig:
    base = dict(batch_size=4, seq_len=SEQ_LEN, eval_batches=2, wandb=False, device="cpu", seed=3)
    return TrainConfig(**{**base, **kw})


def ar_model(corpus):
    torch.manual_seed(0)
    objective = get_objective("ar")
    vocab = MemmapCorpus(corpus, "val").vocab_size
    model_cfg = objective.model_config(ModelConfig(**TINY), vocab, SEQ_LEN, False)
    return objective, objective.build_model(model_cfg).eval()


def test_ar_val_loss_is_per_document_from_its_start_by_hand(corpus):
    """val/loss = Σ over the first eval_batches·batch_size validation documents of −log p(token | <eos>, earlier
    tokens of the same document), each document's first SEQ_LEN tokens (its closing <eos> included when it fits),
    divided by the number of those tokens: the count diffusion's NELBO divides by."""
    objective, model = ar_model(corpus)
    train_cfg = cfg()
    _, batches = corpus_batches(objective, corpus, train_cfg)
    totals = validation_totals(objective, model, batches, train_cfg.seed, torch.device("cpu"), None)
    metrics = stats_to_metrics(totals, "val")

    val = MemmapCorpus(corpus, "val")
    nll, count = 0.0, 0
    with torch.no_grad():
        for i in range(8):
            doc = torch.from_numpy(np.asarray(val.document(i), dtype=np.int64))[:SEQ_LEN]
            inputs = torch.cat([torch.tensor([EOS_ID]), doc[:-1]])[None]  # a document opens with <eos>
            logp = model(inputs).log_softmax(-1)[0]
            nll -= logp.gather(-1, doc[:, None]).sum().item()
            count += len(doc)
    assert totals["count"] == count
    assert metrics["val/loss"] == pytest.approx(nll / count, rel=1e-5)
    assert metrics["val/perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-5)

    # The same documents and the same scored tokens as diffusion's validation.
    diffusion = get_objective("diffusion")
    _, doc_batches = corpus_batches(diffusion, corpus, train_cfg)
    ar_docs = [b["tokens"] for b in batches if "packed" not in b]
    assert len(ar_docs) == len(doc_batches) == 2
    for ar_rows, rows in zip(ar_docs, doc_batches):
        assert torch.all(ar_rows[:, 0] == EOS_ID) and torch.equal(ar_rows[:, 1:], rows["tokens"])
    diff_count = sum(((b["tokens"] != IGNORE_ID) & (b["tokens"] != 0)).sum().item() for b in doc_batches)
    assert diff_count == count


def test_ar_window_loss_is_the_packed_stream_figure(corpus):
    """val/window_loss is the cross-entropy on windows of the packed stream (starting mid-document), kept beside
    the per-document val/loss; on a model trained on documents' starts it is a different number."""
    objective, model = ar_model(corpus)
    train_cfg = cfg()
    _, batches = corpus_batches(objective, corpus, train_cfg)
    windows = [b for b in batches if "packed" in b]
    assert len(windows) == 2 and all(b["tokens"].shape == (4, SEQ_LEN + 1) for b in windows)
    totals = validation_totals(objective, model, batches, train_cfg.seed, torch.device("cpu"), None)
    metrics = stats_to_metrics(totals, "val")
    with torch.no_grad():
        rows = torch.cat([b["tokens"] for b in windows])
        logits = model(rows[:, :-1])
        ref = F.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten()).item()
    assert totals["window_count"] == rows[:, 1:].numel()
    assert metrics["val/window_loss"] == pytest.approx(ref, rel=1e-5)
    assert {"val/loss", "val/accuracy", "val/window_loss", "val/window_accuracy"} <= set(metrics)
    assert metrics["val/window_loss"] != pytest.approx(metrics["val/loss"], rel=1e-3)


class HarderAtLargerK(SDDObjective):
    """SDD whose validation loss is 1 nat per position higher at each larger k: later stages are harder tasks."""

    def eval_stats(self, model, batch, gen):
        stats = super().eval_stats(model, batch, gen)
        return {**stats, "loss_sum": stats["loss_sum"] + (self.k - 1) * stats["count"]}


def test_sdd_best_checkpoint_is_chosen_within_the_final_curriculum_stage(corpus, tmp_path):
    """Validation losses at k = 1 and k = 2 are different tasks: at a change of k best_val_loss starts again, so
    best.pt is the best of the last stage, although k = 1 reached lower losses; a resume across the change
    chooses the same one."""
    section = {"k_schedule": "1,2", "k_warmup_steps": 4}
    cfg = dict(max_steps=8, eval_every=2, checkpoint_every=4, num_samples=0)
    out = tmp_path / "full"
    pretrain(HarderAtLargerK(section), tiny_model(), train_cfg(**cfg), corpus, Outputs(out), "sdd-test")
    h = history(out / "history.jsonl")
    # Validations at steps 2, 4 ran at k = 1; 6, 8 at k = 2 (on_step sets k before each step).
    assert [h[s]["train/k"] for s in (2, 4, 6, 8)] == [1, 1, 2, 2]
    assert h[4]["val/best_loss"] == min(h[2]["val/loss"], h[4]["val/loss"])
    assert h[6]["val/best_loss"] == h[6]["val/loss"] > h[4]["val/best_loss"]  # started again at k = 2
    best = torch.load(out / "best.pt", weights_only=False)
    assert best["objective_state"]["k"] == 2 and best["best_val_slots"] == 2
    assert best["best_val_loss"] == min(h[6]["val/loss"], h[8]["val/loss"]) == h[8]["val/best_loss"]
    assert best["global_step"] in (6, 8) and h[best["global_step"]]["val/loss"] == best["best_val_loss"]

    part = tmp_path / "part"
    pretrain(HarderAtLargerK(section), tiny_model(), train_cfg(**cfg, stop_at_step=4), corpus, Outputs(part), "t")
    assert torch.load(part / "latest.pt", weights_only=False)["best_val_slots"] == 1
    pretrain(
        HarderAtLargerK(section), tiny_model(), train_cfg(**cfg), corpus, Outputs(part), "t", str(part / "latest.pt")
    )
    resumed = torch.load(part / "best.pt", weights_only=False)
    assert (resumed["global_step"], resumed["best_val_loss"]) == (best["global_step"], best["best_val_loss"])


# ---------------------------------------------------------------- sampling compute
SMALL = {"d_model": 32, "n_heads": 4, "n_layers": 2, "d_ff": 64, "vocab_size": 100}


def counted(fn) -> int:
    """FLOPs torch's FlopCounterMode sees in fn() (math SDPA: attention as matmuls it counts)."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_ar_decode_flops_by_hand_and_by_torch():
    """AR with a KV cache: per generated token the blocks and the head once, attention over the cached keys."""
    torch.manual_seed(0)
    objective = get_objective("ar")
    model = objective.build_model(objective.model_config(ModelConfig(**SMALL), 100, 16, False))
    # Weights per layer 8192 (as in test_compute), two layers: forward 2·16384 = 32768; head 2·100·32 = 6400;
    # attention of the t-th token 4·2·32·t = 256·t. Five tokens: 5·(32768 + 6400) + 256·15 = 199680.
    assert sampling_flops(model.cfg, 5, None, architecture="ar") == 199680
    n = 9
    flops = counted(lambda: objective.sample(model, 1, n, torch.Generator().manual_seed(0)))
    # No token stops early at this size and seed? Count the tokens actually generated.
    out = objective.sample(model, 1, n, torch.Generator().manual_seed(0))[0].tolist()
    generated = out.index(EOS_ID) + 1 if EOS_ID in out else n
    assert flops == sampling_flops(model.cfg, generated, None, architecture="ar")


@pytest.mark.parametrize("architecture, section, k", [("diffusion", {}, 1), ("sdd", {"fixed_k": 3}, 3)])
def test_diffusion_and_sdd_sampling_flops_match_torch(architecture, section, k):
    """steps forward passes over the whole row: diffusion's head once per position, SDD's at every step."""
    torch.manual_seed(0)
    objective = get_objective(architecture, section)
    model = objective.build_model(objective.model_config(ModelConfig(**SMALL), 100, 16, False))
    steps = 4
    flops = counted(lambda: objective.sample(model, 1, 16, torch.Generator().manual_seed(1), steps=steps))
    expected = sampling_flops(model.cfg, 16, steps, k, architecture=architecture)
    if architecture == "diffusion":  # the formula is the bound at `steps`; the cache skipped the empty steps
        calls = objective.network_calls
        assert 1 <= calls <= steps and expected >= flops
        expected = sampling_flops(model.cfg, 16, calls, architecture=architecture)
    assert flops == pytest.approx(expected, rel=1e-12)
    # forward = training / 3 for the backbone (2 FLOPs per weight instead of 6)
    train = flops_breakdown(model.cfg, 16, k, architecture=architecture)
    fwd = forward_flops_breakdown(model.cfg, 16, k, architecture=architecture)
    assert fwd["blocks"] == train["blocks"] / 3 and fwd["attention"] == train["attention"] / 3


def test_an_extra_metric_that_scored_nothing_is_left_out():
    """An AR trained on document rows has no packed windows to score: no val/window_* (0/0 is no measurement)."""
    totals = {"loss_sum": 6.0, "count": 3.0, "correct": 2.0, "window_loss_sum": 0.0, "window_count": 0.0,
              "window_correct": 0.0, "ignore_correct": 1.0, "ignore_count": 2.0}  # fmt: skip
    metrics = stats_to_metrics(totals, "val")
    assert metrics["val/loss"] == 2.0 and metrics["val/ignore_accuracy"] == 0.5
    assert not any(k.startswith("val/window") for k in metrics)
