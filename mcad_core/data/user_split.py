"""The student's train split as a user has it (docs/DESIGN.md §2, "Protocol").

A real photo collection holds some captioned photos, many photos with no caption, perhaps texts
with no link to any photo (a query log), and captions that belong to another photo (alt text and
web captions are noisy). The generator knows every photo's captions, its twin and what it drew;
the user does not. ``user_split`` turns a generated split into what the user has
(``train.jsonl``: captioned and uncaptioned photos, no twin link, no object truth;
``texts.jsonl``: the unpaired pool in an order that does not follow the photos) and keeps the
generator's truth apart (``train_truth.jsonl``), read by after-the-fact diagnostics only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# What a user has of a photo; everything else in a generated record is generator truth.
PUBLIC_KEYS = ("image_id", "image", "captions")


@dataclass(frozen=True)
class UserSplit:
    """``photos``: public records (``captions`` empty for uncaptioned photos, another photo's for
    mismatched ones); ``texts``: the unpaired pool; ``truth``: the generated records as they were."""

    photos: list[dict]
    texts: list[str]
    truth: list[dict]


def uncaptioned_mask(twin_of: list[int], frac: float, seed: int) -> np.ndarray:
    """Boolean [N]: True for the ``round(frac·N)`` photos the user never captioned.

    The generator designs the data: one member of each twin pair is chosen first (at random),
    then scenes without a twin, then the other members, so no pair loses both captions while
    the uncaptioned share is at most the pairs' halves and the singles. With both twins
    captioned, labels alone would teach binding and a teacher could add nothing (docs/RESEARCH.md).
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


def mismatch_order(captioned: np.ndarray, frac: float, seed: int) -> np.ndarray:
    """Index [N]: photo i shows the captions of photo ``order[i]``.

    Noisy correspondence as NCR (Huang et al., NeurIPS 2021) builds it: the captions of a random
    ``round(frac·C)`` of the C captioned photos are shuffled among themselves, here along one cycle
    so that every chosen photo ends up with another photo's captions.
    """
    order = np.arange(len(captioned))
    chosen = np.random.default_rng([seed, 2]).permutation(np.flatnonzero(captioned))
    chosen = chosen[: round(frac * len(chosen))]
    if len(chosen) >= 2:
        order[chosen] = np.roll(chosen, 1)
    return order


def user_split(records: list[dict], twin_of: list[int], uncaptioned_frac: float, pool_captions: int,
               mismatched_frac: float, seed: int) -> UserSplit:
    """The user's view of ``records``: uncaptioned photos lose their captions and ``pool_captions``
    of each one's captions (chosen at random) join the unpaired pool, which is shuffled; a
    ``mismatched_frac`` share of the captioned photos carry another photo's captions."""
    rng = np.random.default_rng([seed, 1])
    hidden = uncaptioned_mask(twin_of, uncaptioned_frac, seed)
    shown = mismatch_order(~hidden, mismatched_frac, seed)
    photos, texts = [], []
    for rec, is_hidden, source in zip(records, hidden, shown):
        captions = list(rec["captions"])
        photos.append({"image_id": rec["image_id"], "image": rec["image"],
                       "captions": [] if is_hidden else list(records[source]["captions"])})
        if is_hidden:
            keep = rng.permutation(len(captions))[:pool_captions]
            texts += [captions[k] for k in sorted(keep)]
    order = rng.permutation(len(texts))
    return UserSplit(photos, [texts[k] for k in order], records)
