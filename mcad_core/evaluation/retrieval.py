"""Retrieval metrics (docs/DESIGN.md §5): Recall@K both ways, twin accuracy and top-k search.

Protocol (Karpathy split, as CLIP_benchmark counts it): text→image, a caption hits at K if its
image is among the K best-scoring images; image→text, an image hits at K if ANY of its captions
is among the K best-scoring captions. Scores are dot products (embeddings are expected to be
unit-norm, so they are cosines).

Ties count against the query: the rank of the right answer is the number of wrong items that
score greater than OR EQUAL to it, and a query hits at K when that rank is < K. A model that
scores every pair alike thus earns nothing (an optimistic rule would give it 100, and
``torch.topk`` leaves the order of ties unspecified).

Exactness: every score is computed in float64 and rounded to float32 before it is compared,
so one (image, caption) pair gets the same score whichever chunk or kernel computed it:
results do not depend on ``chunk_size``, and scores equal at float32 precision are ties.

Memory is bounded by design: the full similarity matrix is never built. Work proceeds in blocks
of at most ``chunk_size × chunk_size`` scores (a float64 block, its float32 copy and two boolean
masks: about 14·chunk_size² bytes, 59 MB at the default 2048) plus per-query vectors of length
N_img + N_txt, besides the inputs themselves; a 100k × 500k problem needs no more than a 1k × 5k.

Inputs may be numpy arrays or torch tensors; work happens on the image embeddings' device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mcad_core.errors import McadError

if TYPE_CHECKING:
    import torch

DEFAULT_CHUNK = 2048


def _embeddings(x: Any, name: str, device: Any = None) -> torch.Tensor:
    import torch

    t = torch.as_tensor(x).detach()
    if device is not None:
        t = t.to(device)
    if t.ndim != 2 or t.shape[0] == 0 or not t.is_floating_point():
        raise McadError(f"{name}: expected a non-empty float array [N, D], got shape {tuple(t.shape)}")
    return t


def _indices(x: Any, name: str, length: int, upper: int, device: Any, lower: int = 0) -> torch.Tensor:
    import torch

    t = torch.as_tensor(x).to(device)
    if t.ndim != 1 or t.shape[0] != length or t.is_floating_point() or t.dtype == torch.bool:
        raise McadError(f"{name}: expected {length} integer indices, got {t.dtype} of shape {tuple(t.shape)}")
    t = t.long()
    if length and (int(t.min()) < lower or int(t.max()) >= upper):
        raise McadError(f"{name}: indices must lie in [{lower}, {upper}), found [{int(t.min())}, {int(t.max())}]")
    return t


def _inputs(image_emb: Any, text_emb: Any, cap_image: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    image = _embeddings(image_emb, "image_emb")
    text = _embeddings(text_emb, "text_emb", image.device)
    if image.shape[1] != text.shape[1]:
        raise McadError(f"image_emb has dim {image.shape[1]} but text_emb has dim {text.shape[1]}")
    ids = _indices(cap_image, "cap_image", text.shape[0], image.shape[0], image.device)
    return image, text, ids


def _check_chunk(chunk_size: int) -> None:
    if chunk_size < 1:
        raise McadError(f"chunk_size must be >= 1, got {chunk_size}")


def _block_scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Scores a·bᵀ, in float64 then rounded to float32 (see the module note on exactness)."""
    return (a.double() @ b.double().T).float()


def _pair_scores(text: torch.Tensor, image: torch.Tensor, image_ids: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Score of each caption with one given image each, rounded as ``_block_scores`` does."""
    import torch

    out = torch.empty(text.shape[0], dtype=torch.float32, device=text.device)
    for t0 in range(0, text.shape[0], chunk_size):
        t = text[t0 : t0 + chunk_size].double()
        out[t0 : t0 + chunk_size] = (t * image[image_ids[t0 : t0 + chunk_size]].double()).sum(1).float()
    return out


def _count_at_least(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    threshold: torch.Tensor,
    gallery_owner: torch.Tensor | None,
    query_owner: torch.Tensor,
    chunk_size: int,
) -> torch.Tensor:
    """For each query q: how many gallery items g with owner(g) ≠ owner(q) score ≥ threshold[q].

    ``gallery_owner`` None means gallery item g is owned by g itself (t2i: the image index).
    """
    import torch

    counts = torch.zeros(queries.shape[0], dtype=torch.long, device=queries.device)
    for q0 in range(0, queries.shape[0], chunk_size):
        q = queries[q0 : q0 + chunk_size]
        thr = threshold[q0 : q0 + chunk_size, None]
        own = query_owner[q0 : q0 + chunk_size, None]
        for g0 in range(0, gallery.shape[0], chunk_size):
            s = _block_scores(q, gallery[g0 : g0 + chunk_size])
            if gallery_owner is None:
                owner = torch.arange(g0, g0 + s.shape[1], device=s.device)
            else:
                owner = gallery_owner[g0 : g0 + chunk_size]
            counts[q0 : q0 + chunk_size] += ((s >= thr) & (owner[None, :] != own)).sum(1)
    return counts


def _check_ks(ks: Sequence[int]) -> None:
    if not ks or any(int(k) < 1 for k in ks):
        raise McadError(f"ks must be positive integers, got {list(ks)}")


def _recalls(i2t_rank: torch.Tensor, t2i_rank: torch.Tensor, ks: Sequence[int]) -> dict[str, float]:
    """Recall@K in percent from each query's rank (a hit at K when the rank is < K), and RSUM."""
    out = {f"i2t_r{k}": 100.0 * (i2t_rank < k).double().mean().item() for k in ks}
    out |= {f"t2i_r{k}": 100.0 * (t2i_rank < k).double().mean().item() for k in ks}
    out["rsum"] = sum(out.values())
    return out


def retrieval_metrics(
    image_emb: Any,
    text_emb: Any,
    cap_image: Any,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = DEFAULT_CHUNK,
) -> dict[str, float]:
    """Recall@K in percent: ``i2t_r{k}`` and ``t2i_r{k}`` for each k, and ``rsum`` (their sum).

    image_emb [N_img, D], text_emb [N_txt, D], cap_image [N_txt] (each caption's image index).
    Ties count against the query (module note). Images may have any number of captions; an
    image with none is no i2t query (nothing could be a hit) but stays in the t2i gallery as a
    distractor, so i2t averages over captioned images only.
    """
    import torch

    _check_chunk(chunk_size)
    _check_ks(ks)
    image, text, ids = _inputs(image_emb, text_emb, cap_image)
    own = _pair_scores(text, image, ids, chunk_size)
    t2i_rank = _count_at_least(text, image, own, None, ids, chunk_size)

    # i2t: an image's best caption is its first caption in the ranked list, so its rank is the
    # number of other images' captions scoring at least as high as that best score.
    best = torch.full((image.shape[0],), float("-inf"), device=image.device)
    best = best.scatter_reduce(0, ids, own, reduce="amax")
    rows = torch.arange(image.shape[0], device=image.device)
    i2t_rank = _count_at_least(image, text, best, ids, rows, chunk_size)
    i2t_rank = i2t_rank[torch.bincount(ids, minlength=image.shape[0]) > 0]

    return _recalls(i2t_rank, t2i_rank, ks)


def matched_retrieval_metrics(
    image_emb: Any,
    text_emb: Any,
    matches: Any,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = DEFAULT_CHUNK,
) -> dict[str, float]:
    """``retrieval_metrics`` when a caption may truly match several images.

    matches [N_txt, N_img] (bool): caption c truly describes image i. Text→image, a caption hits
    at K if ANY image it matches is among the K best; image→text, an image hits at K if any caption
    that matches it is. The rank is the number of non-matching items scoring at least as high as
    the best matching one (ties against the query, as in ``retrieval_metrics``, which this equals
    when each caption matches its own image only). Images no caption matches are no i2t queries.
    """
    import torch

    _check_chunk(chunk_size)
    _check_ks(ks)
    image = _embeddings(image_emb, "image_emb")
    text = _embeddings(text_emb, "text_emb", image.device)
    m = torch.as_tensor(matches, device=image.device)
    if m.dtype != torch.bool or tuple(m.shape) != (text.shape[0], image.shape[0]):
        raise McadError(f"matches: expected a bool array [{text.shape[0]}, {image.shape[0]}], "
                        f"got {m.dtype} of shape {tuple(m.shape)}")
    if not bool(m.any(1).all()):
        raise McadError("matches: every caption must match at least one image")
    neg_inf = torch.tensor(float("-inf"), device=image.device)
    t2i_rank = torch.empty(text.shape[0], dtype=torch.long, device=image.device)
    best_i2t = torch.full((image.shape[0],), float("-inf"), device=image.device)
    for t0 in range(0, text.shape[0], chunk_size):  # pass 1: t2i ranks, each image's best matching caption
        s, mm = _block_scores(text[t0 : t0 + chunk_size], image), m[t0 : t0 + chunk_size]
        best = torch.where(mm, s, neg_inf).amax(1, keepdim=True)
        t2i_rank[t0 : t0 + chunk_size] = ((s >= best) & ~mm).sum(1)
        best_i2t = torch.maximum(best_i2t, torch.where(mm, s, neg_inf).amax(0))
    i2t_rank = torch.zeros(image.shape[0], dtype=torch.long, device=image.device)
    for t0 in range(0, text.shape[0], chunk_size):  # pass 2: captions that outscore them
        s, mm = _block_scores(text[t0 : t0 + chunk_size], image), m[t0 : t0 + chunk_size]
        i2t_rank += ((s >= best_i2t[None, :]) & ~mm).sum(0)
    i2t_rank = i2t_rank[m.any(0)]
    return _recalls(i2t_rank, t2i_rank, ks)


def twin_accuracy_from_scores(own_scores: Any, twin_scores: Any) -> float:
    """Percent of captions scoring higher with their own image than with its twin; ties count ½.

    own_scores[c] / twin_scores[c]: caption c's score with its image / with that image's twin,
    from any scorer (embeddings or a cross-encoder's pair logits). 50 is chance (docs/DESIGN.md §5).
    """
    import torch

    own = torch.as_tensor(own_scores).detach().double()
    twin = torch.as_tensor(twin_scores).detach().double().to(own.device)
    if own.ndim != 1 or own.shape != twin.shape or own.shape[0] == 0:
        raise McadError(
            f"twin accuracy needs two non-empty score vectors of one length, got {tuple(own.shape)} and {tuple(twin.shape)}"
        )
    return 100.0 * ((own > twin).double() + 0.5 * (own == twin).double()).mean().item()


def twin_accuracy(
    image_emb: Any,
    text_emb: Any,
    cap_image: Any,
    twin_of: Any,
    chunk_size: int = DEFAULT_CHUNK,
) -> float:
    """Twin accuracy (percent) of a dual encoder over the captions of images that have a twin.

    twin_of [N_img]: index of each image's minimal-pair twin, or -1. Scores are dot products,
    rounded as in ``retrieval_metrics``; see ``twin_accuracy_from_scores`` for the count.
    """
    import torch

    _check_chunk(chunk_size)
    image, text, ids = _inputs(image_emb, text_emb, cap_image)
    twins = _indices(twin_of, "twin_of", image.shape[0], image.shape[0], image.device, lower=-1)
    if bool((twins == torch.arange(image.shape[0], device=image.device)).any()):
        raise McadError("twin_of: an image cannot be its own twin")
    caption_twin = twins[ids]
    keep = caption_twin >= 0
    if not bool(keep.any()):
        raise McadError("twin accuracy: no caption belongs to an image with a twin")
    text, ids, caption_twin = text[keep], ids[keep], caption_twin[keep]
    return twin_accuracy_from_scores(
        _pair_scores(text, image, ids, chunk_size), _pair_scores(text, image, caption_twin, chunk_size)
    )


def topk_images(text_emb: Any, image_emb: Any, k: int, chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Indices [N_txt, k] (int64) of each caption's k best-scoring images, best first.

    Ties are broken by the lower image index, so the result is deterministic. Chunked over
    captions and images (a running top-k is merged per image chunk), e.g. for re-ranking the
    candidates with a cross-encoder.
    """
    import torch

    _check_chunk(chunk_size)
    image = _embeddings(image_emb, "image_emb")
    text = _embeddings(text_emb, "text_emb", image.device)
    if image.shape[1] != text.shape[1]:
        raise McadError(f"image_emb has dim {image.shape[1]} but text_emb has dim {text.shape[1]}")
    if not 1 <= k <= image.shape[0]:
        raise McadError(f"k must lie in [1, {image.shape[0]}] (the number of images), got {k}")
    out = torch.empty(text.shape[0], k, dtype=torch.long, device=image.device)
    for t0 in range(0, text.shape[0], chunk_size):
        t = text[t0 : t0 + chunk_size]
        best_s = torch.empty(t.shape[0], 0, device=image.device)
        best_i = torch.empty(t.shape[0], 0, dtype=torch.long, device=image.device)
        for i0 in range(0, image.shape[0], chunk_size):
            s = _block_scores(t, image[i0 : i0 + chunk_size])
            idx = torch.arange(i0, i0 + s.shape[1], device=image.device).expand(t.shape[0], -1)
            # Candidates stay in ascending image order, so a stable sort puts the lower index first.
            cand_s, cand_i = torch.cat([best_s, s], 1), torch.cat([best_i, idx], 1)
            order = torch.sort(cand_s, dim=1, descending=True, stable=True).indices[:, :k]
            best_s, best_i = cand_s.gather(1, order), cand_i.gather(1, order)
        out[t0 : t0 + chunk_size] = best_i
    return out
