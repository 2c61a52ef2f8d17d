"""Manifests: one JSON object per image per line in ``data/prepared/{train,val,test}.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from mcad_core.errors import McadError
from mcad_core.io import atomic_path

if TYPE_CHECKING:
    from PIL.Image import Image

SPLITS = ("train", "val", "test")
# Written by the prepare stage beside the manifests: where record["image"] paths are rooted.
SOURCE_FILE = "source.json"


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


def image_root(prepared_dir: str | Path) -> Path:
    """The folder manifest image paths are relative to, as recorded in ``source.json``.

    Synthetic images live inside the prepared folder (root "."), Karpathy images stay
    in their own folder (an absolute root), so every stage resolves them the same way.
    """
    path = Path(prepared_dir) / SOURCE_FILE
    try:
        root = Path(json.loads(path.read_text())["image_root"])
    except FileNotFoundError:
        raise McadError(f"{path}: not found (run the prepare stage first)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise McadError(f"{path}: expected a JSON object with 'image_root' ({err})") from None
    return root if root.is_absolute() else Path(prepared_dir) / root


def image_path(prepared_dir: str | Path, record: dict) -> Path:
    """The file of a manifest record's image, whatever the data source."""
    return image_root(prepared_dir) / record["image"]


def load_image(prepared_dir: str | Path, record: dict) -> Image:
    """A manifest record's image as RGB; an unreadable file is a one-line error naming it."""
    from PIL import Image as PILImage

    path = image_path(prepared_dir, record)
    try:
        with PILImage.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as err:
        raise McadError(f"{path}: cannot read image ({err})") from None
