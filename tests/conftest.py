"""Shared fixtures: the real-data samples beside the project, and small prepared corpora."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lmcore.data import prepare_corpus

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real TinyStories/Alpaca/Dolly/OpenWebText samples); skipped when absent, failed on CI."""
    if not SHARED_DATA.is_dir():
        msg = f"../shared/data not found: {SHARED_DATA} (real-data samples live beside the project, never in it)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return SHARED_DATA


def _prepare(root: Path, seed: int) -> Path:
    out = root / f"stories-{seed}"
    prepare_corpus("builtin:stories", out, vocab_size=512, max_docs=1500, val_fraction=0.05, seed=seed, progress=False)
    return out


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small prepared builtin:stories corpus (vocab 512, 1500 train stories)."""
    return _prepare(tmp_path_factory.mktemp("corpus"), seed=1)


@pytest.fixture(scope="session")
def other_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like `corpus` (same vocabulary size) but another seed, hence another tokenizer."""
    return _prepare(tmp_path_factory.mktemp("other_corpus"), seed=2)


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    """A tiny model config file (2 layers, width 32) for stage scripts' --model_config."""
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"d_model": 32, "n_heads": 4, "n_layers": 2, "d_ff": 64}))
    return path
