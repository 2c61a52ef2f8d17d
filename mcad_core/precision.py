"""Mixed precision on cuda (``params.precision``), plain fp32 everywhere else.

One place decides, so teachers, cache and distillation agree: ``bf16`` needs no loss scaling,
``fp16`` gets a ``GradScaler``; on cpu both fall back to fp32 (CPU autocast is slower than fp32
for these models and would make the embedded run differ from its committed metrics).
"""

from __future__ import annotations

import contextlib
from typing import Any

PRECISIONS = ("fp32", "bf16", "fp16")


def amp_dtype(device: str, precision: str) -> Any:
    """The autocast dtype for ``precision`` on ``device``, or None where fp32 is used."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if not str(device).startswith("cuda") or precision == "fp32":
        return None
    return torch.bfloat16 if precision == "bf16" else torch.float16


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on cuda at ``precision``; a no-op context otherwise."""
    import torch

    dtype = amp_dtype(device, precision)
    return contextlib.nullcontext() if dtype is None else torch.autocast("cuda", dtype=dtype)


def grad_scaler(device: str, precision: str) -> Any:
    """A ``GradScaler`` that is active for fp16 on cuda only (bf16 and fp32 need none)."""
    import torch

    return torch.amp.GradScaler("cuda", enabled=amp_dtype(device, precision) == torch.float16)
