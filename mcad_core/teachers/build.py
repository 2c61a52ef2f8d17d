"""Both teachers behind one entry point: build (train or load) them, save them, load them back.

``models/teachers/`` holds ``dual/`` (an open_clip checkpoint), ``single/`` (the embedded region
cross-encoder's folder, or ``blip.json`` naming a BLIP model or folder) and
``fingerprints.json``, which downstream stages compare with their caches.

One teacher, two words: the single-stream teacher is the cross-encoder. Params, folders and
reports say ``single`` (``teachers.single``, ``models/teachers/single``, ``teacher_single_rerank16``),
as the paper does; the code says ``cross`` (:class:`~mcad_core.teachers.api.CrossEncoderTeacher`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcad_core.errors import McadError
from mcad_core.io import atomic_path, write_json
from mcad_core.teachers.blip import BLIP_FILE

if TYPE_CHECKING:
    from mcad_core.params import TeachersParams
    from mcad_core.teachers.api import CrossEncoderTeacher, DualTeacher

EMBEDDED_CROSS = "region"


def load_cross_teacher(folder: str | Path, device: str = "cpu") -> CrossEncoderTeacher:
    """The cross-encoder saved by the teachers stage."""
    folder = Path(folder)
    if (folder / BLIP_FILE).is_file():
        from mcad_core.teachers.blip import load_blip_reference

        return load_blip_reference(folder, device)
    from mcad_core.teachers.region.teacher import RegionCrossEncoder

    return RegionCrossEncoder.load(folder, device)


def load_teachers(folder: str | Path, device: str = "cpu") -> tuple[DualTeacher, CrossEncoderTeacher]:
    """Both saved teachers (the cache stage's entry point)."""
    from mcad_core.teachers.dual import load_saved_dual_teacher

    folder = Path(folder)
    return load_saved_dual_teacher(folder / "dual", device), load_cross_teacher(folder / "single", device)


def build_dual(params: TeachersParams, train: list[dict], val: list[dict], prepared_dir: Path, out: Path,
               ckpt_dir: Path, seed: int, device: str, workers: int = 0,
               precision: str = "fp32") -> tuple[DualTeacher, dict[str, Any]]:
    """Load the dual teacher (pretrained or random) and train / fine-tune it when epochs > 0."""
    from mcad_core.teachers.dual import load_dual_teacher, save_dual_teacher
    from mcad_core.teachers.dual_train import train_dual_teacher

    cfg = params.dual
    teacher = load_dual_teacher(cfg.model, cfg.pretrained, device, seed=seed, preprocess_tag=cfg.preprocess_tag)
    if cfg.pretrained is None and cfg.epochs == 0:
        raise McadError("teachers.dual.epochs: 0 with pretrained: null would use a random teacher")
    summary = train_dual_teacher(teacher, train, prepared_dir, cfg.epochs, cfg.batch_size, cfg.lr, ckpt_dir, seed,
                                 device=device, val_records=val, workers=workers, precision=precision)
    save_dual_teacher(teacher, out)
    return teacher, summary


def build_cross(params: TeachersParams, train: list[dict], val: list[dict], prepared_dir: Path, out: Path,
                 ckpt_dir: Path, seed: int, device: str) -> tuple[CrossEncoderTeacher, dict[str, Any]]:
    """The embedded region cross-encoder (trained here, or loaded from ``pretrained``), or BLIP as is."""
    cfg = params.single
    if cfg.model != EMBEDDED_CROSS:
        from mcad_core.teachers.blip import load_blip_teacher, save_blip_reference

        teacher = load_blip_teacher(cfg.model, device, itm_token=cfg.itm_token)
        if cfg.epochs > 0:
            raise McadError("teachers.single.epochs: fine-tuning BLIP is not supported; set it to 0")
        with atomic_path(out) as tmp:
            tmp.mkdir()
            save_blip_reference(tmp, teacher)
        return teacher, {}
    from mcad_core.teachers.region.teacher import RegionCrossEncoder
    from mcad_core.teachers.region.train import train_region_teacher

    if cfg.pretrained is not None:
        if cfg.epochs > 0:
            raise McadError("teachers.single.epochs: the region teacher is used as is when pretrained is set; set 0")
        teacher = RegionCrossEncoder.load(cfg.pretrained, device)
        with atomic_path(out) as tmp:
            teacher.save(tmp)
        return teacher, {}
    if cfg.epochs == 0:
        raise McadError("teachers.single.epochs: 0 with pretrained: null would use an untrained teacher")
    summary = train_region_teacher(train, prepared_dir, val, {"epochs": cfg.epochs, "batch_size": cfg.batch_size,
                                                              "lr": cfg.lr},
                                   out, device=device, seed=seed, checkpoint_dir=ckpt_dir)
    return RegionCrossEncoder.load(out, device), summary


def write_fingerprints(folder: Path, dual: DualTeacher, cross: CrossEncoderTeacher) -> None:
    """Record both teachers' fingerprints for the cache checks downstream."""
    write_json(folder / "fingerprints.json", {"dual": dual.fingerprint(), "cross": cross.fingerprint()})
