"""Metrics a model is compared on (docs/DESIGN.md §5), from its embeddings or any twin scorer.

Built on the chunked kernels of :mod:`mcad_core.evaluation.retrieval`; students (val during
training, test in the evaluate stage) and teachers are measured by the same functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mcad_core.data.vocabulary import TWIN_KINDS
from mcad_core.errors import McadError

if TYPE_CHECKING:
    import numpy as np
    import torch

RECALL_KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")
TWIN_KEYS = ("twin_acc", *(f"twin_{kind}" for kind in TWIN_KINDS))


def twin_metrics(accuracy: Callable[[list[int]], float], cap_image: list[int], twin_of: list[int],
                 twin_kind: list[str | None] | None = None) -> dict[str, float]:
    """``twin_acc`` and, given each image's twin kind, ``twin_<kind>``, from any scorer.

    ``accuracy(twins)``: twin accuracy over the captions of images with ``twins[i] >= 0``; a kind
    is measured by hiding the other kinds' twins (-1), so every scorer counts kinds one way. Keys
    whose captions are none (no twins, or no twin of that kind) are left out.
    """
    if twin_kind is not None and len(twin_kind) != len(twin_of):
        raise McadError(f"twin_kind: expected {len(twin_of)} kinds (one per image), got {len(twin_kind)}")
    subsets = {"twin_acc": twin_of}
    for kind in TWIN_KINDS if twin_kind is not None else ():
        subsets[f"twin_{kind}"] = [t if k == kind else -1 for t, k in zip(twin_of, twin_kind)]
    return {key: round(float(accuracy(twins)), 2) for key, twins in subsets.items()
            if any(twins[i] >= 0 for i in cap_image)}


def embedding_metrics(image_emb: torch.Tensor | np.ndarray, text_emb: torch.Tensor | np.ndarray,
                      cap_image: list[int], twin_of: list[int],
                      twin_kind: list[str | None] | None = None,
                      matches: np.ndarray | None = None) -> dict[str, float]:
    """Retrieval R@K both ways, RSUM and, where the data has twins, ``twin_acc`` (per kind given ``twin_kind``).

    ``matches`` [N_txt, N_img] (``data.claims.caption_matches``): every image each caption truly
    describes. Retrieval then counts a hit on any of them, and twin accuracy reads only the
    captions that tell a scene from its twin (true of one, false of the other).
    """
    import numpy as np

    from mcad_core.evaluation.retrieval import matched_retrieval_metrics, retrieval_metrics, twin_accuracy

    if matches is None:
        out = retrieval_metrics(image_emb, text_emb, cap_image)
        text, owner = text_emb, cap_image
    else:
        out = matched_retrieval_metrics(image_emb, text_emb, matches)
        rows, own = np.arange(len(cap_image)), np.asarray(cap_image)
        twin = np.asarray(twin_of)[own]
        telling = (twin < 0) | (matches[rows, own] & ~matches[rows, np.maximum(twin, 0)])
        text, owner = text_emb[telling], own[telling].tolist()
    return {k: round(float(v), 2) for k, v in out.items()} | twin_metrics(
        lambda twins: twin_accuracy(image_emb, text, owner, twins), owner, twin_of, twin_kind)
