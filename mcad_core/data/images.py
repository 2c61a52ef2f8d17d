"""Where a student's images come from: preloaded in memory, or streamed by a DataLoader.

Both sources answer the same question, "the uint8 images [B, 3, S, S] of these indices, batch by
batch", so training, evaluation and export do not care which one they hold:
- ``memory``: the split decoded once into one uint8 array. The embedded 64-px splits are small
  (10k images are 120 MB) and decoding them every epoch would cost more than the training step.
- ``stream``: a ``torch.utils.data.DataLoader`` decodes, resizes and crops in worker processes
  (open_clip's transforms, ``mcad_core.data.loader``); memory holds a few batches, whatever the
  split's size. Real data (Flickr30K, COCO) uses this.
Evaluation-time preprocessing is the same in both (shorter side to S, centre crop), so the
two give the same embeddings (tested).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import torch

ImageMode = Literal["memory", "stream"]


def load_images_uint8(prepared_dir: str | Path, records: list[dict], size: int, progress: bool = True) -> np.ndarray:
    """uint8 [N, 3, size, size] (RGB, channels first), preprocessed as for evaluation."""
    from tqdm import tqdm

    from mcad_core.data.loader import RecordImages, eval_transform

    images = RecordImages(prepared_dir, records, eval_transform(size))
    out = np.empty((len(records), 3, size, size), np.uint8)
    for i in tqdm(range(len(images)), desc="load images", disable=not progress, mininterval=1.0, leave=False):
        out[i] = images[i]
    return out


class MemoryImages:
    """A split preloaded as one uint8 array."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def batches(self, index_batches: Iterable[Sequence[int]]) -> Iterator[torch.Tensor]:
        import torch

        for idx in index_batches:
            yield torch.from_numpy(self.array[np.asarray(idx)])


class StreamedImages:
    """A split read from disk batch by batch by ``workers`` DataLoader processes."""

    def __init__(self, prepared_dir: str | Path, records: list[dict], size: int, workers: int = 0,
                 train: bool = False) -> None:
        self.prepared_dir, self.records, self.size, self.workers, self.train = \
            Path(prepared_dir), records, size, workers, train

    def __len__(self) -> int:
        return len(self.records)

    def batches(self, index_batches: Iterable[Sequence[int]]) -> Iterator[torch.Tensor]:
        from mcad_core.data.loader import eval_transform, image_loader, train_transform

        transform = train_transform(self.size) if self.train else eval_transform(self.size)
        sampler = [list(map(int, idx)) for idx in index_batches]
        yield from image_loader(self.prepared_dir, self.records, 1, self.workers, transform, sampler=sampler)


def image_source(prepared_dir: str | Path, records: list[dict], size: int, mode: ImageMode = "memory",
                 workers: int = 0, train: bool = False, progress: bool = True) -> MemoryImages | StreamedImages:
    """The split's images as ``mode`` says (``train``: with open_clip's training crop, stream only)."""
    if mode == "memory":
        return MemoryImages(load_images_uint8(prepared_dir, records, size, progress))
    return StreamedImages(prepared_dir, records, size, workers, train)


def in_order(n: int, batch_size: int) -> list[range]:
    """Index batches 0..n-1 in order (evaluation)."""
    return [range(i, min(n, i + batch_size)) for i in range(0, n, batch_size)]
