"""Device and precision: which device a run uses and which autocast dtype it computes in (training and
evaluation alike)."""

from __future__ import annotations

import contextlib

import torch

from lmcore.errors import ConfigError

DTYPES = ("auto", "bf16", "fp16", "fp32")


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when available; an explicit CUDA request on a machine without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name}: not a device (auto | cpu | cuda | cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return dev


def amp_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a `dtype` setting: auto is bf16 on CUDA and none (fp32) elsewhere."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype: must be one of {'|'.join(DTYPES)}, got '{dtype}'")
    if dtype == "fp32" or (dtype == "auto" and device.type != "cuda"):
        return None
    return torch.float16 if dtype == "fp16" else torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to `dtype` on `device`, or a context that changes nothing when `dtype` is None (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def dtype_name(dtype: torch.dtype | None) -> str:
    """The compute dtype's short name, as recorded next to speed numbers."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
