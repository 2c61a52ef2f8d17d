"""One distillation run measured on a split, in process: the unit of tuning and of the seed ablation.

Tuning reads val only; the ablation reads test with the configs tuning chose. Both train from
the pipeline's cache; a setting that changes what the fuse stage reads re-fits the fused targets
in a scratch folder, once per setting.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from mcad_core.params import Params, with_overrides


def fused_for(params: Params, base: Params, scratch: Path, fused_dir: Path, cache_dir: Path, prepared_dir: Path,
              teachers_dir: Path) -> Path:
    """The fused-targets folder for ``params``: the pipeline's when what the fuse stage reads
    (``seed``, ``fuse``) is as in ``base``, else one fitted once per such setting in ``scratch``."""
    import hashlib
    import json

    from mcad_core.mcad.targets import write_fused_targets

    setting = {"seed": params.seed, "fuse": params.fuse.model_dump(by_alias=True)}
    if setting == {"seed": base.seed, "fuse": base.fuse.model_dump(by_alias=True)}:
        return fused_dir
    folder = scratch / f"fused-{hashlib.sha256(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:16]}"
    if not folder.is_dir():
        write_fused_targets(params, folder, prepared_dir, teachers_dir, cache_dir, progress=False)
    return folder


def measure_run(base: Params, variant: str, overrides: tuple[str, ...], seed: int, records: list[dict],
                images: Any, folders: dict[str, Path], scratch: Path) -> dict[str, Any]:
    """Train ``variant`` with ``overrides`` and ``distill.seed = seed``; its metrics on ``records``
    (val in tuning, test in the ablation), the val curve per epoch and the training time."""
    from mcad_core.evaluation.report import student_metrics
    from mcad_core.mcad.train import distill_student, load_distill_inputs

    # the grid's overrides are full settings: params.yaml's per-variant choices do not apply on top
    params = with_overrides(base, ["distill.per_variant={}", *overrides, f"distill.seed={seed}"])
    fused = fused_for(params, base, scratch, folders["fused"], folders["cache"], folders["prepared"],
                      folders["teachers"])
    data, tok = load_distill_inputs(params, variant, folders["prepared"], folders["teachers"], folders["cache"],
                                    fused, progress=False)
    curve: list[dict[str, float]] = []

    def log(metrics: dict[str, float], epoch_end: bool) -> None:
        if epoch_end:
            curve.append({k.removeprefix("val/"): round(v, 2) for k, v in metrics.items()})

    start = time.time()
    with tempfile.TemporaryDirectory() as ckpt:
        model = distill_student(variant, params.distill, data, tok.vocab_size, Path(ckpt), seed, log=log,
                                progress=False)
    row = student_metrics(model, tok, records, folders["prepared"], images)
    return {**row, "train_s": round(time.time() - start, 1), "val_curve": curve}
