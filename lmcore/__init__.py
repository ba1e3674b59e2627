"""lmcore: one backbone, one trainer and three objectives (ar, diffusion, sdd) for small language models."""

__version__ = "0.1.0"
