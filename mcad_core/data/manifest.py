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
# The teachers' own corpus: they stand for models pretrained elsewhere and never see SPLITS.
TEACHER_SPLITS = ("teacher", "teacher_val")
# The unpaired caption pool of the student's train split (one {"text": ...} per line).
TEXTS_FILE = "texts.jsonl"
# The generator's truth about the train split (hidden captions, twins): diagnostics only.
TRUTH_FILE = "train_truth.jsonl"
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


def write_texts(path: str | Path, texts: list[str]) -> None:
    """Write the unpaired pool as JSON lines, atomically."""
    write_manifest(path, [{"text": text} for text in texts])


def read_texts(path: str | Path) -> list[str]:
    """The unpaired pool; a missing file is an empty pool (a dataset may have none)."""
    path = Path(path)
    if not path.is_file():
        return []
    texts = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            try:
                texts.append(json.loads(line)["text"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise McadError(f"{path}:{lineno}: expected a JSON object with 'text'") from None
    return texts


def flatten_captions(records: list[dict]) -> tuple[list[str], list[int]]:
    """All captions in manifest order and, for each, the index of its image."""
    captions, cap_image = [], []
    for i, rec in enumerate(records):
        captions += rec["captions"]
        cap_image += [i] * len(rec["captions"])
    return captions, cap_image


def twin_index(records: list[dict]) -> list[int]:
    """For each record, the index of its twin in ``records`` (-1 when it has none)."""
    ids = {r["image_id"]: i for i, r in enumerate(records)}
    return [ids.get(r.get("twin"), -1) if r.get("twin") else -1 for r in records]


def twin_kinds(records: list[dict]) -> list[str | None]:
    """For each record, what its twin exchanges ("colour", "size", "relation"); None without a twin
    (Karpathy data) or in a manifest written before the kind was recorded."""
    return [r.get("twin_kind") if r.get("twin") else None for r in records]


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
