"""Teacher evaluation on the test split: the dual teacher alone, and the cross-encoder
re-ranking the dual teacher's top-k, which shows what the cross-encoder knows that the dual
encoder does not (DESIGN §5)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mcad_core.evaluation import embedding_metrics, twin_index, twin_kinds, twin_metrics

if TYPE_CHECKING:
    import torch

    from mcad_core.models.teacher_api import CrossEncoderTeacher, DualTeacher


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def dual_embeddings(dual: DualTeacher, records: list[dict], prepared_dir: Path, captions: list[str],
                    batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit image and caption embeddings of a split."""
    import torch

    from mcad_core.data.manifest import load_image

    with torch.no_grad():
        img = torch.cat([dual.encode_images([load_image(prepared_dir, r) for r in records[sl]]).float().cpu()
                         for sl in _chunks(len(records), batch)])
        txt = torch.cat([dual.encode_texts(captions[sl]).float().cpu() for sl in _chunks(len(captions), batch)])
    return img, txt


def _cross_scores(cross: CrossEncoderTeacher, feats: torch.Tensor, image_idx: torch.Tensor, captions: list[str],
                  batch: int) -> torch.Tensor:
    import torch

    with torch.no_grad():
        return torch.cat([cross.score(feats[image_idx[sl]], captions[sl])[1].float().cpu()
                          for sl in _chunks(len(captions), batch)])


def _recall_at(rank_hits: torch.Tensor, ks: tuple[int, ...], prefix: str) -> dict[str, float]:
    """``rank_hits`` [Q, k] bool: whether position p of the re-ranked list is a correct item."""
    return {f"{prefix}_r{k}": round(rank_hits[:, :k].any(1).float().mean().item() * 100, 2) for k in ks}


def rerank_metrics(cross: CrossEncoderTeacher, img_emb: torch.Tensor, txt_emb: torch.Tensor, records: list[dict],
                   prepared_dir: Path, captions: list[str], cap_image: list[int], k: int,
                   batch: int = 512) -> dict[str, float]:
    """R@1/5/10 both ways after the cross-encoder re-orders the dual teacher's top-k, and its twin
    accuracy (overall and per twin kind).

    Items outside the dual top-k stay outside (so R@K for K > k equals the dual teacher's).
    """
    import torch

    from mcad_core.data.manifest import load_image
    from mcad_core.retrieval import topk_images, twin_accuracy_from_scores

    ks = tuple(x for x in (1, 5, 10) if x <= k)
    with torch.no_grad():
        feats = torch.cat([cross.encode_images([load_image(prepared_dir, r) for r in records[sl]])
                           for sl in _chunks(len(records), batch)])
    cap_img = torch.tensor(cap_image)
    # text -> image: re-rank each caption's top-k images
    cand = topk_images(txt_emb, img_emb, k)                                      # [N_cap, k]
    flat_caps = [captions[i] for i in torch.arange(len(captions)).repeat_interleave(k).tolist()]
    m = _cross_scores(cross, feats, cand.reshape(-1), flat_caps, batch).view(-1, k)
    order = m.argsort(dim=1, descending=True, stable=True)
    t2i_hits = cand.gather(1, order) == cap_img.unsqueeze(1)
    # image -> text: re-rank each image's top-k captions
    cand_t = topk_images(img_emb, txt_emb, k)                                     # [N_img, k] caption ids
    m_t = _cross_scores(cross, feats, torch.arange(len(records)).repeat_interleave(k),
                        [captions[j] for j in cand_t.reshape(-1).tolist()], batch).view(-1, k)
    order_t = m_t.argsort(dim=1, descending=True, stable=True)
    i2t_hits = cap_img[cand_t.gather(1, order_t)] == torch.arange(len(records)).unsqueeze(1)
    out = {**_recall_at(i2t_hits, ks, "i2t"), **_recall_at(t2i_hits, ks, "t2i")}
    out["rsum"] = round(sum(out.values()), 2)
    twin_of = twin_index(records)
    caps_with_twin = [c for c, i in enumerate(cap_image) if twin_of[i] >= 0]
    if caps_with_twin:
        idx = torch.tensor(caps_with_twin)
        texts = [captions[c] for c in caps_with_twin]
        own = _cross_scores(cross, feats, cap_img[idx], texts, batch)
        twin = _cross_scores(cross, feats, torch.tensor([twin_of[cap_image[c]] for c in caps_with_twin]), texts, batch)

        def accuracy(twins: list[int]) -> float:  # over the scored captions whose image keeps its twin
            keep = torch.tensor([twins[cap_image[c]] >= 0 for c in caps_with_twin])
            return twin_accuracy_from_scores(own[keep], twin[keep])

        out |= twin_metrics(accuracy, cap_image, twin_of, twin_kinds(records))
    return out


def teacher_report(dual: DualTeacher, cross: CrossEncoderTeacher, records: list[dict], prepared_dir: Path,
                   k: int) -> dict[str, dict[str, float]]:
    """``reports/teachers.json``: the dual teacher's test retrieval and the cross-encoder re-ranking it."""
    from mcad_core.data.manifest import flatten_captions

    captions, cap_image = flatten_captions(records)
    img, txt = dual_embeddings(dual, records, prepared_dir, captions)
    return {
        "teacher_dual": {**embedding_metrics(img, txt, cap_image, twin_index(records), twin_kinds(records)),
                         "params_m": params_m(dual)},
        f"teacher_single_rerank{k}": {**rerank_metrics(cross, img, txt, records, prepared_dir, captions, cap_image, k),
                                      "params_m": params_m(cross)},
    }


def params_m(teacher: object) -> float:
    """Millions of parameters over the torch modules a teacher object holds."""
    import torch

    modules = [m for m in vars(teacher).values() if isinstance(m, torch.nn.Module)]
    return round(sum(p.numel() for m in modules for p in m.parameters()) / 1e6, 3)
