"""Hugging Face export: AR → transformers computes lmcore's function; diffusion/SDD → weights-only; bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmcore.config import TrainConfig
from lmcore.errors import CheckpointError, ConfigError
from lmcore.export import export_checkpoint, load_native
from lmcore.export import huggingface as hf_export
from lmcore.models import ModelConfig
from lmcore.objectives import get_objective
from lmcore.tokenizer import EOS_ID, PAD_ID, SPECIAL_TOKENS, decode, encode_documents
from lmcore.train.checkpoint import atomic_torch_save, load_model, tokenizer_for
from lmcore.train.run import Outputs, pretrain

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "Once upon a time, there was a little cat .",
    'Tom said: "<eos> is text here" <pad><mask> 3 + 4 = 7',
    "  spaces  and\nnew lines, ünïcödé 🙂 , done .",
]


@pytest.fixture(scope="module")
def transformers():
    """transformers (the `hf` extra): skipped when absent, failed on CI."""
    try:
        import transformers
    except ImportError:
        msg = "transformers is not installed (pip install -e '.[hf]')"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return transformers


def _train(corpus: Path, out: Path, arch: str, steps: int, **model: object) -> Path:
    cfg = TrainConfig(
        max_steps=steps,
        batch_size=4,
        seq_len=32,
        learning_rate=3e-3,
        warmup_steps=2,
        eval_every=steps,
        eval_batches=1,
        log_every=steps,
        checkpoint_every=steps,
        num_samples=0,
        wandb=False,
        device="cpu",
    )
    model_cfg = ModelConfig(d_model=32, n_heads=4, n_layers=2, d_ff=64, **model)
    pretrain(get_objective(arch), model_cfg, cfg, corpus, Outputs(out), f"{arch}-export")
    return out / "best.pt"


def _add_noise(path: Path, std: float) -> Path:
    """The checkpoint with N(0, std²) added to every weight: activations far from 0, where an approximation of the
    backbone's function (e.g. erf GELU for the tanh one: ~3e-3 here) shows in the logits."""
    ckpt = torch.load(path, weights_only=False)
    gen = torch.Generator().manual_seed(1)
    ckpt["model_state_dict"] = {
        k: v + std * torch.randn(v.shape, generator=gen) for k, v in ckpt["model_state_dict"].items()
    }
    out = path.with_name("noisy.pt")
    atomic_torch_save(ckpt, out)
    return out


@pytest.fixture(scope="module")
def checkpoints(corpus, tmp_path_factory) -> dict[str, Path]:
    """AR trained 30 steps (peaked enough for greedy decoding to mean something), an untied AR with another
    rotary θ and large weights, and diffusion and SDD trained 2 steps."""
    root = tmp_path_factory.mktemp("export_ckpts")
    untied = _train(corpus, root / "ar_untied", "ar", 2, tie_embeddings=False, rope_theta=500.0)
    return {
        "ar": _train(corpus, root / "ar", "ar", 30),
        "ar_untied": _add_noise(untied, 0.3),
        "diffusion": _train(corpus, root / "diffusion", "diffusion", 2),
        "sdd": _train(corpus, root / "sdd", "sdd", 2),
    }


@pytest.fixture(scope="module")
def exported(checkpoints, transformers, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    for name, ckpt in checkpoints.items():
        export_checkpoint(ckpt, root / name)
    return {name: root / name for name in checkpoints}


@pytest.mark.parametrize("name", ["ar", "ar_untied"])
def test_ar_export_computes_lmcore_logits(name, checkpoints, exported, transformers):
    model = transformers.AutoModelForCausalLM.from_pretrained(exported[name]).eval()
    assert type(model).__name__ == "Starcoder2ForCausalLM" and model.dtype == torch.float32
    loaded = load_model(checkpoints[name], device="cpu", dtype="fp32")
    assert model.config.tie_word_embeddings == loaded.model_config.tie_embeddings
    # 100 positions: past the 32 the model was trained on, so every rotary frequency turns through many angles.
    tokens = torch.randint(0, loaded.model_config.vocab_size, (3, 100), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = loaded.model(tokens), model(tokens).logits
    assert ours.shape == theirs.shape
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)


def test_ar_export_greedy_generate_matches_lmcore(checkpoints, exported, transformers):
    tok = transformers.AutoTokenizer.from_pretrained(exported["ar"])
    model = transformers.AutoModelForCausalLM.from_pretrained(exported["ar"]).eval()
    loaded = load_model(checkpoints["ar"], device="cpu", dtype="fp32")
    for text in ["Once upon a time", ""]:
        inputs = tok(text, return_tensors="pt")
        prompt = inputs["input_ids"][0]
        assert prompt.tolist() == [EOS_ID] + encode_documents(tokenizer_for(loaded), [text])[0]  # document opener
        length = len(prompt) + 40
        ours = loaded.objective.sample(loaded.model, 1, length, torch.Generator(), prompt=prompt, temperature=0.0)[0]
        with torch.no_grad():
            theirs = model.generate(**inputs, do_sample=False, max_new_tokens=length - len(prompt))[0]
        # lmcore pads a row with <pad> after its <eos>; transformers stops there.
        ours = ours[: len(theirs)]
        assert ours.tolist() == theirs.tolist()
        assert len(theirs) == length or theirs[-1] == EOS_ID
        assert set(ours[len(prompt) :].tolist()) - {PAD_ID, EOS_ID}, "greedy decoding produced no text"
    gen = model.generation_config
    assert (gen.eos_token_id, gen.pad_token_id, gen.do_sample, gen.temperature, gen.top_p, gen.top_k) == (
        EOS_ID,
        PAD_ID,
        True,
        1.0,
        1.0,
        0,
    )


def test_auto_tokenizer_has_special_tokens_and_encodes_like_lmcore(checkpoints, exported, transformers):
    loaded = load_model(checkpoints["ar"], device="cpu")
    ours = tokenizer_for(loaded)
    for name in ("ar", "diffusion"):
        tok = transformers.AutoTokenizer.from_pretrained(exported[name])
        ids = {
            "pad": tok.pad_token_id,
            "bos": tok.bos_token_id,
            "eos": tok.eos_token_id,
            "mask": tok.mask_token_id,
            "unk": tok.unk_token_id,
        }
        assert ids == {"pad": 0, "bos": 1, "eos": 2, "mask": 3, "unk": 4}
        assert tok.convert_tokens_to_ids(SPECIAL_TOKENS) == list(range(len(SPECIAL_TOKENS)))
        assert set(tok.all_special_ids) == set(range(len(SPECIAL_TOKENS)))
        assert len(tok) == ours.get_vocab_size()
        for text in TEXTS:
            expected = encode_documents(ours, [text])[0]
            assert tok(text, add_special_tokens=False)["input_ids"] == expected  # "<eos>" in text stays text
            assert tok.decode(expected) == decode(ours, expected) == text
        opener = [EOS_ID] if name == "ar" else []  # AR documents open with <eos>; diffusion rows start at 0
        assert tok(TEXTS[0])["input_ids"] == opener + encode_documents(ours, [TEXTS[0]])[0]


@pytest.mark.parametrize("arch", ["diffusion", "sdd"])
def test_weights_only_export_holds_the_state_dict(arch, checkpoints, exported, transformers):
    from safetensors.torch import load_file

    folder = exported[arch]
    state = torch.load(checkpoints[arch], weights_only=False)["model_state_dict"]
    saved = load_file(folder / "model.safetensors")
    assert set(saved) == set(state) - {"head.weight"}  # tied: the head is embed.weight, stored once
    for name, tensor in saved.items():
        assert torch.equal(tensor, state[name]), name
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "lmcore-weights" and config["architecture"] == arch
    assert "model_type" not in config and "architectures" not in config
    with pytest.raises(ValueError):  # no transformers class claims it
        transformers.AutoConfig.from_pretrained(folder)
    loaded = load_model(checkpoints[arch], device="cpu")
    objective, model = load_native(folder)
    assert objective.state_dict() == loaded.objective.state_dict() and objective.cfg == loaded.objective.cfg
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    assert "load_native" in (folder / "README.md").read_text()


def test_model_card_records_training_and_metric_kinds(checkpoints, exported):
    ckpt = torch.load(checkpoints["ar"], weights_only=False)
    card = (exported["ar"] / "README.md").read_text()
    assert "library_name: transformers" in card and "Starcoder2ForCausalLM" in card
    assert f"{ckpt['global_step']} of 30" in card and f"`{ckpt['data_dir']}`" in card
    assert "`builtin:stories`" in card and ckpt["tokenizer"]["sha256"][:16] in card
    assert f"| `val/loss` | {ckpt['best_val_loss']:.4g} | exact |" in card
    sdd_card = (exported["sdd"] / "README.md").read_text()
    assert "library_name: lmcore" in sdd_card and "| denoising_ce |" in sdd_card and "Starcoder2" not in sdd_card


def test_refusals_leave_outputs_alone(checkpoints, corpus, transformers, tmp_path, monkeypatch):
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match="missing.pt: checkpoint not found"):
        export_checkpoint(tmp_path / "missing.pt", out)
    assert not out.exists()

    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty .pass --overwrite"):
        export_checkpoint(checkpoints["diffusion"], out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="not a folder"):
        export_checkpoint(checkpoints["diffusion"], tmp_path / "file")
    with pytest.raises(ConfigError, match="holds the input"):  # --overwrite must not delete the checkpoint
        export_checkpoint(checkpoints["diffusion"], checkpoints["diffusion"].parent, overwrite=True)

    # A checkpoint whose data folder is gone: the tokenizer must come from --tokenizer.
    ckpt = torch.load(checkpoints["diffusion"], weights_only=False)
    ckpt["data_dir"] = str(tmp_path / "gone")
    moved = tmp_path / "moved.pt"
    atomic_torch_save(ckpt, moved)
    with pytest.raises(CheckpointError, match="no tokenizer: .*gone.*pass --tokenizer"):
        export_checkpoint(moved, out, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    # A failure while writing leaves the old folder as it was and no temporary folder behind.
    def fail(*args: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(hf_export, "write_tokenizer", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        export_checkpoint(moved, out, tokenizer=corpus, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "moved.pt", "out"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    monkeypatch.undo()

    export_checkpoint(moved, out, tokenizer=corpus, overwrite=True)  # replaces the folder as a whole
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]

    monkeypatch.setitem(sys.modules, "transformers", None)  # as if the hf extra were not installed
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[hf\]'"):
        export_checkpoint(checkpoints["diffusion"], tmp_path / "new")
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_stage_exports_and_refuses_in_one_line(checkpoints, transformers, tmp_path):
    def stage(*args: object) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(ROOT / "stages" / "export_hf.py"), *map(str, args)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )

    out = tmp_path / "ar-hf"
    r = stage("--checkpoint", checkpoints["ar"], "--output_dir", out)
    assert r.returncode == 0, r.stderr
    assert "Starcoder2ForCausalLM" in r.stdout and (out / "model.safetensors").is_file()
    r = stage("--checkpoint", checkpoints["ar"], "--output_dir", out)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith(f"error: --output_dir {out}: exists")
