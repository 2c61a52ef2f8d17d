"""Object tokens, VinVL-style: colour segments -> attribute classifier -> symbolic object features.

Colour comes from segmentation; shape and size from a small CNN on the object's mask,
trained on the manifest's ``objects`` metadata (as VinVL's detector learned attributes
from Visual Genome). The cross-encoder then sees each object as predicted attributes
plus geometry, so it only has to bind caption words to objects and compare positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mcad_core.data.vocabulary import COLOURS, SHAPES, SIZES
from mcad_core.teachers.region.segment import COLOUR_NAMES, mask_crop, segment

# Layout of one object slot in ``encode_images`` output.
N_SHAPE, N_COLOUR, N_SIZE = len(SHAPES), len(COLOURS), len(SIZES)
SLOT_VALID = 0
SLOT_SHAPE = slice(1, 1 + N_SHAPE)
SLOT_COLOUR = slice(SLOT_SHAPE.stop, SLOT_SHAPE.stop + N_COLOUR)
SLOT_SIZE = slice(SLOT_COLOUR.stop, SLOT_COLOUR.stop + N_SIZE)
SLOT_GEOM = slice(SLOT_SIZE.stop, SLOT_SIZE.stop + 4)  # centroid x, y and box w, h, all / image side
SLOT_DIM = SLOT_GEOM.stop


@dataclass(frozen=True)
class Preprocessing:
    """Settings that turn an image into object crops; part of the teacher's fingerprint."""

    image_size: int = 64
    max_objects: int = 4
    seg_tol: int = 24
    seg_min_area: int = 6
    crop: int = 28


@dataclass
class SceneArrays:
    """Per-image object arrays, padded to ``max_objects`` slots."""

    crops: np.ndarray  # float32 [N, K, crop, crop] masks
    hand: np.ndarray  # float32 [N, K, 3]: area, box w, box h (shares of the image)
    colour: np.ndarray  # int64 [N, K] palette index
    geom: np.ndarray  # float32 [N, K, 4]
    valid: np.ndarray  # bool [N, K]


def scene_arrays(images: list, pre: Preprocessing) -> SceneArrays:
    """Segment PIL images (resized to ``pre.image_size`` with NEAREST, so colours stay exact)."""
    from PIL import Image

    n, k, s = len(images), pre.max_objects, pre.image_size
    out = SceneArrays(np.zeros((n, k, pre.crop, pre.crop), np.float32), np.zeros((n, k, 3), np.float32),
                      np.zeros((n, k), np.int64), np.zeros((n, k, 4), np.float32), np.zeros((n, k), bool))
    for i, img in enumerate(images):
        img = img.convert("RGB")
        if img.size != (s, s):
            img = img.resize((s, s), Image.NEAREST)
        for j, seg in enumerate(segment(np.asarray(img), k, pre.seg_tol, pre.seg_min_area)):
            x0, y0, x1, y1 = seg.box
            out.crops[i, j] = mask_crop(seg.mask, ((x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2), pre.crop)
            out.hand[i, j] = (seg.area / s**2, (x1 - x0) / s, (y1 - y0) / s)
            out.colour[i, j] = COLOUR_NAMES.index(seg.colour)
            out.geom[i, j] = (seg.centroid[0] / s, seg.centroid[1] / s, (x1 - x0) / s, (y1 - y0) / s)
            out.valid[i, j] = True
    return out


class AttributeClassifier(nn.Module):
    """Shape and size of an object from its unscaled mask crop (+ area and box size)."""

    def __init__(self, crop: int, channels: tuple[int, int] = (16, 32), hidden: int = 64) -> None:
        super().__init__()
        c1, c2 = channels
        self.conv = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        )
        self.mlp = nn.Sequential(nn.Linear(c2 * (crop // 4) ** 2 + 3, hidden), nn.ReLU())
        self.shape_head = nn.Linear(hidden, N_SHAPE)
        self.size_head = nn.Linear(hidden, N_SIZE)

    def forward(self, crops: torch.Tensor, hand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.mlp(torch.cat([self.conv(crops[:, None]), hand * 4.0], dim=1))
        return self.shape_head(z), self.size_head(z)


@torch.no_grad()
def object_slots(classifier: AttributeClassifier, arrays: SceneArrays, batch: int = 4096) -> torch.Tensor:
    """Symbolic object features [N, K, SLOT_DIM]: valid flag, shape/colour/size probabilities, geometry."""
    n, k = arrays.valid.shape
    dev = next(classifier.parameters()).device
    crops = torch.from_numpy(arrays.crops).flatten(0, 1)
    hand = torch.from_numpy(arrays.hand).flatten(0, 1)
    probs_shape, probs_size = [], []
    for i in range(0, n * k, batch):
        ls, lz = classifier(crops[i:i + batch].to(dev), hand[i:i + batch].to(dev))
        probs_shape.append(ls.softmax(-1))
        probs_size.append(lz.softmax(-1))
    valid = torch.from_numpy(arrays.valid).float()[..., None].to(dev)
    slots = torch.cat([
        valid,
        torch.cat(probs_shape).view(n, k, N_SHAPE),
        nn.functional.one_hot(torch.from_numpy(arrays.colour), N_COLOUR).float().to(dev),
        torch.cat(probs_size).view(n, k, N_SIZE),
        torch.from_numpy(arrays.geom).to(dev),
    ], dim=-1)
    return slots * valid


def attribute_targets(records: list[dict], arrays: SceneArrays) -> tuple[np.ndarray, np.ndarray]:
    """Shape and size labels per found object, matched to the metadata by colour (-1 where unmatched)."""
    n, k = arrays.valid.shape
    shape_t, size_t = np.full((n, k), -1, np.int64), np.full((n, k), -1, np.int64)
    for i, rec in enumerate(records):
        by_colour = {o["colour"]: o for o in rec.get("objects", [])}
        for j in range(k):
            obj = by_colour.get(COLOUR_NAMES[arrays.colour[i, j]]) if arrays.valid[i, j] else None
            if obj is not None:
                shape_t[i, j], size_t[i, j] = SHAPES.index(obj["shape"]), SIZES.index(obj["size"])
    return shape_t, size_t
