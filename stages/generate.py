"""Print samples from a checkpoint of any architecture.

    python stages/generate.py --checkpoint checkpoints/ar/best.pt --prompt "Once upon a time" --num_samples 3
    python stages/generate.py --checkpoint checkpoints/diffusion/best.pt --steps 64 --temperature 0.9

AR continues the prompt left to right; diffusion and SDD keep the prompt fixed at the start of the row and
fill in the rest over `--steps` denoising steps. Without a prompt, samples are unconditional.
"""

from __future__ import annotations

import argparse
import sys

from lmcore.cli import run_stage
from lmcore.errors import ConfigError
from lmcore.eval.generation import generate, steps_knob
from lmcore.objectives import REGISTRY
from lmcore.tokenizer import encode_documents
from lmcore.train.checkpoint import load_model, tokenizer_for


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--architecture", choices=sorted(REGISTRY), help="optional; must agree with the checkpoint")
    p.add_argument("--prompt", default="", help="text the samples start with")
    p.add_argument("--num_samples", type=int, default=4)
    p.add_argument("--max_new_tokens", type=int, help="default: the checkpoint's train seq_len minus the prompt")
    p.add_argument("--steps", type=int, help="denoising steps (diffusion, SDD); default: the checkpoint's setting")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--tokenizer", help="tokenizer.json or data folder (default: the checkpoint's data_dir)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    a = p.parse_args()
    if a.num_samples < 1 or a.batch_size < 1 or (a.steps is not None and a.steps < 1):
        raise ConfigError("--num_samples, --batch_size and --steps must be ≥ 1")
    if a.temperature < 0 or not 0 < a.top_p <= 1:
        raise ConfigError("--temperature must be ≥ 0 and --top_p in (0, 1]")
    loaded = load_model(a.checkpoint, a.architecture, a.device, a.dtype)
    tok = tokenizer_for(loaded, a.tokenizer)
    prompt = encode_documents(tok, [a.prompt])[0] if a.prompt else []
    seq_len = int((loaded.info.get("train_config") or {}).get("seq_len", 128))
    new = a.max_new_tokens if a.max_new_tokens is not None else max(seq_len - len(prompt), 1)
    if new < 1:
        raise ConfigError(f"--max_new_tokens must be ≥ 1, got {new}")
    if a.steps is not None and steps_knob(loaded) is None:
        print(f"note: {loaded.architecture} decodes one token per step; --steps is ignored", file=sys.stderr)
    samples, timing = generate(
        loaded,
        tok,
        a.num_samples,
        len(prompt) + new,
        prompts=[prompt] * a.num_samples if prompt else None,
        steps=a.steps,
        temperature=a.temperature,
        top_p=a.top_p,
        batch_size=a.batch_size,
        seed=a.seed,
    )
    for i, s in enumerate(samples, 1):
        print(f"=== sample {i} ({'ended' if s.ended else 'no <eos>: cut at the length limit'}) ===")
        print(s.text)
    print(f"# {loaded.architecture}, {timing['tokens']} tokens in {timing['seconds']:.2f}s", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
