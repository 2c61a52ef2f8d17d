"""Batch composition for distillation (DESIGN §4.5) and the gather of cached pair logits.

An in-batch distribution only teaches about the negatives that are in the batch, so a share of
each batch is made of anchors and their cached hard neighbours: the pairs whose cross-encoder
logits were cached then meet in one batch and enter the teacher logits S̃ (DESIGN §4.1).

Caption indices are global, in manifest order (as ``data.manifest.flatten_captions`` lists
them). The cached caption c*_i of image i is its FIRST caption: the cache stores, for each
image i and each of its K hard neighbours j, m(i, c*_j) and m(j, c*_i), plus m(i, c*_i).
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
    """One training batch: B (image, caption) pairs, aligned by position."""

    images: np.ndarray  # [B] int64 image indices, each at most once
    captions: np.ndarray  # [B] int64 global caption indices, captions[b] belongs to images[b]
    cached: np.ndarray  # [B] bool: captions[b] is the cached caption (first caption) of images[b]
    hard: np.ndarray  # [B] bool: placed as an anchor or as that anchor's hard neighbour
    labelled: np.ndarray  # [B] bool: the student may use (images[b], captions[b]) as a ground-truth pair


class PairBatchSampler:
    """Seeded batches over training pairs; each epoch covers every image.

    Epoch e draws, from ``default_rng([seed, e])``, an image order and one random caption per
    image. Each batch of ``batch_size`` images is then built as:

    - ``round(batch_size · hard_batch_frac) // 2`` anchors, the next unused images in the order,
      each followed by its first hard neighbour (in ``hard_neighbours`` row order: the cache puts
      the twin first) that is not already in the batch. Anchor and neighbour use their cached
      (first) caption, so that the pair's cached cross-encoder logits apply in both directions.
      A neighbour may have been used earlier in the epoch: hard additions can repeat images
      across batches, so an epoch can have more than ``ceil(N / batch_size)`` batches, and the
      count varies by epoch (a schedule's total is ``sum(len(s.batches(e)) for e in epochs)``). An anchor
      with no available neighbour stays, unpaired and not marked hard;
    - then the next unused images in the order, with their random caption, until the batch is
      full. The last batch is topped up with random images already used this epoch, so every
      batch has exactly ``batch_size`` images.

    Every image appears at most once per batch and at least once per epoch. With
    ``hard_batch_frac = 0`` the batches are consecutive slices of a random permutation.
    An album image (``album[i]``, see ``data.album``) takes its place like any other, and so does
    its caption, but the pair is not ``labelled``: the student meets that image and that caption
    as unpaired data, linked only by the teachers' distributions.

    DDP: with ``world_size > 1`` the epoch's batch list is padded by wrapping around (repeating
    its first batches) to a multiple of ``world_size``, and rank r takes batches r, r + W, ...
    Each rank thus sees whole batches, keeping the hard pairs of a batch on one rank, and all
    ranks run the same number of steps.

    As a ``torch.utils.data.DataLoader`` ``batch_sampler`` over images, iteration yields each
    batch's image indices (``batches()`` has the captions); call ``set_epoch`` before each epoch.
    """

    def __init__(
        self,
        caption_counts: Sequence[int],
        batch_size: int,
        *,
        hard_neighbours: Any = None,
        hard_batch_frac: float = 0.0,
        album: Any = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.counts = np.asarray(caption_counts, dtype=np.int64)
        n = self.counts.shape[0]
        if self.counts.ndim != 1 or n == 0 or (self.counts < 1).any():
            raise McadError("batch sampler: every training image needs at least one caption")
        self.album = np.zeros(n, dtype=bool) if album is None else np.asarray(album, dtype=bool)
        if self.album.shape != (n,) or self.album.all():
            raise McadError(f"batch sampler: album must be a boolean mask of the {n} images that leaves some labelled")
        if not 1 <= batch_size <= n:
            raise McadError(f"distill.batch_size must lie in [1, {n}] (the number of training images), got {batch_size}")
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
        random_caption = self.offsets + rng.integers(0, self.counts)
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
            hard_arr = np.asarray(hard, dtype=bool)
            captions = np.where(hard_arr, self.offsets[image_arr], random_caption[image_arr])
            batches.append(Batch(image_arr, captions, captions == self.offsets[image_arr], hard_arr,
                                 ~self.album[image_arr]))
        return batches


def dense_pair_logits(
    images: Any,
    cached: Any,
    neighbours: Any,
    m_image_vs_neighbour_caption: Any,
    m_neighbour_image_vs_caption: Any,
    m_own: Any,
) -> torch.Tensor:
    """The batch's cached cross-encoder logits as a dense [B, B] float32 tensor, NaN elsewhere.

    Row a is image i = images[a]; column b is the caption of image j = images[b], which is j's
    cached caption c*_j exactly when cached[b]. The cache, for each of the N images:
    neighbours [N, K] (hard neighbour image ids, -1 = padding), m_image_vs_neighbour_caption
    [N, K] (m(i, c*_neighbour)), m_neighbour_image_vs_caption [N, K] (m(neighbour, c*_i)) and
    m_own [N] (m(i, c*_i)). Entry (a, b) gets a logit only when cached[b], and then:
    m_own[i] if j == i; else m(i, c*_j) from i's row if j is among i's neighbours; else from
    j's row (m_neighbour_image_vs_caption) if i is among j's neighbours; otherwise NaN.
    Both rows hold the same pair's logit when both know it; i's row is read first.
    Memory: two [B, K, B] boolean masks.
    """
    import torch

    img = torch.as_tensor(images).long()
    col_cached = torch.as_tensor(cached).bool()
    # Zero-copy views of the cache; only the batch's rows are gathered and converted.
    nb_all, fwd_all, bwd_all, own_all = (
        torch.as_tensor(x) for x in (neighbours, m_image_vs_neighbour_caption, m_neighbour_image_vs_caption, m_own)
    )
    n = own_all.shape[0]
    if nb_all.shape != fwd_all.shape or nb_all.shape != bwd_all.shape or nb_all.ndim != 2 or nb_all.shape[0] != n:
        raise McadError(f"pair-logit cache: neighbours and both logit tables must be [{n}, K] like m_own [{n}]")
    if img.ndim != 1 or col_cached.shape != img.shape:
        raise McadError("pair-logit gather: images and cached must be vectors of one length")

    # [B, K] rows of the batch's images
    fwd, bwd = fwd_all[img].float(), bwd_all[img].float()
    in_row, in_col = _neighbour_membership(img, nb_all)
    from_row = fwd.gather(1, in_row.int().argmax(1))  # first match: [a, b] -> fwd[a, k]
    from_col = bwd.T.gather(0, in_col.int().argmax(2))  # [a, b] -> bwd[b, k]
    nan = torch.tensor(float("nan"))
    out = torch.where(in_col.any(2), from_col, nan)
    out = torch.where(in_row.any(1), from_row, out)
    out = torch.where(img[:, None] == img[None, :], own_all[img].float()[:, None].expand_as(out), out)
    return torch.where(col_cached[None, :], out, nan)


def _neighbour_membership(img: torch.Tensor, neighbours: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """in_row [a, k, b]: j = img[b] is i = img[a]'s k-th hard neighbour; in_col [a, b, k]: i is j's."""
    import torch

    nb = torch.as_tensor(neighbours)[img].long()  # [B, K] rows of the batch's images
    return nb[:, :, None] == img[None, None, :], nb[None, :, :] == img[:, None, None]


def cached_pair_mask(images: Any, cached: Any, neighbours: Any) -> torch.Tensor:
    """[B, B] bool: the batch pairs that have a cached cross-encoder logit (where
    ``dense_pair_logits`` is not NaN): column b's caption is its image's cached one, and image
    j = images[b] is image i = images[a] itself, one of i's hard neighbours, or has i among its
    own. These are each anchor's hard candidates (twin first), whatever the variant's teacher."""
    import torch

    img = torch.as_tensor(images).long()
    in_row, in_col = _neighbour_membership(img, neighbours)
    same = img[:, None] == img[None, :]
    return (in_row.any(1) | in_col.any(2) | same) & torch.as_tensor(cached).bool()[None, :]
