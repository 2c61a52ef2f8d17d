"""Resumable training state, one format for the three training loops (dual teacher, region
teacher, student).

DVC 3 has no experiment checkpoints, so resume comes from the training code. A checkpoint
is only resumed when it was written by a run with the same key (params, data and seed);
otherwise it is stale, so changing a param never silently continues an old run. A checkpoint
folder carries its key too (``checkpoint_dir``); only one process may prepare it: under
torchrun, rank 0 does it (``mcad.distributed.shared_checkpoint_dir``) while the others wait.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from mcad_core.io import atomic_path

LAST = "last.pt"  # the checkpoint file of a training loop, rewritten after each epoch
# A checkpoint of another format (written before the loops shared this one) is not resumed.
FORMAT = "mcad-checkpoint-v1"


def run_key(*parts: Any) -> str:
    """A stable hash of JSON-serialisable run inputs (params dicts, fingerprints, seeds)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def checkpoint_dir(folder: str | Path, key: str) -> Path:
    """Return ``folder`` ready for resume: kept if it belongs to run ``key``, emptied otherwise."""
    folder = Path(folder)
    stamp = folder / "RUN_KEY"
    if folder.exists() and (not stamp.is_file() or stamp.read_text().strip() != key):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key + "\n")
    return folder


def save_checkpoint(path: str | Path, epoch: int, model: Any, optimizer: Any, scheduler: Any = None,
                    key: Any = None, **extra: Any) -> None:
    """Write what a training loop needs to continue after a kill, atomically: ``model``,
    ``optimizer`` and ``scheduler`` states, the torch RNG, the epochs done, ``key`` (what run this
    is) and ``extra`` (the loop's own progress, e.g. its summary so far). All three loops use it."""
    import torch

    state = {"format": FORMAT, "key": key, "epoch": epoch, "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "scheduler": None if scheduler is None else scheduler.state_dict(),
             "rng": torch.get_rng_state(), "extra": extra}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, model: Any, optimizer: Any, scheduler: Any = None,
                    key: Any = None) -> dict[str, Any] | None:
    """Restore a run saved by :func:`save_checkpoint` under the same ``key`` into ``model``,
    ``optimizer``, ``scheduler`` and the torch RNG; return ``{"epoch": ..., **extra}``. None when
    there is no checkpoint or it belongs to another run (then the caller starts afresh)."""
    import torch

    path = Path(path)
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("key") != key:
        return None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    return {"epoch": state["epoch"], **state["extra"]}
