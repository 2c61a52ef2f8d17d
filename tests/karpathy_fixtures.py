"""Tiny Karpathy-split datasets on disk (Flickr30K and MSCOCO layouts), shared by the data tests."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

# (filename, COCO filepath, split); the Flickr layout ignores the filepath.
ENTRIES = [
    ("a.jpg", "train2014", "train"),
    ("b.png", "train2014", "train"),
    ("c.jpg", "val2014", "restval"),
    ("d.jpg", "val2014", "val"),
    ("e.png", "val2014", "test"),
    ("f.jpg", "val2014", "test"),
]


def make_karpathy(root: Path, layout: str) -> tuple[Path, Path, dict]:
    """Write small real images and an annotations JSON; return (annotations, image_root, the JSON object)."""
    image_root = root / "images"
    images = []
    for i, (filename, filepath, split) in enumerate(ENTRIES):
        folder = image_root / filepath if layout == "coco" else image_root
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (12 + i, 10), (20 * i, 100, 200 - 20 * i)).save(folder / filename)
        entry = {"filename": filename, "split": split, "imgid": i,
                 "sentences": [{"raw": f"Photo {i}, caption {k}.", "tokens": []} for k in range(5)]}
        if layout == "coco":
            entry |= {"filepath": filepath, "cocoid": 1000 + i}
        images.append(entry)
    data = {"images": images, "dataset": layout}
    annotations = root / f"dataset_{layout}.json"
    annotations.write_text(json.dumps(data))
    return annotations, image_root, data
