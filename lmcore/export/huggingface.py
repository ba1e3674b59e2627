"""Export a checkpoint as a Hugging Face folder, written atomically.

AR checkpoints become a transformers model (Starcoder2ForCausalLM, which computes exactly lmcore's backbone; see
lmcore/export/weights.py): config.json, model.safetensors, generation_config.json. Diffusion and SDD checkpoints,
which no transformers class runs, become lmcore weights + lmcore's config.json (lmcore/export/native.py). Every
export carries the tokenizer (AutoTokenizer, every special token at lmcore's fixed id) and a model card README.md.
transformers and safetensors are imported only here and only when an export runs (the `hf` extra).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmcore.errors import CheckpointError, ConfigError, DataError
from lmcore.eval.generation import doc_start
from lmcore.export.card import model_card
from lmcore.export.native import write_native
from lmcore.export.weights import starcoder2_state_dict
from lmcore.models import ModelConfig, Transformer
from lmcore.tokenizer import BOS_ID, EOS_ID, IGNORE_ID, MASK_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID
from lmcore.train.checkpoint import LoadedModel, load_model, tokenizer_for

TRANSFORMERS_CLASS = "Starcoder2ForCausalLM"


def require_hf() -> str:
    """transformers' version; a one-line ConfigError when transformers or safetensors is not installed."""
    try:
        import safetensors.torch  # noqa: F401
        import transformers
    except ImportError as e:
        raise ConfigError(f"export needs transformers and safetensors ({e}): pip install -e '.[hf]'") from None
    return transformers.__version__


def runs_in_transformers(loaded: LoadedModel) -> bool:
    """A next-token objective on the plain causal backbone is what a transformers CausalLM computes."""
    return isinstance(loaded.model, Transformer) and loaded.objective.causal and loaded.model_config.causal


def starcoder2_config(cfg: ModelConfig) -> Any:  # transformers.Starcoder2Config
    """Starcoder2Config computing exactly lmcore's backbone with `cfg` (the match is argued in export/weights.py)."""
    from transformers import Starcoder2Config

    config = Starcoder2Config(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads,
        hidden_act="gelu_pytorch_tanh",  # F.gelu(approximate="tanh"), lmcore's MLP activation
        max_position_embeddings=cfg.max_seq_len,
        norm_epsilon=1e-5,  # torch.nn.LayerNorm's default, which lmcore's LayerNorms use
        use_bias=False,
        tie_word_embeddings=cfg.tie_embeddings,
        sliding_window=None,
        rope_theta=cfg.rope_theta,
        # Dropout is a training setting; the export is for inference (lmcore's `dropout` is in the model card).
        attention_dropout=0.0,
        residual_dropout=0.0,
        embedding_dropout=0.0,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        architectures=[TRANSFORMERS_CLASS],
        torch_dtype="float32",
    )
    # transformers >= 5 keeps θ in rope_parameters only; the top-level key is what transformers 4.x reads.
    config.rope_theta = cfg.rope_theta
    return config


def write_transformers(loaded: LoadedModel, folder: Path, seq_len: int) -> None:
    """config.json, model.safetensors and generation_config.json of a Starcoder2ForCausalLM."""
    from safetensors.torch import save_file
    from transformers import GenerationConfig

    weights = starcoder2_state_dict(loaded.model.state_dict(), loaded.model_config, str(loaded.path))
    starcoder2_config(loaded.model_config).save_pretrained(folder)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    # lmcore's default sampler (stages/generate.py): temperature 1, no top-p, and no top-k (transformers' default 50).
    GenerationConfig(
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        max_length=seq_len + len(doc_start(loaded)),
    ).save_pretrained(folder)


def write_tokenizer(tok: Any, opener: list[int], max_length: int, folder: Path) -> None:
    """tokenizer.json + tokenizer_config.json that AutoTokenizer loads with every special token at lmcore's id."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    hf_tok = Tokenizer.from_str(tok.to_str())  # a copy: the post-processor is the export's, not the corpus's
    if opener:  # encode(text) starts a document the way the model saw documents start in training
        tokens = " ".join(SPECIAL_TOKENS[i] for i in opener)
        hf_tok.post_processor = processors.TemplateProcessing(
            single=f"{tokens} $A",
            pair=f"{tokens} $A {tokens} $B",
            special_tokens=[(SPECIAL_TOKENS[i], i) for i in sorted(set(opener))],
        )
    PreTrainedTokenizerFast(
        tokenizer_object=hf_tok,
        pad_token=SPECIAL_TOKENS[PAD_ID],
        bos_token=SPECIAL_TOKENS[BOS_ID],
        eos_token=SPECIAL_TOKENS[EOS_ID],
        mask_token=SPECIAL_TOKENS[MASK_ID],
        unk_token=SPECIAL_TOKENS[UNK_ID],
        additional_special_tokens=[SPECIAL_TOKENS[IGNORE_ID]],
        split_special_tokens=True,  # lmcore encodes text literally: "<eos>" in text is characters, not the token
        clean_up_tokenization_spaces=False,  # decode(encode(x)) == x, as lmcore's decode
        model_max_length=max_length,
    ).save_pretrained(folder)


def check_output_dir(output_dir: Path, overwrite: bool) -> None:
    """Refuse a non-empty output_dir without `overwrite`, and a file in its place."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"--output_dir {output_dir}: exists and is not a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise ConfigError(f"--output_dir {output_dir}: exists and is not empty (pass --overwrite to replace it)")


def check_not_inside(output_dir: Path, inputs: list[Path]) -> None:
    """Replacing output_dir must not delete an input (the checkpoint, the tokenizer's folder)."""
    for path in inputs:
        if path.resolve().is_relative_to(output_dir.resolve()):
            raise ConfigError(f"--output_dir {output_dir}: holds the input {path}; pick another folder")


@contextlib.contextmanager
def staged(output_dir: Path) -> Iterator[Path]:
    """A temporary sibling folder that replaces output_dir when the block succeeds; removed when it fails."""
    tmp = output_dir.parent / f".{output_dir.name}.tmp-{os.getpid()}"
    old = output_dir.parent / f".{output_dir.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if output_dir.exists():  # an empty folder, or --overwrite: move it aside, move the new one in, drop the old
            os.replace(output_dir, old)
        try:
            os.replace(tmp, output_dir)
        except OSError:
            if old.exists():
                os.replace(old, output_dir)
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _tokenizer(loaded: LoadedModel, tokenizer: str | Path | None) -> Any:  # tokenizers.Tokenizer
    try:
        return tokenizer_for(loaded, tokenizer)
    except DataError as e:
        hint = "" if tokenizer else " (pass --tokenizer: a tokenizer.json or data folder)"
        raise CheckpointError(f"{loaded.path}: no tokenizer: {e}{hint}") from None


def export_checkpoint(
    checkpoint: str | Path, output_dir: str | Path, tokenizer: str | Path | None = None, overwrite: bool = False
) -> LoadedModel:
    """Write `checkpoint` as a Hugging Face folder at output_dir; returns the loaded checkpoint it exported."""
    output_dir = Path(output_dir)
    check_output_dir(output_dir, overwrite)
    loaded = load_model(checkpoint, device="cpu", dtype="fp32")
    tok = _tokenizer(loaded, tokenizer)
    check_not_inside(output_dir, [loaded.path, Path(tokenizer or loaded.info["data_dir"])])
    transformers_version = require_hf()
    seq_len = int((loaded.info.get("train_config") or {}).get("seq_len", loaded.model_config.max_seq_len))
    opener = doc_start(loaded)  # <eos> for the AR model trained on the packed stream; nothing for document rows
    to_transformers = runs_in_transformers(loaded)
    with staged(output_dir) as folder:
        if to_transformers:
            write_transformers(loaded, folder, seq_len)
        else:
            write_native(loaded, folder)
        write_tokenizer(tok, opener, loaded.model_config.max_seq_len, folder)
        card = model_card(
            loaded,
            str(output_dir),
            TRANSFORMERS_CLASS if to_transformers else None,
            transformers_version,
            " ".join(SPECIAL_TOKENS[i] for i in opener),
        )
        (folder / "README.md").write_text(card, encoding="utf-8")
    return loaded
