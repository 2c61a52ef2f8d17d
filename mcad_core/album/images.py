"""Photos on disk -> the image tower's input, and thumbnails for the result pages.

A photo of any size is resized (bicubic) so its shorter side is the model's input size,
then centre-cropped to a square, as the student is evaluated (``square_crop``). Large JPEGs
are decoded at a reduced scale first (``draft``), as a phone's decoder does; that only
touches photos at least 4x the model's input size.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL.Image import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def list_images(folder: Path) -> list[Path]:
    """Every jpg/png/webp below ``folder`` (recursively, hidden files and folders left out), absolute and sorted."""
    folder = folder.resolve()
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def open_rgb(path: Path, draft_size: int | None = None) -> Image:
    """The photo upright (EXIF orientation applied, as a phone shows it) in RGB.

    ``draft_size``: let the JPEG decoder skip detail below that size (a 12 MP photo decodes
    8x smaller, several times faster). Raises whatever PIL raises for a broken file.
    """
    from PIL import Image as PILImage
    from PIL import ImageOps

    with PILImage.open(path) as im:
        if draft_size:
            im.draft("RGB", (draft_size, draft_size))
        return ImageOps.exif_transpose(im).convert("RGB")


def square_crop(im: Image, size: int) -> Image:
    """Shorter side to ``size`` (bicubic), then the centre ``size`` x ``size`` square.

    The same pixels as the evaluation transform (``mcad_core.data.loader.eval_transform``:
    torchvision's ``Resize`` + ``CenterCrop`` on a PIL image), with its rounding, in PIL alone:
    torchvision would load torch, which the phone-side command must not.
    """
    from PIL import Image as PILImage

    w, h = im.size
    if (w, h) == (size, size):
        return im
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    im = im.resize((nw, nh), PILImage.BICUBIC)
    left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
    return im.crop((left, top, left + size, top + size))


def model_input(path: Path, size: int) -> np.ndarray:
    """float32 [3, size, size] in [0, 1]: the image tower's input (normalisation is inside the graph)."""
    im = square_crop(open_rgb(path, draft_size=2 * size), size)
    return np.asarray(im, np.float32).transpose(2, 0, 1) / np.float32(255.0)


def thumbnail(path: Path, side: int) -> Image:
    """The photo fitted into a ``side`` square: large photos shrink (Lanczos), small ones grow by a
    whole factor with hard pixels (a 64 px scene stays readable instead of blurred)."""
    from PIL import Image as PILImage

    im = open_rgb(path, draft_size=side)
    longest = max(im.size)
    if longest > side:
        im.thumbnail((side, side), PILImage.LANCZOS)
    elif longest * 2 <= side:
        factor = side // longest
        im = im.resize((im.width * factor, im.height * factor), PILImage.NEAREST)
    return im
