"""Single-process or torchrun (PyTorch DDP) execution, chosen by the environment torchrun sets."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from mcad_core.errors import McadError


@contextlib.contextmanager
def distributed_context(device: str) -> Iterator[tuple[int, int, str]]:
    """Yield (rank, world_size, device). Under torchrun, join the process group (gloo on CPU,
    NCCL on CUDA) and give each rank its own GPU; otherwise one process on ``device``."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise McadError("params.yaml: device is 'cuda' but no GPU is visible to torch")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        yield 0, 1, device
        return
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    # Binding the GPU lets a barrier know its device (NCCL would otherwise guess and warn).
    bound = torch.device(device) if device.startswith("cuda") else None
    dist.init_process_group(backend="nccl" if bound is not None else "gloo", device_id=bound)
    try:
        yield rank, world, device
    finally:
        dist.destroy_process_group()


def barrier(world: int) -> None:
    """Wait until every rank gets here; a no-op in one process."""
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def shared_checkpoint_dir(folder: str | Path, key: str, rank: int, world: int) -> Path:
    """``checkpoint_dir`` for every rank: rank 0 alone clears a stale folder, creates and stamps it
    (two ranks removing the same folder at once crash), the others wait for it, then all read it."""
    from mcad_core.checkpoint import checkpoint_dir

    if rank == 0:
        checkpoint_dir(folder, key)
    barrier(world)
    return Path(folder)
