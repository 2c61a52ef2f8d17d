"""Teacher evaluation: the dual teacher alone (val while it trains, test in the evaluate stage), and
the cross-encoder re-ranking the dual teacher's top-k, which shows what the cross-encoder knows
that the dual encoder does not (docs/DESIGN.md §5)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mcad_core.data.manifest import flatten_captions, twin_index, twin_kinds
from mcad_core.evaluation.metrics import embedding_metrics, twin_metrics
from mcad_core.teachers.streaming import dual_split_embeddings

if TYPE_CHECKING:
    import torch

    from mcad_core.teachers.api import CrossEncoderTeacher, DualTeacher
    from mcad_core.teachers.dual import OpenClipTeacher


def _recall_at(rank_hits: torch.Tensor, ks: tuple[int, ...], prefix: str) -> dict[str, float]:
    """``rank_hits`` [Q, k] bool: whether position p of the re-ranked list is a correct item."""
    return {f"{prefix}_r{k}": round(rank_hits[:, :k].any(1).float().mean().item() * 100, 2) for k in ks}


def rerank_metrics(cross: CrossEncoderTeacher, img_emb: torch.Tensor, txt_emb: torch.Tensor, records: list[dict],
                   prepared_dir: Path, captions: list[str], cap_image: list[int], k: int,
                   batch: int = 512, chunk_images: int = 256, workers: int = 0) -> dict[str, float]:
    """R@1/5/10 both ways after the cross-encoder re-orders the dual teacher's top-k, and its twin
    accuracy (overall and per twin kind).

    Items outside the dual top-k stay outside (so R@K for K > k equals the dual teacher's).
    Every pair is scored in one streaming pass over the images (bounded memory).
    """
    import torch

    from mcad_core.evaluation.retrieval import topk_images, twin_accuracy_from_scores
    from mcad_core.teachers.streaming import score_pairs

    ks = tuple(x for x in (1, 5, 10) if x <= k)
    n_cap, n_img = len(captions), len(records)
    cap_image_t = torch.tensor(cap_image)
    twin_of = twin_index(records)
    cand = topk_images(txt_emb, img_emb, k)                                      # [N_cap, k] images per caption
    cand_t = topk_images(img_emb, txt_emb, k)                                     # [N_img, k] captions per image
    caps_with_twin = [c for c, i in enumerate(cap_image) if twin_of[i] >= 0]
    twin_caps = torch.tensor(caps_with_twin, dtype=torch.long)
    # one pair list: t2i candidates, i2t candidates, own pairs of twinned captions, their twin pairs
    pair_image = torch.cat([cand.reshape(-1), torch.arange(n_img).repeat_interleave(k), cap_image_t[twin_caps],
                            torch.tensor([twin_of[cap_image[c]] for c in caps_with_twin], dtype=torch.long)])
    pair_text = ([captions[i] for i in torch.arange(n_cap).repeat_interleave(k).tolist()]
                 + [captions[j] for j in cand_t.reshape(-1).tolist()] + [captions[c] for c in caps_with_twin] * 2)
    _, m_all = score_pairs(cross, prepared_dir, records, pair_image, pair_text, batch, chunk_images,
                           workers=workers)
    m, m_t, own, twin = m_all.split([n_cap * k, n_img * k, len(caps_with_twin), len(caps_with_twin)])
    order = m.view(-1, k).argsort(dim=1, descending=True, stable=True)
    t2i_hits = cand.gather(1, order) == cap_image_t.unsqueeze(1)
    order_t = m_t.view(-1, k).argsort(dim=1, descending=True, stable=True)
    i2t_hits = cap_image_t[cand_t.gather(1, order_t)] == torch.arange(n_img).unsqueeze(1)
    out = {**_recall_at(i2t_hits, ks, "i2t"), **_recall_at(t2i_hits, ks, "t2i")}
    out["rsum"] = round(sum(out.values()), 2)
    if caps_with_twin:
        def accuracy(twins: list[int]) -> float:  # over the scored captions whose image keeps its twin
            keep = torch.tensor([twins[cap_image[c]] >= 0 for c in caps_with_twin])
            return twin_accuracy_from_scores(own[keep], twin[keep])

        out |= twin_metrics(accuracy, cap_image, twin_of, twin_kinds(records))
    return out


def evaluate_dual(teacher: OpenClipTeacher, records: list[dict], prepared_dir: str | Path, progress: bool = False,
                  workers: int = 0) -> dict[str, float]:
    """The dual teacher's R@K both ways and overall twin accuracy on a split, unrounded: the val
    figures its training reports (``reports/teachers.json``)."""
    from mcad_core.evaluation.retrieval import retrieval_metrics, twin_accuracy

    captions, cap_image = flatten_captions(records)
    img, txt = dual_split_embeddings(teacher, records, Path(prepared_dir), captions, teacher.batch_size, workers,
                                     progress)
    out = retrieval_metrics(img, txt, cap_image)
    twin_of = twin_index(records)
    if any(t >= 0 for t in twin_of):
        out["twin_acc"] = twin_accuracy(img, txt, cap_image, twin_of)
    return out


def teacher_report(dual: DualTeacher, cross: CrossEncoderTeacher, records: list[dict], prepared_dir: Path,
                   k: int, workers: int = 0, chunk_images: int = 256) -> dict[str, dict[str, float]]:
    """``reports/teachers.json``: the dual teacher's test retrieval and the cross-encoder re-ranking it,
    its image features ``chunk_images`` at a time (``cache.chunk_images``, as the cache stage holds them)."""
    from mcad_core.data.claims import caption_matches

    captions, cap_image = flatten_captions(records)
    img, txt = dual_split_embeddings(dual, records, prepared_dir, captions, 256, workers)
    return {
        "teacher_dual": {**embedding_metrics(img, txt, cap_image, twin_index(records), twin_kinds(records),
                                             caption_matches(records)),
                         "params_m": teacher_params_m(dual)},
        f"teacher_single_rerank{k}": {**rerank_metrics(cross, img, txt, records, prepared_dir, captions, cap_image, k,
                                                     chunk_images=chunk_images, workers=workers),
                                      "params_m": teacher_params_m(cross)},
    }


def teacher_params_m(teacher: object) -> float:
    """Millions of parameters over the torch modules a teacher object holds, rounded as reported
    (a student's count is :func:`mcad_core.student.model.params_m`)."""
    import torch

    modules = [m for m in vars(teacher).values() if isinstance(m, torch.nn.Module)]
    return round(sum(p.numel() for m in modules for p in m.parameters()) / 1e6, 3)
