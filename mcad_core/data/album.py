"""Which training pairs the student gets unlabelled (a photo album, DESIGN §2).

Real captions describe part of a photo and most photos in an album have none; there only the
teachers know what matches what. The embedded data would otherwise hand the student every
answer through its labels: with a scene and its minimal-pair twin both captioned, the
contrastive loss alone tells them apart and a teacher adds nothing (RESEARCH.md). So for a share
of the training images (first one scene of each twin pair, then others at random) the image
and its caption still reach the student, but never as a ground-truth pair: only the teachers'
distributions link them. Teachers (stand-ins for models pretrained on a large corpus) and the
val/test splits are untouched.
"""

from __future__ import annotations

import numpy as np


def album_mask(twin_of: list[int], frac: float, seed: int) -> np.ndarray:
    """Boolean [N]: True for the ``round(frac·N)`` images the student never gets as a labelled pair.

    ``twin_of[i]`` is the index of image i's twin or -1. One member of each twin pair is
    chosen first (at random), then scenes without a twin, then the other members, so no pair
    loses both labels while the album is no larger than the pairs' halves and the singles.
    Deterministic in ``seed``, independent of the training seed, so every variant and seed
    sees the same album.
    """
    n = len(twin_of)
    rng = np.random.default_rng(seed)
    coin = rng.random(n) < 0.5
    first = [j if coin[i] else i for i, j in enumerate(twin_of) if i < j < n]
    first_set = set(first)
    singles = [i for i in range(n) if not 0 <= twin_of[i] < n]
    others = [i for i in range(n) if 0 <= twin_of[i] < n and i not in first_set]
    order = [pool[k] for pool in (first, singles, others) for k in rng.permutation(len(pool))]
    mask = np.zeros(n, dtype=bool)
    mask[order[: round(frac * n)]] = True
    return mask
