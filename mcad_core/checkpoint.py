"""Resumable training state: a checkpoint folder that knows which run it belongs to.

DVC 3 has no experiment checkpoints, so resume comes from the training code. A
checkpoint is only resumed when it was written by a run with the same key (params,
data and seed); otherwise it is stale and is cleared, so changing a param never
silently continues an old run. Only one process may prepare the folder: under torchrun,
rank 0 does it (``mcad.distributed.shared_checkpoint_dir``) while the others wait.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any


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
