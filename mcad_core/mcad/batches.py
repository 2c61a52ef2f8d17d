"""Batch composition for distillation (docs/DESIGN.md §4.5) and the gather of cached pair logits.

An in-batch distribution only teaches about the negatives that are in the batch, so a share of
each batch is made of anchors and their teacher-mined hard neighbours: the pairs whose
cross-encoder logits were cached then meet in one batch and enter the teacher logits S̃
(docs/DESIGN.md §4.1).

A batch is a list of slots (``mcad.cache``): a photo with one of its texts, either one of the
user's own captions (labelled) or, for an uncaptioned photo, the text the teachers picked for
it (unlabelled). Nothing here knows which pool text truly belongs to which photo.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mcad_core.errors import McadError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Batch:
    """One training batch: B (photo, text) slots, aligned by position."""

    images: np.ndarray  # [B] int64 photo indices, each at most once
    slots: np.ndarray  # [B] int64 slot indices; slot slots[b] belongs to photo images[b]
    hard: np.ndarray  # [B] bool: placed as an anchor or as that anchor's hard neighbour
    labelled: np.ndarray  # [B] bool: the slot is a user's caption (a ground-truth pair for L_itc)


class PairBatchSampler:
    """Seeded batches over training photos; each epoch covers every photo.

    Epoch e draws, from ``default_rng([seed, e])``, a photo order and one random slot per photo
    (any of a captioned photo's captions; an uncaptioned photo's picked text). Each batch of
    ``batch_size`` photos is then built as:

    - ``round(batch_size · hard_batch_frac) // 2`` anchors, the next unused photos in the order,
      each followed by its first hard neighbour (``hard_neighbours`` row order: the dual
      teacher's nearest first) that is not already in the batch. A neighbour may have been used
      earlier in the epoch: hard additions can repeat photos across batches, so an epoch can
      have more than ``ceil(N / batch_size)`` batches, and the count varies by epoch (a
      schedule's total is ``sum(len(s.batches(e)) for e in epochs)``). An anchor with no
      available neighbour stays, unpaired and not marked hard;
    - then the next unused photos in the order until the batch is full. The last batch is
      topped up with random photos already used this epoch, so every batch has exactly
      ``batch_size`` photos.

    Every photo appears at most once per batch and at least once per epoch. With
    ``hard_batch_frac = 0`` the batches are consecutive slices of a random permutation.

    DDP: with ``world_size > 1`` the epoch's batch list is padded by wrapping around (repeating
    its first batches) to a multiple of ``world_size``, and rank r takes batches r, r + W, ...
    Each rank thus sees whole batches, keeping the hard pairs of a batch on one rank, and all
    ranks run the same number of steps.

    As a ``torch.utils.data.DataLoader`` ``batch_sampler`` over photos, iteration yields each
    batch's photo indices (``batches()`` has the slots); call ``set_epoch`` before each epoch.
    """

    def __init__(
        self,
        slot_counts: Sequence[int],
        batch_size: int,
        *,
        slot_labelled: Any = None,
        hard_neighbours: Any = None,
        hard_batch_frac: float = 0.0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.counts = np.asarray(slot_counts, dtype=np.int64)
        n = self.counts.shape[0]
        if self.counts.ndim != 1 or n == 0 or (self.counts < 1).any():
            raise McadError("batch sampler: every training photo needs at least one text slot")
        n_slots = int(self.counts.sum())
        self.slot_labelled = (np.ones(n_slots, dtype=bool) if slot_labelled is None
                              else np.asarray(slot_labelled, dtype=bool))
        if self.slot_labelled.shape != (n_slots,) or not self.slot_labelled.any():
            raise McadError(f"batch sampler: slot_labelled must mark the {n_slots} slots and leave some labelled")
        if not 1 <= batch_size <= n:
            raise McadError(f"distill.batch_size must lie in [1, {n}] (the number of training photos), got {batch_size}")
        if not 0.0 <= hard_batch_frac <= 1.0:
            raise McadError(f"distill.hard_batch_frac must lie in [0, 1], got {hard_batch_frac}")
        if not 0 <= rank < world_size:
            raise McadError(f"batch sampler: rank {rank} is outside world size {world_size}")
        if hard_batch_frac > 0:
            if hard_neighbours is None:
                raise McadError("distill.hard_batch_frac > 0 needs the cached hard neighbours")
            hard_neighbours = np.asarray(hard_neighbours, dtype=np.int64)
            if hard_neighbours.ndim != 2 or hard_neighbours.shape[0] != n:
                raise McadError(f"hard neighbours: expected shape [{n}, K], got {hard_neighbours.shape}")
            if hard_neighbours.size and (hard_neighbours.min() < -1 or hard_neighbours.max() >= n):
                raise McadError(f"hard neighbours: indices must lie in [-1, {n})")
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
        self.batch_size = batch_size
        self.neighbours = hard_neighbours
        self.n_anchors = round(batch_size * hard_batch_frac) // 2
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self._cached_epoch: tuple[int, list[Batch]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch that iteration and ``len`` refer to."""
        self.epoch = epoch

    def batches(self, epoch: int | None = None) -> list[Batch]:
        """This rank's batches for ``epoch`` (default: the one set by ``set_epoch``)."""
        epoch = self.epoch if epoch is None else epoch
        if self._cached_epoch is None or self._cached_epoch[0] != epoch:
            everything = self._build_epoch(epoch)
            total = -(-len(everything) // self.world_size) * self.world_size
            padded = [everything[i % len(everything)] for i in range(total)]
            self._cached_epoch = (epoch, padded[self.rank :: self.world_size])
        return self._cached_epoch[1]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches():
            yield batch.images.tolist()

    def __len__(self) -> int:
        return len(self.batches())

    def _build_epoch(self, epoch: int) -> list[Batch]:
        rng = np.random.default_rng([self.seed, epoch])
        n = self.counts.shape[0]
        order = rng.permutation(n).tolist()
        random_slot = self.offsets + rng.integers(0, self.counts)
        used = np.zeros(n, dtype=bool)
        cursor = 0

        def next_unused() -> int | None:
            nonlocal cursor
            while cursor < n and used[order[cursor]]:
                cursor += 1
            return order[cursor] if cursor < n else None

        batches = []
        while next_unused() is not None:
            images: list[int] = []
            hard: list[bool] = []
            for anchor_slot in range(self.n_anchors + self.batch_size):
                image = next_unused()
                if len(images) >= self.batch_size or image is None:
                    break
                used[image] = True
                images.append(image)
                hard.append(False)
                if anchor_slot < self.n_anchors:
                    partner = next((j for j in self.neighbours[image].tolist() if j >= 0 and j not in images), None)
                    if partner is not None:
                        used[partner] = True
                        images.append(partner)
                        hard[-1] = True
                        hard.append(True)
            if len(images) < self.batch_size:
                in_batch = set(images)
                extra = [i for i in rng.permutation(n).tolist() if i not in in_batch]
                images += extra[: self.batch_size - len(images)]
                hard += [False] * (self.batch_size - len(hard))
            image_arr = np.asarray(images, dtype=np.int64)
            slots = random_slot[image_arr]
            batches.append(Batch(image_arr, slots, np.asarray(hard, dtype=bool), self.slot_labelled[slots]))
        return batches


def pair_lookup(images: Any, texts: Any, pair_key: Any, values: Any, n_texts: int) -> torch.Tensor:
    """[B_img, B_txt] float32: ``values[p]`` where (images[a], texts[b]) is the cached pair p
    (``pair_key`` sorted, key = image·n_texts + text), NaN where the pair was never scored."""
    import torch

    keys = torch.as_tensor(pair_key).long()
    vals = torch.as_tensor(values).float()
    wanted = torch.as_tensor(images).long()[:, None] * n_texts + torch.as_tensor(texts).long()[None, :]
    if len(keys) == 0:
        return torch.full(wanted.shape, float("nan"))
    pos = torch.searchsorted(keys, wanted).clamp(max=len(keys) - 1)
    return torch.where(keys[pos] == wanted, vals[pos], torch.tensor(float("nan")))
