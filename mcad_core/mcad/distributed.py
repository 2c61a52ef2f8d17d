"""Single-process or torchrun (PyTorch DDP) execution, chosen by the environment torchrun sets."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

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
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    try:
        yield rank, world, device
    finally:
        dist.destroy_process_group()
