"""Manifest images streamed through a ``torch.utils.data.DataLoader``, never all in memory.

Decoding, resizing and cropping happen in worker processes (``params.workers``); a stage
holds one batch of images at a time, so its memory does not grow with the split. The
transforms are open_clip's: resize the shorter side + centre crop for evaluation, and a
``RandomResizedCrop`` (scale 0.9-1, as open_clip's training default) for training.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

# open_clip's training crop: RandomResizedCrop(scale=(0.9, 1.0)) with no flip (a flip would
# mirror "left of" relations while the caption stays unchanged).
TRAIN_CROP_SCALE = (0.9, 1.0)


def eval_transform(size: int) -> Callable[[Image], np.ndarray]:
    """PIL image -> uint8 [3, size, size]: shorter side to ``size`` (bicubic), centre crop."""
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Resize

    steps = Compose([Resize(size, interpolation=InterpolationMode.BICUBIC), CenterCrop(size)])
    return lambda im: _chw(steps(im) if im.size != (size, size) else im)


def train_transform(size: int) -> Callable[[Image], np.ndarray]:
    """PIL image -> uint8 [3, size, size] through open_clip's training crop."""
    from torchvision.transforms import InterpolationMode, RandomResizedCrop

    crop = RandomResizedCrop(size, scale=TRAIN_CROP_SCALE, interpolation=InterpolationMode.BICUBIC)
    return lambda im: _chw(crop(im))


def _chw(im: Image) -> np.ndarray:
    return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()


class RecordImages:
    """Map-style dataset over manifest records: index -> ``transform(image)`` (the PIL image if None).

    A plain class with ``__getitem__``/``__len__`` is all a DataLoader needs; the transform is
    applied in the worker, so only finished arrays cross process boundaries.
    """

    def __init__(self, prepared_dir: str | Path, records: list[dict],
                 transform: Callable[[Image], Any] | None = None) -> None:
        self.prepared_dir, self.records, self.transform = Path(prepared_dir), records, transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Any:
        from mcad_core.data.manifest import load_image

        im = load_image(self.prepared_dir, self.records[int(i)])
        return im if self.transform is None else self.transform(im)


def _collate_list(batch: list) -> list:
    return batch


def _collate_uint8(batch: list[np.ndarray]) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.stack(batch))


def image_loader(prepared_dir: str | Path, records: list[dict], batch_size: int, workers: int = 0,
                 transform: Callable[[Image], Any] | None = None, sampler: Any = None) -> Any:
    """A DataLoader over ``records`` in order (or ``sampler``'s batches of indices).

    Without a transform it yields lists of PIL images (teachers apply their own
    preprocessing); with one, uint8 tensors [B, 3, H, W].
    """
    from torch.utils.data import DataLoader

    collate = _collate_list if transform is None else _collate_uint8
    kwargs: dict[str, Any] = {"num_workers": workers, "collate_fn": collate,
                              "persistent_workers": False, "prefetch_factor": 4 if workers else None}
    if sampler is not None:
        return DataLoader(RecordImages(prepared_dir, records, transform), batch_sampler=sampler, **kwargs)
    return DataLoader(RecordImages(prepared_dir, records, transform), batch_size=batch_size, shuffle=False, **kwargs)


def iter_image_chunks(prepared_dir: str | Path, records: list[dict], chunk: int, workers: int = 0,
                      transform: Callable[[Image], Any] | None = None) -> Iterator[tuple[int, Any]]:
    """``(start, images)`` for consecutive chunks of a split, decoded by ``workers`` processes."""
    start = 0
    for images in image_loader(prepared_dir, records, chunk, workers, transform):
        yield start, images
        start += len(images)
