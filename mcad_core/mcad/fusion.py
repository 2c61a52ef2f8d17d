"""Fused teacher targets (docs/DESIGN.md §4.1-4.2): the cross-encoder's knowledge folded into the dual teacher.

Two channels, each a switch for the ablation:
- distribution: cached cross-encoder logits shifted and scaled, added to the dual teacher's
  logits for the pairs that have them: ``α·(m − m̄)/τ_M`` with m̄ the mean cached logit
  (``shift=centred``, docs/DESIGN.md §4.1), or ``α·min(0, m − m̄₊)/τ_M`` with m̄₊ the mean logit of true
  pairs (``shift=below_positive``, see ``shifted_logits``);
- features: ``ṽ = norm(v + λ·norm(P h̄))``, ``t̃ = norm(t + λ·norm(P h̄))``, where h̄ of a photo is
  the mean fused vector over its slots (its own captions, or for an uncaptioned photo the text
  the teachers picked for it) and h̄ of a text the mean over the slots it fills; a pool text in
  no slot has no h and keeps t. No photo gets an h from a caption the user does not have.

P is NOT fitted by regressing h onto v + t (that maps h onto what the dual teacher
already knows, docs/RESEARCH.md). ``projection=ranking`` fits P so that ``ṽ·t̃`` ranks each
photo's cached candidate texts, and each text's candidate photos, as the cross-encoder does
(listwise KL on cached logits, both directions, teachers frozen). ``projection=pca``
keeps the top principal directions of h (variance-preserving), as a baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class FuseSettings:
    lam: float
    alpha: float
    tau_m: float
    projection: str
    shift: str = "centred"
    steps: int = 300
    fit_batch: int = 1024  # photos and texts per step of the ranking fit, each with its padded candidates
    lr: float = 1e-2
    seed: int = 0


def group_mean(x: torch.Tensor, group: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row means of ``x`` per group id in [0, n) and whether each group has a row."""
    import torch

    sums = torch.zeros(n, x.shape[1], dtype=x.dtype).index_add_(0, group, x)
    counts = torch.bincount(group, minlength=n)
    return sums / counts.clamp(min=1).unsqueeze(1), counts > 0


def fuse_rows(x: torch.Tensor, h: torch.Tensor, proj: torch.Tensor, lam: float) -> torch.Tensor:
    """norm(x + λ·norm(P h)) row-wise: one modified feature per row."""
    import torch.nn.functional as F

    return F.normalize(x + lam * F.normalize(h @ proj.T, dim=1), dim=1)


def slot_means(cache: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """h̄ per photo [N_img, H], h̄ per text [N_txt, H] and which texts fill a slot [N_txt]."""
    h = cache["slot_h"].float()
    h_img, _ = group_mean(h, cache["slot_image"].long(), cache["v"].shape[0])
    h_txt, has_h = group_mean(h, cache["slot_text"].long(), cache["t"].shape[0])
    return h_img, h_txt, has_h


def fused_features(cache: dict, proj: torch.Tensor | None, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """ṽ [N_img, D] and t̃ [N_txt, D]; with λ = 0 (or no P) they are the dual teacher's own."""
    import torch

    v, t = cache["v"].float(), cache["t"].float()
    if proj is None or lam == 0:
        return v, t
    h_img, h_txt, has_h = slot_means(cache)
    return fuse_rows(v, h_img, proj, lam), torch.where(has_h[:, None], fuse_rows(t, h_txt, proj, lam), t)


def pair_groups(cache: dict, by: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The cached pairs grouped per photo (``by="image"``: candidate text ids) or per text
    (``by="text"``: candidate photo ids), padded: ids [N, Kmax] (-1 = none) and logits [N, Kmax]
    (-inf = none), in key order within a group."""
    import torch

    n_txt = int(cache["n_texts"])
    key = cache["pair_key"].long()
    image, text = key // n_txt, key % n_txt
    group, other, n = (image, text, cache["v"].shape[0]) if by == "image" else (text, image, n_txt)
    order = torch.sort(group, stable=True).indices
    group, other, m = group[order], other[order], cache["pair_m"].float()[order]
    counts = torch.bincount(group, minlength=n)
    pos = torch.arange(len(group)) - (torch.cumsum(counts, 0) - counts)[group]
    width = max(int(counts.max()) if len(counts) else 0, 1)
    ids = torch.full((n, width), -1, dtype=torch.long)
    logits = torch.full((n, width), -float("inf"))
    ids[group, pos], logits[group, pos] = other, m
    return ids, logits


def fit_projection(cache: dict, settings: FuseSettings, progress: bool = True) -> torch.Tensor | None:
    """P: R^H -> R^D, by the method ``settings.projection``; None when λ = 0."""
    import torch

    if settings.lam == 0:
        return None
    h = cache["slot_h"].float()
    dim = cache["v"].shape[1]
    if settings.projection == "pca":
        centred = h - h.mean(0)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        proj = torch.zeros(dim, h.shape[1])
        k = min(dim, vh.shape[0])
        proj[:k] = vh[:k]
        return proj
    return _fit_ranking_projection(cache, settings, progress)


def _listwise_kl(scores: torch.Tensor, target_logits: torch.Tensor, tau_m: float) -> torch.Tensor:
    """KL(softmax(m/τ_M) ‖ softmax(scores)) over each row's candidates (-inf logits: none)."""
    import torch
    import torch.nn.functional as F

    valid = torch.isfinite(target_logits)
    keep = valid.sum(1) >= 2
    scores, target_logits, valid = scores[keep], target_logits[keep], valid[keep]
    log_q = F.log_softmax(scores.masked_fill(~valid, -float("inf")), dim=1)
    log_p = F.log_softmax(target_logits / tau_m, dim=1)
    return torch.where(valid, log_p.exp() * (log_p - log_q), torch.zeros_like(scores)).sum(1).mean()


def _fit_ranking_projection(cache: dict, settings: FuseSettings, progress: bool) -> torch.Tensor:
    import torch
    from tqdm import trange

    gen = torch.Generator().manual_seed(settings.seed)
    dim, hdim = cache["v"].shape[1], cache["slot_h"].shape[1]
    proj = torch.nn.Parameter(torch.randn(dim, hdim, generator=gen) / hdim**0.5)
    log_scale = torch.nn.Parameter(torch.tensor(2.3))
    opt = torch.optim.Adam([proj, log_scale], lr=settings.lr)
    v, t = cache["v"].float(), cache["t"].float()
    h_img, h_txt, has_h = slot_means(cache)
    text_ids, i2t_m = pair_groups(cache, "image")
    image_ids, t2i_m = pair_groups(cache, "text")
    lam = settings.lam

    def fused_texts(ids: torch.Tensor) -> torch.Tensor:
        flat = ids.clamp(min=0).reshape(-1)
        rows = torch.where(has_h[flat, None], fuse_rows(t[flat], h_txt[flat], proj, lam), t[flat])
        return rows.view(*ids.shape, -1)

    def fused_images(ids: torch.Tensor) -> torch.Tensor:
        flat = ids.clamp(min=0).reshape(-1)
        return fuse_rows(v[flat], h_img[flat], proj, lam).view(*ids.shape, -1)

    n_img, n_txt = v.shape[0], t.shape[0]
    for _ in trange(settings.steps, desc="fuse: fit P", disable=not progress, mininterval=1.0):
        imgs = torch.randint(n_img, (min(n_img, settings.fit_batch),), generator=gen)
        txts = torch.randint(n_txt, (min(n_txt, settings.fit_batch),), generator=gen)
        s_i2t = torch.einsum("bd,bkd->bk", fused_images(imgs), fused_texts(text_ids[imgs])) * log_scale.exp()
        s_t2i = torch.einsum("bd,bkd->bk", fused_texts(txts), fused_images(image_ids[txts])) * log_scale.exp()
        loss = _listwise_kl(s_i2t, i2t_m[imgs], settings.tau_m) + _listwise_kl(s_t2i, t2i_m[txts], settings.tau_m)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return proj.detach()


def shift_reference(cache: dict, shift: str) -> float:
    """The cross-encoder logit that leaves a teacher logit unchanged: the mean of all cached
    logits (``centred``) or the mean logit of the user's own captioned pairs (``below_positive``)."""
    if shift == "below_positive":
        return float(cache["slot_m"][cache["slot_labelled"].bool()].float().mean())
    return float(cache["pair_m"].float().mean())


def shifted_logits(cache: dict, alpha: float, tau_m: float, m_ref: float, shift: str = "centred") -> torch.Tensor:
    """The distribution channel's additive term for every cached pair (``pair_m`` order).

    ``centred``: α·(m − m̄)/τ_M. The cross-encoder is near-certain about true pairs, so this
    lifts every true pair far above the uncached (easy) negatives: the targets turn towards
    one-hot and lose the dual teacher's soft ranking (CPRD's concern, docs/DESIGN.md §4.7).
    ``below_positive``: α·min(0, m − m̄₊)/τ_M. Only pairs the cross-encoder scores below a typical
    true pair (near-misses, hard negatives) are lowered; true and uncached pairs keep the dual
    logit, and the gap between a true pair and a near-miss is the same as with ``centred``.
    """
    out = alpha * (cache["pair_m"].float() - m_ref) / tau_m
    return out.clamp(max=0.0) if shift == "below_positive" else out


def ranking_report(cache: dict, v_t: torch.Tensor, t_t: torch.Tensor, shifted: torch.Tensor,
                   tau_t: float) -> dict[str, float]:
    """How targets rank each photo's own captions against its other cached candidate texts (percent).

    ``*_true_top1``: the best-scored candidate is one of the photo's own captions;
    ``*_agree``: pairwise order of candidates agrees with the cross-encoder's.
    Reported for the dual teacher alone, with the feature channel, and with both channels.
    """
    import torch

    text_ids, m = pair_groups(cache, "image")
    _, extra = pair_groups({**cache, "pair_m": shifted}, "image")
    valid = text_ids >= 0
    owner = torch.full((cache["t"].shape[0],), -1, dtype=torch.long)
    labelled = cache["slot_labelled"].bool()
    owner[cache["slot_text"][labelled].long()] = cache["slot_image"][labelled].long()
    true = valid & (owner[text_ids.clamp(min=0)] == torch.arange(len(text_ids))[:, None])
    rows = true.any(1) & (valid & ~true).any(1)

    def stats(v: torch.Tensor, t: torch.Tensor, add: torch.Tensor | None) -> dict[str, float]:
        s = torch.einsum("bd,bkd->bk", v, t[text_ids.clamp(min=0)]) / tau_t
        if add is not None:
            s = s + torch.where(valid, add, torch.zeros_like(add))
        s = s.masked_fill(~valid, -float("inf"))
        top1 = true.gather(1, s.argmax(1, keepdim=True)).squeeze(1)[rows].float().mean().item() * 100
        pair_valid = valid[:, :, None] & valid[:, None, :]
        sign_t = torch.sign(torch.nan_to_num(m[:, :, None] - m[:, None, :]))
        sign_s = torch.sign(torch.nan_to_num(s[:, :, None] - s[:, None, :]))
        mask = pair_valid & (sign_t != 0)
        agree = (sign_t == sign_s)[mask].float().mean().item() * 100
        return {"true_top1": round(top1, 2), "agree": round(agree, 2)}

    cross = m.masked_fill(~valid, -float("inf"))
    cross_top1 = true.gather(1, cross.argmax(1, keepdim=True)).squeeze(1)[rows].float().mean().item() * 100
    out = {"cross_encoder_true_top1": round(cross_top1, 2)}
    for name, (v, t, add) in {
        "dual": (cache["v"].float(), cache["t"].float(), None),
        "fused_features": (v_t, t_t, None),
        "fused_full": (v_t, t_t, extra),
    }.items():
        out.update({f"{name}_{k}": val for k, val in stats(v, t, add).items()})
    return out


def run_fusion(train_cache: dict, val_cache: dict, settings: FuseSettings, tau_t: float,
               progress: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Fit P on train, build the fused train targets, and report ranking quality on val.

    Returns the tensors of ``data/fused/train.safetensors`` (``v``, ``t``: fused features;
    ``s_pair``: shifted logits in the cache's ``pair_key`` order; ``m_ref``; ``proj``: P) and the report.
    """
    import torch

    m_ref = shift_reference(train_cache, settings.shift)
    proj = fit_projection(train_cache, settings, progress)
    v_t, t_t = fused_features(train_cache, proj, settings.lam)
    tensors = {"v": v_t.contiguous(), "t": t_t.contiguous(),
               "s_pair": shifted_logits(train_cache, settings.alpha, settings.tau_m, m_ref, settings.shift),
               "m_ref": torch.tensor([m_ref])}
    if proj is not None:
        tensors["proj"] = proj.contiguous()
    v_val, t_val = fused_features(val_cache, proj, settings.lam)
    val_shifted = shifted_logits(val_cache, settings.alpha, settings.tau_m, m_ref, settings.shift)
    report = ranking_report(val_cache, v_val, t_val, val_shifted, tau_t)
    report["m_ref"] = round(m_ref, 4)
    return tensors, report
