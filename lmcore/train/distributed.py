"""Data parallelism with PyTorch's own engine: torchrun's environment, DDP or FSDP2, and rank-0 checkpoints.

Launch with `torchrun --nproc_per_node N stages/train.py ...`; torchrun sets RANK, LOCAL_RANK and WORLD_SIZE,
and `init_distributed` turns them into a process group (NCCL on CUDA, gloo on CPU). Without those variables
everything here is a no-op and the trainer runs as one process.

How ranks split the work: rank r's micro-batch m of an optimizer step is shard g = m·W + r of the step's
global batch (W ranks, M accumulation steps, M·W shards of batch_size rows). Its rows and its noise are
functions of (seed, step, g) only, so W ranks with M micro-steps compute exactly what one process with M·W
micro-steps computes (and, for objectives without noise, what one process with a W-times larger batch does).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from lmcore.errors import ConfigError

PARALLEL_MODES = ("ddp", "fsdp")


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: rank, local rank (its GPU on the node) and the number of processes."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        """True when several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, tracks and writes checkpoints."""
        return self.rank == 0


def env_world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun job (idempotent); one process without torchrun. `device` picks the backend."""
    if dist.is_available() and dist.is_initialized():
        return current()
    world = env_world_size()
    if world <= 1:
        return DistInfo()
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise ConfigError(f"WORLD_SIZE={world} but {name} is not set: launch with torchrun")
    local_rank = int(os.environ["LOCAL_RANK"])
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)  # before the NCCL communicator is created, so it binds this GPU
    dist.init_process_group(
        "nccl" if use_cuda else "gloo",
        timeout=datetime.timedelta(minutes=30),
        device_id=torch.device("cuda", local_rank) if use_cuda else None,
    )
    return current()


def current() -> DistInfo:
    """The initialised job's ranks, or a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size())


def shutdown() -> None:
    """Leave the process group (end of a stage); a no-op for one process."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: torch.device, info: DistInfo) -> torch.device:
    """Each rank drives the GPU of its LOCAL_RANK; CPU ranks share the CPU."""
    if info.enabled and device.type == "cuda":
        return torch.device("cuda", info.local_rank)
    return device


def wrap_model(
    model: nn.Module, mode: str, device: torch.device, compute_dtype: torch.dtype | None = None
) -> nn.Module:
    """DDP around `model`, or FSDP2: every block sharded, then the root (embeddings, head, norms).

    `compute_dtype` is the run's autocast dtype (None = fp32). Under FSDP2 with bf16 it becomes the mixed-precision
    policy (`fsdp_policy`): parameters are all-gathered in bf16 and gradients reduce-scattered in fp32."""
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        # The backbone has no buffers; without syncing them, forward passes in evaluation and sampling make no
        # collective calls, so ranks may run different numbers of them (newer PyTorch renamed the switch).
        import inspect

        no_sync = (
            {"forward_sync_buffers": False}
            if "forward_sync_buffers" in inspect.signature(DDP).parameters
            else {"broadcast_buffers": False}
        )
        wrapped = DDP(model, device_ids=ids, **no_sync)
        wrapped.cfg = model.cfg  # objectives read model.cfg (e.g. SDD's vocabulary size)
        return wrapped
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        policy = fsdp_policy(compute_dtype)
        for block in model.blocks:
            fully_shard(block, mp_policy=policy)
        # FSDP2 cannot shard 0-d parameters (SDD's readout scale): they stay replicated and
        # `average_replicated_grads` reduces their gradients. Tied embedding/head stay together in the root group.
        scalars = {p for p in model.parameters() if p.dim() == 0}
        fully_shard(model, ignored_params=scalars or None, mp_policy=policy)
        return model
    raise ConfigError(f"train.parallel must be one of {'|'.join(PARALLEL_MODES)}, got '{mode}'")


def fsdp_policy(compute_dtype: torch.dtype | None):
    """FSDP2's mixed-precision policy for a run computing in `compute_dtype`.

    bf16: parameters are cast to bf16 before the all-gather (half the bytes of an fp32 gather, and the layers
    then compute in bf16 as autocast would) while gradients are reduce-scattered in fp32, so summing over ranks
    loses no precision and the fp32 master weights see fp32 gradients (the recipe of the FSDP2 docs). fp16 runs
    keep fp32 gathers: the GradScaler unscales fp32 gradients. Otherwise the default policy (everything fp32)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if compute_dtype == torch.bfloat16:
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


@contextlib.contextmanager
def gradient_sync(wrapped: nn.Module, sync: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on non-final micro-steps of accumulation (DDP no_sync; FSDP2's switch)."""
    if sync or not (dist.is_available() and dist.is_initialized()):
        yield
    elif hasattr(wrapped, "no_sync"):
        with wrapped.no_sync():
            yield
    elif hasattr(wrapped, "set_requires_gradient_sync"):
        wrapped.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            wrapped.set_requires_gradient_sync(True)
    else:
        yield


def average_replicated_grads(model: nn.Module) -> None:
    """FSDP: average the gradients of parameters left unsharded (plain tensors among the DTensors) over ranks."""
    from torch.distributed.tensor import DTensor

    for p in model.parameters():
        if p.grad is not None and not isinstance(p, DTensor):
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def all_reduce_sums(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Element-wise sum of a {name: number} dict over ranks; keys missing on some ranks count as 0 there."""
    if not (dist.is_available() and dist.is_initialized()):
        return dict(values)
    keys: list[list[str]] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(keys, sorted(values))
    union = sorted(set().union(*keys))
    t = torch.tensor([float(values.get(k, 0.0)) for k in union], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(union, t.tolist()))


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any (e.g. a stop signal that reached one rank first)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier() -> None:
    """Wait for every rank (no-op for one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


# ---------------------------------------------------------------- checkpoints in the one single-file format
_FULL = {"full_state_dict": True, "cpu_offload": True}


def full_state_dicts(
    model: nn.Module, optimizer: torch.optim.Optimizer, mode: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Model and optimizer state as one process would save them; under FSDP a collective (rank 0 gets it)."""
    if mode != "fsdp":
        return model.state_dict(), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    opts = StateDictOptions(**_FULL)
    msd = get_model_state_dict(model, options=opts)
    osd = get_optimizer_state_dict(model, optimizer, options=opts)
    return msd, _fqn_to_ids(osd)


def load_state_dicts(
    model: nn.Module, optimizer: torch.optim.Optimizer, msd: dict[str, Any], osd: dict[str, Any], mode: str | None
) -> None:
    """Load full (single-file) state into a plain, DDP-wrapped or FSDP-sharded model and its optimizer."""
    if mode != "fsdp":
        model.load_state_dict(msd)
        optimizer.load_state_dict(osd)
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True)  # every rank read the file; each keeps its own shard
    set_model_state_dict(model, msd, options=opts)
    set_optimizer_state_dict(model, optimizer, _ids_to_fqn(osd, model, optimizer), options=opts)


def _fqn_to_ids(osd: dict[str, Any]) -> dict[str, Any]:
    """DCP's name-keyed optimizer state → torch.optim's integer-keyed format (ids in param-group order)."""
    if not osd:  # ranks other than 0 receive nothing
        return {}
    ids: dict[str, int] = {}
    groups = []
    for group in osd["param_groups"]:
        names = group["params"]
        for name in names:
            ids.setdefault(name, len(ids))
        groups.append({**group, "params": [ids[n] for n in names]})
    return {"state": {ids[n]: s for n, s in osd["state"].items()}, "param_groups": groups}


def _ids_to_fqn(osd: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The inverse of `_fqn_to_ids`, naming the ids by this optimizer's parameters."""
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    groups = [{**g, "params": [order[i] for i in g["params"]]} for g in osd["param_groups"]]
    return {"state": {order[i]: s for i, s in osd["state"].items()}, "param_groups": groups}
