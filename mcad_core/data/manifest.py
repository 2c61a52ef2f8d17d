"""Manifests: one JSON object per image per line in ``data/prepared/{train,val,test}.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path

from mcad_core.errors import McadError
from mcad_core.io import atomic_path

SPLITS = ("train", "val", "test")


def write_manifest(path: str | Path, records: list[dict]) -> None:
    """Write records as JSON lines, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            for rec in records:
                f.write(json.dumps(rec, separators=(",", ":")) + "\n")


def read_manifest(path: str | Path) -> list[dict]:
    """Read a manifest; a missing file or a bad line is a one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise McadError(f"{path}: manifest not found (run the prepare stage first)")
    records = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise McadError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            if not isinstance(rec, dict) or not {"image_id", "image", "captions"} <= rec.keys():
                raise McadError(f"{path}:{lineno}: a record needs image_id, image and captions")
            records.append(rec)
    return records


def flatten_captions(records: list[dict]) -> tuple[list[str], list[int]]:
    """All captions in manifest order and, for each, the index of its image."""
    captions, image_index = [], []
    for i, rec in enumerate(records):
        captions += rec["captions"]
        image_index += [i] * len(rec["captions"])
    return captions, image_index
