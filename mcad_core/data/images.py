"""Manifest images as one uint8 array, resized to a model's input size when they differ.

Small students train from images held in memory (10k 64x64 images are 120 MB as uint8),
so every stage that feeds a student loads them the same way, here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def load_images_uint8(prepared_dir: str | Path, records: list[dict], size: int, progress: bool = True) -> np.ndarray:
    """uint8 [N, 3, size, size] (RGB, channels first); images of another size are resized (bicubic)."""
    from PIL import Image
    from tqdm import tqdm

    from mcad_core.data.manifest import load_image

    out = np.empty((len(records), 3, size, size), np.uint8)
    for i, rec in enumerate(tqdm(records, desc="load images", disable=not progress, mininterval=1.0, leave=False)):
        im = load_image(prepared_dir, rec)
        if im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        out[i] = np.asarray(im).transpose(2, 0, 1)
    return out
