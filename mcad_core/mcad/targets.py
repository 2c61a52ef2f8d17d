"""Loading cached and fused teacher targets with their fingerprints checked.

A cache records which teachers and manifest produced it; fused targets record which cache
and fuse params. Reading either with anything changed upstream is an error, never a
silent reuse of stale targets.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcad_core.errors import McadError
from mcad_core.mcad.cache import cache_fingerprint, load_tensors, read_fingerprint

if TYPE_CHECKING:
    import torch

FINGERPRINTS = "fingerprints.json"


def teacher_fingerprints(teachers_dir: Path) -> dict[str, str]:
    """The fingerprints the teachers stage recorded for the saved dual and cross teachers."""
    path = Path(teachers_dir) / FINGERPRINTS
    if not path.is_file():
        raise McadError(f"{path}: not found (run the teachers stage first)")
    return json.loads(path.read_text())


def load_cache(cache_dir: Path, split: str, prepared_dir: Path, teachers_dir: Path, cache_params: Any
               ) -> dict[str, torch.Tensor]:
    """A split's cached teacher outputs, refused if teachers, manifest, pool or the cache params changed."""
    from mcad_core.data.manifest import TEXTS_FILE

    fps = teacher_fingerprints(teachers_dir)
    pool = Path(prepared_dir) / TEXTS_FILE if split == "train" else None
    expected = cache_fingerprint(fps["dual"], fps["cross"], Path(prepared_dir) / f"{split}.jsonl",
                                 cache_params.hard_k, cache_params.text_k, pool)
    return load_tensors(Path(cache_dir) / f"{split}.safetensors", expected)


def fused_fingerprint(cache_dir: Path, fuse_params: dict[str, Any]) -> dict[str, str]:
    """Fused targets depend on the train cache (through its fingerprint) and the fuse params."""
    cache_fp = read_fingerprint(Path(cache_dir) / "train.safetensors")
    digest = hashlib.sha256(json.dumps(cache_fp, sort_keys=True).encode()).hexdigest()
    return {"cache": digest, "fuse": json.dumps(fuse_params, sort_keys=True)}


def load_fused(fused_dir: Path, cache_dir: Path, fuse_params: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Fused train targets, refused if the cache or the fuse params changed since ``fuse`` ran."""
    return load_tensors(Path(fused_dir) / "train.safetensors", fused_fingerprint(cache_dir, fuse_params))


def write_fused_targets(params: Any, out_dir: Path, prepared_dir: Path, teachers_dir: Path, cache_dir: Path,
                        progress: bool = True) -> dict[str, float]:
    """Stage ``fuse`` as a function: fit P on the train cache, write ``out_dir/train.safetensors``
    atomically with its fingerprint, and return the ranking report on val."""
    from mcad_core.io import atomic_path
    from mcad_core.mcad.cache import save_tensors
    from mcad_core.mcad.fusion import FuseSettings, run_fusion

    train, val = (load_cache(cache_dir, split, prepared_dir, teachers_dir, params.cache)
                  for split in ("train", "val"))
    fuse = params.fuse
    settings = FuseSettings(lam=fuse.lambda_, alpha=fuse.alpha, tau_m=fuse.tau_m, projection=fuse.projection,
                            shift=fuse.shift, fit_batch=fuse.fit_batch, seed=params.seed)
    tensors, report = run_fusion(train, val, settings, params.distill.tau_t, progress)
    with atomic_path(Path(out_dir)) as tmp:
        tmp.mkdir()
        save_tensors(tmp / "train.safetensors", tensors, fused_fingerprint(cache_dir, fuse.model_dump(by_alias=True)))
    return report
