"""Flickr30K / MSCOCO in the Karpathy split format (docs/DESIGN.md §2), read from local disk.

The annotations JSON (``dataset_flickr30k.json`` / ``dataset_coco.json``) lists
``images[]`` with ``filename``, ``filepath`` (COCO only), ``split`` and
``sentences[].raw``. Images stay where they are; the manifests point into
``image_root``. Every image is decoded once up front so that a missing or broken
file stops the pipeline here, with its name, rather than hours later in training.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mcad_core.data.manifest import SPLITS
from mcad_core.errors import McadError
from mcad_core.params import KarpathyParams

# Karpathy's "restval" is the part of COCO's val2014 outside the 5k val/test: training data.
SPLIT_OF = {"train": "train", "restval": "train", "val": "val", "test": "test"}
_SHOWN_BAD = 3  # how many bad images an error message names


@dataclass(frozen=True)
class KarpathyDataset:
    """Manifest records per split (``image`` relative to ``image_root``) and how many images were skipped."""

    image_root: Path
    splits: dict[str, list[dict]]
    skipped_images: int


def _required_path(value: str | None, key: str, what: str) -> Path:
    if not value:
        raise McadError(f"data.karpathy.{key}: not set (path to the {what})")
    return Path(value).expanduser()


def _read_annotations(path: Path) -> list[dict]:
    """The ``images`` list, checked for the structure the loader relies on."""
    if not path.is_file():
        raise McadError(f"{path}: annotations file not found (data.karpathy.annotations)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise McadError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise McadError(f"{path}: expected an object with an 'images' list (Karpathy split format)")
    for i, img in enumerate(data["images"]):
        where = f"{path}: images[{i}]"
        if not isinstance(img, dict):
            raise McadError(f"{where}: expected an object, got {type(img).__name__}")
        if not isinstance(img.get("filename"), str) or not img["filename"]:
            raise McadError(f"{where}: needs a 'filename' string")
        if not isinstance(img.get("filepath", ""), str):
            raise McadError(f"{where}: 'filepath' must be a string")
        if img.get("split") not in SPLIT_OF:
            raise McadError(f"{where}: 'split' must be one of {', '.join(SPLIT_OF)} (got {img.get('split')!r})")
        sentences = img.get("sentences")
        if not isinstance(sentences, list) or not all(
            isinstance(s, dict) and isinstance(s.get("raw"), str) for s in sentences
        ):
            raise McadError(f"{where}: needs a 'sentences' list of objects with a 'raw' string")
    return data["images"]


def _records(images: list[dict], path: Path) -> list[tuple[str, dict]]:
    """(split, record) per image; blank captions are dropped, an image left with none is an error."""
    out, seen = [], set()
    for i, img in enumerate(images):
        rel = str(PurePosixPath(img.get("filepath", ""), img["filename"]))
        captions = [s["raw"].strip() for s in img["sentences"] if s["raw"].strip()]
        if not captions:
            raise McadError(f"{path}: images[{i}] ({rel}): no captions")
        image_id = PurePosixPath(img["filename"]).stem
        if image_id in seen:
            raise McadError(f"{path}: images[{i}] ({rel}): duplicate image id {image_id!r}")
        seen.add(image_id)
        out.append((SPLIT_OF[img["split"]], {"image_id": image_id, "image": rel, "captions": captions}))
    return out


def _decode_error(path: Path) -> str | None:
    """Why ``path`` cannot be used as an image, or None if it decodes.

    ``verify()`` alone misses truncated JPEGs, so decode for real; ``draft`` lets JPEG
    decode at 1/8 scale, which still reads the whole stream but costs a fraction.
    """
    from PIL import Image

    if not path.is_file():
        return "missing"
    try:
        with Image.open(path) as im:
            im.draft("RGB", (64, 64))
            im.load()
    except Exception as err:  # PIL raises many types for bad files; any of them means unusable
        return f"unreadable: {type(err).__name__}"
    return None


def _check_images(image_root: Path, rels: list[str], progress: bool) -> list[tuple[str, str]]:
    """(relative path, problem) for every image that is missing or does not decode."""
    from tqdm import tqdm

    workers = min(8, os.cpu_count() or 1)  # PIL releases the GIL while decoding
    with ThreadPoolExecutor(workers) as pool:
        problems = list(tqdm(pool.map(lambda rel: _decode_error(image_root / rel), rels), total=len(rels),
                             desc="check images", disable=not progress, mininterval=1.0))
    return [(rel, why) for rel, why in zip(rels, problems) if why is not None]


def load_karpathy(params: KarpathyParams, progress: bool = True) -> KarpathyDataset:
    """Read the annotations, check every image and return the records per split."""
    annotations = _required_path(params.annotations, "annotations", "dataset_flickr30k.json or dataset_coco.json")
    image_root = _required_path(params.image_root, "image_root", "folder the image paths are relative to")
    images = _read_annotations(annotations)
    if not image_root.is_dir():
        raise McadError(f"{image_root}: image folder not found (data.karpathy.image_root)")
    pairs = _records(images, annotations)
    bad = _check_images(image_root, [rec["image"] for _, rec in pairs], progress)
    if bad and not params.skip_bad_images:
        shown = "; ".join(f"{rel} ({why})" for rel, why in bad[:_SHOWN_BAD])
        more = f" and {len(bad) - _SHOWN_BAD} more" if len(bad) > _SHOWN_BAD else ""
        raise McadError(f"{image_root}: {len(bad)} of {len(pairs)} images missing or unreadable: {shown}{more} "
                        f"(set data.karpathy.skip_bad_images: true to skip them)")
    bad_rels = {rel for rel, _ in bad}
    splits: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for split, rec in pairs:
        if rec["image"] not in bad_rels:
            splits[split].append(rec)
    for split, recs in splits.items():
        if not recs:
            raise McadError(f"{annotations}: no usable images in the {split} split")
    return KarpathyDataset(image_root.resolve(), splits, len(bad))
