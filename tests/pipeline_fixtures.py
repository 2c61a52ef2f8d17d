"""Small generated data and tiny random teachers shared by the cache, fuse and distill tests."""

from __future__ import annotations

import json
from pathlib import Path

TINY_STUDENT = {
    "name": "tiny-distill",
    "embed_dim": 16,
    "image": {"image_size": 64, "stem_width": 8, "blocks": [[16, 2], [16, 2]]},
    "text": {"context_length": 24, "width": 16, "layers": 1, "heads": 2, "mlp_ratio": 2},
}


def make_prepared(root: Path, n_train: int = 40, n_val: int = 16, n_test: int = 16) -> Path:
    """A prepared synthetic dataset (manifests + images + source.json) under ``root/prepared``."""
    from mcad_core.data.prepare import prepare_dataset
    from mcad_core.params import DataParams

    params = DataParams.model_validate({"synthetic": {"n_train": n_train, "n_val": n_val, "n_test": n_test,
                                                      "n_teacher": n_train, "n_teacher_val": n_val,
                                                      "captions_per_image": 3}})
    out = root / "prepared"
    prepare_dataset(params, out, root / "data.json", root / "sheet.png", progress=False)
    return out


def tiny_teachers(records: list[dict]):
    """A randomly initialised dual teacher and region cross-encoder (deterministic); ``records``
    give the cross-encoder's vocabulary (the teachers' corpus)."""
    import torch

    from mcad_core.teachers.dual import load_dual_teacher
    from mcad_core.teachers.region.teacher import RegionCrossEncoder, default_config, load_model_config
    from mcad_core.teachers.region.tokenizer import WordTokenizer

    dual = load_dual_teacher("mcad-dual-tiny", None, seed=0)
    cfg = default_config(load_model_config("region-tiny"))
    torch.manual_seed(0)
    tok = WordTokenizer.build([c for r in records for c in r["captions"]], cfg["max_len"])
    return dual, RegionCrossEncoder(cfg, tok)


def tiny_student_config(folder: Path) -> Path:
    path = folder / "tiny-student.json"
    path.write_text(json.dumps(TINY_STUDENT))
    return path
