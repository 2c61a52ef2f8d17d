"""Colour segmentation of the embedded scenes: one object per palette colour.

The generator draws objects in exactly the 8 saturated palette colours, without
anti-aliasing, on a grey (R=G=B) background, and never repeats a colour within a
scene. So the pixels within a small RGB distance of a palette colour are one object:
no learned detector is needed to get VinVL-style region proposals here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcad_core.data.vocabulary import COLOURS

COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
_PALETTE = np.array([COLOURS[c] for c in COLOUR_NAMES], dtype=np.int16)  # [8, 3]


@dataclass(frozen=True)
class Segment:
    """One found object: its palette colour, pixel mask and geometry (pixels, x right, y down)."""

    colour: str
    mask: np.ndarray  # bool [H, W]
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 one past the last pixel, as the manifest's boxes)
    centroid: tuple[float, float]  # (x, y)
    area: int


def segment(image: np.ndarray, max_objects: int = 4, tol: int = 24, min_area: int = 6) -> list[Segment]:
    """Objects of an RGB uint8 image [H, W, 3] in palette order (the ``max_objects`` largest if more are found).

    ``tol`` is the max per-channel distance to a palette colour; ``min_area`` drops stray pixels.
    """
    pix = image[..., :3].astype(np.int16)
    label = np.full(pix.shape[:2], len(COLOUR_NAMES))
    coloured = np.flatnonzero((pix.max(-1) - pix.min(-1)).ravel() > tol)  # the palette is far from grey
    dist = np.abs(pix.reshape(-1, 3)[coloured, None, :] - _PALETTE).max(-1)  # [n, 8]
    label.ravel()[coloured] = np.where(dist.min(-1) <= tol, dist.argmin(-1), len(COLOUR_NAMES))
    areas = np.bincount(label.ravel(), minlength=len(COLOUR_NAMES) + 1)
    found: list[Segment] = []
    for k in np.flatnonzero(areas[:-1] >= min_area):
        mask = label == k
        ys, xs = np.nonzero(mask)
        found.append(Segment(COLOUR_NAMES[k], mask, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
                             (float(xs.mean()), float(ys.mean())), int(areas[k])))
    if len(found) > max_objects:
        found = sorted(sorted(found, key=lambda s: -s.area)[:max_objects], key=lambda s: COLOUR_NAMES.index(s.colour))
    return found


def mask_crop(mask: np.ndarray, centre: tuple[float, float], size: int) -> np.ndarray:
    """A ``size`` x ``size`` window of the mask centred on ``centre`` (zero outside the image), unscaled so size shows."""
    h, w = mask.shape
    out = np.zeros((size, size), dtype=np.float32)
    x0, y0 = int(round(centre[0])) - size // 2, int(round(centre[1])) - size // 2
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + size, w), min(y0 + size, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = mask[sy0:sy1, sx0:sx1]
    return out
