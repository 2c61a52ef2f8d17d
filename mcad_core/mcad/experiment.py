"""One distillation run measured on a split, in process: the unit of tuning and of the seed ablation.

Tuning reads val only; the ablation reads test with the configs tuning chose. Both train from
the pipeline's cache; a ``fuse.*`` override re-fits the fused targets in a scratch folder.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from mcad_core.params import Params, with_overrides


def fused_for(params: Params, overrides: tuple[str, ...], scratch: Path, fused_dir: Path, cache_dir: Path,
              prepared_dir: Path, teachers_dir: Path) -> Path:
    """The fused-targets folder for ``params``: the pipeline's, or one fitted in ``scratch`` when a
    ``fuse.*`` or ``seed`` override changes what the fuse stage would write."""
    from mcad_core.mcad.targets import write_fused_targets

    if not any(o.startswith(("fuse.", "seed=")) for o in overrides):
        return fused_dir
    folder = scratch / f"fused-{abs(hash(overrides))}"
    if not folder.is_dir():
        write_fused_targets(params, folder, prepared_dir, teachers_dir, cache_dir, progress=False)
    return folder


def measure_run(base: Params, variant: str, overrides: tuple[str, ...], seed: int, records: list[dict],
                images: Any, folders: dict[str, Path], scratch: Path) -> dict[str, Any]:
    """Train ``variant`` with ``overrides`` and ``distill.seed = seed``; its metrics on ``records``
    (val in tuning, test in the ablation), the val curve per epoch and the training time."""
    from mcad_core.evaluation import student_metrics
    from mcad_core.mcad.train import distill_student, load_distill_inputs

    # the grid's overrides are full settings: params.yaml's per-variant choices do not apply on top
    params = with_overrides(base, ["distill.per_variant={}", *overrides, f"distill.seed={seed}"])
    fused = fused_for(params, overrides, scratch, folders["fused"], folders["cache"], folders["prepared"],
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
