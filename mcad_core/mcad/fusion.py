"""Fused teacher targets (DESIGN §4.1-4.2): the cross-encoder's knowledge folded into the dual teacher.

Two channels, each a switch for the ablation:
- distribution: cached cross-encoder logits shifted and scaled, added to the dual teacher's
  logits for the pairs that have them: ``α·(m − m̄)/τ_M`` with m̄ the mean cached logit
  (``shift=centred``, DESIGN §4.1), or ``α·min(0, m − m̄₊)/τ_M`` with m̄₊ the mean logit of true
  pairs (``shift=below_positive``, see ``shifted_logits``);
- features: ``ṽ = norm(v + λ·norm(P h̄))``, ``t̃ = norm(t + λ·norm(P h))``.

P is NOT fitted by regressing h onto v + t (that maps h onto what the dual teacher
already knows, RESEARCH.md). ``projection=ranking`` fits P so that ``ṽ·t̃`` ranks each
anchor's own caption and its hard neighbours' captions as the cross-encoder does
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
    lr: float = 1e-2
    seed: int = 0


def first_caption_index(cap_image: torch.Tensor, n_img: int) -> torch.Tensor:
    """Index of each image's first (reference) caption; captions are grouped by image in manifest order."""
    import torch

    counts = torch.bincount(cap_image, minlength=n_img)
    return torch.cumsum(counts, 0) - counts


def image_mean(x: torch.Tensor, cap_image: torch.Tensor, n_img: int) -> torch.Tensor:
    """Mean of per-caption rows per image (h̄_i: the image's mean fused vector over its captions)."""
    import torch

    sums = torch.zeros(n_img, x.shape[1], dtype=x.dtype).index_add_(0, cap_image, x)
    counts = torch.bincount(cap_image, minlength=n_img).clamp(min=1).unsqueeze(1)
    return sums / counts


def fuse_rows(x: torch.Tensor, h: torch.Tensor, proj: torch.Tensor, lam: float) -> torch.Tensor:
    """norm(x + λ·norm(P h)) row-wise: one modified feature per row."""
    import torch.nn.functional as F

    return F.normalize(x + lam * F.normalize(h @ proj.T, dim=1), dim=1)


def fused_features(cache: dict, proj: torch.Tensor | None, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """ṽ [N_img, D] (from h̄, the image's mean fused vector over its captions) and t̃ [N_cap, D]
    (from the caption's own h); with λ = 0 (or no P) they are the dual teacher's own."""
    v, t = cache["v"].float(), cache["t"].float()
    if proj is None or lam == 0:
        return v, t
    h = cache["h"].float()
    h_img = image_mean(h, cache["cap_image"], v.shape[0])
    return fuse_rows(v, h_img, proj, lam), fuse_rows(t, h, proj, lam)


def candidate_lists(cache: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per anchor image: candidate caption ids / logits (i2t) and candidate image ids / logits (t2i).

    Candidate 0 is always the true pair (the anchor's reference caption / image).
    """
    import torch

    n_img = cache["v"].shape[0]
    ref = first_caption_index(cache["cap_image"], n_img)
    nbr = cache["nbr"]
    cap_ids = torch.cat([ref.unsqueeze(1), ref[nbr]], dim=1)
    img_ids = torch.cat([torch.arange(n_img).unsqueeze(1), nbr], dim=1)
    m_ref = cache["m_own"][ref].unsqueeze(1)
    i2t_logits = torch.cat([m_ref, cache["m_img_nbr"]], dim=1)
    t2i_logits = torch.cat([m_ref, cache["m_nbr_img"]], dim=1)
    return cap_ids, i2t_logits, img_ids, t2i_logits


def fit_projection(cache: dict, settings: FuseSettings, progress: bool = True) -> torch.Tensor | None:
    """P: R^H -> R^D, by the method ``settings.projection``; None when λ = 0."""
    import torch

    if settings.lam == 0:
        return None
    h = cache["h"].float()
    dim = cache["v"].shape[1]
    if settings.projection == "pca":
        centred = h - h.mean(0)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        proj = torch.zeros(dim, h.shape[1])
        k = min(dim, vh.shape[0])
        proj[:k] = vh[:k]
        return proj
    return _fit_ranking_projection(cache, settings, progress)


def _fit_ranking_projection(cache: dict, settings: FuseSettings, progress: bool) -> torch.Tensor:
    import torch
    import torch.nn.functional as F
    from tqdm import trange

    gen = torch.Generator().manual_seed(settings.seed)
    dim, hdim = cache["v"].shape[1], cache["h"].shape[1]
    proj = torch.nn.Parameter(torch.randn(dim, hdim, generator=gen) / hdim**0.5)
    log_scale = torch.nn.Parameter(torch.tensor(2.3))
    opt = torch.optim.Adam([proj, log_scale], lr=settings.lr)
    cap_ids, i2t_m, img_ids, t2i_m = candidate_lists(cache)
    p_i2t = F.softmax(i2t_m / settings.tau_m, dim=1)
    p_t2i = F.softmax(t2i_m / settings.tau_m, dim=1)
    v, t, h = cache["v"].float(), cache["t"].float(), cache["h"].float()
    n_img = v.shape[0]
    h_img = image_mean(h, cache["cap_image"], n_img)
    batch = min(n_img, 1024)
    lam = settings.lam
    for _ in trange(settings.steps, desc="fuse: fit P", disable=not progress, mininterval=1.0):
        anchors = torch.randint(n_img, (batch,), generator=gen)
        caps, imgs, ref = cap_ids[anchors], img_ids[anchors], cap_ids[anchors, 0]
        v_a = fuse_rows(v[anchors], h_img[anchors], proj, lam)
        t_c = fuse_rows(t[caps.reshape(-1)], h[caps.reshape(-1)], proj, lam).view(*caps.shape, -1)
        t_r = fuse_rows(t[ref], h[ref], proj, lam)
        v_c = fuse_rows(v[imgs.reshape(-1)], h_img[imgs.reshape(-1)], proj, lam).view(*imgs.shape, -1)
        s_i2t = torch.einsum("bd,bkd->bk", v_a, t_c) * log_scale.exp()
        s_t2i = torch.einsum("bd,bkd->bk", t_r, v_c) * log_scale.exp()
        loss = F.kl_div(F.log_softmax(s_i2t, 1), p_i2t[anchors], reduction="batchmean") + \
            F.kl_div(F.log_softmax(s_t2i, 1), p_t2i[anchors], reduction="batchmean")
        opt.zero_grad()
        loss.backward()
        opt.step()
    return proj.detach()


def shift_reference(cache: dict, shift: str) -> float:
    """The cross-encoder logit that leaves a teacher logit unchanged: the mean of all cached
    logits (``centred``) or the mean logit of true pairs (``below_positive``)."""
    import torch

    if shift == "below_positive":
        return float(cache["m_own"].float().mean())
    return float(torch.cat([cache[k].float().reshape(-1) for k in ("m_own", "m_img_nbr", "m_nbr_img")]).mean())


def shifted_logits(cache: dict, alpha: float, tau_m: float, m_ref: float, shift: str = "centred"
                   ) -> dict[str, torch.Tensor]:
    """The distribution channel's additive terms for every cached pair.

    ``centred``: α·(m − m̄)/τ_M. The cross-encoder is near-certain about true pairs, so this
    lifts every true pair far above the uncached (easy) negatives: the targets turn towards
    one-hot and lose the dual teacher's soft ranking (CPRD's concern, DESIGN §4.7).
    ``below_positive``: α·min(0, m − m̄₊)/τ_M. Only pairs the cross-encoder scores below a typical
    true pair (twins, hard negatives) are lowered; true and uncached pairs keep the dual logit,
    and the gap between a true pair and its twin is the same as with ``centred``.
    """
    out = {name: alpha * (cache[name].float() - m_ref) / tau_m for name in ("m_own", "m_img_nbr", "m_nbr_img")}
    if shift == "below_positive":
        out = {name: x.clamp(max=0.0) for name, x in out.items()}
    return out


def ranking_report(cache: dict, v_t: torch.Tensor, t_t: torch.Tensor, shifted: dict[str, torch.Tensor],
                   tau_t: float) -> dict[str, float]:
    """How targets rank each anchor's true pair against its cached hard pairs (percent).

    ``*_true_top1``: the true caption (image) scores above all hard neighbours';
    ``*_agree``: pairwise order of candidates agrees with the cross-encoder's.
    Reported for the dual teacher alone, with the feature channel, and with both channels.
    """
    import torch

    cap_ids, i2t_m, img_ids, _ = candidate_lists(cache)
    extra = torch.cat([shifted["m_own"][cap_ids[:, 0]].unsqueeze(1), shifted["m_img_nbr"]], dim=1)

    def stats(v: torch.Tensor, t: torch.Tensor, add: torch.Tensor | None) -> dict[str, float]:
        s = torch.einsum("bd,bkd->bk", v, t[cap_ids]) / tau_t
        if add is not None:
            s = s + add
        top1 = (s[:, 0:1] > s[:, 1:]).all(1).float().mean().item() * 100
        sign_t = torch.sign(i2t_m.unsqueeze(2) - i2t_m.unsqueeze(1))
        sign_s = torch.sign(s.unsqueeze(2) - s.unsqueeze(1))
        mask = sign_t != 0
        agree = (sign_t == sign_s)[mask].float().mean().item() * 100
        return {"true_top1": round(top1, 2), "agree": round(agree, 2)}

    cross_top1 = (i2t_m[:, 0:1] > i2t_m[:, 1:]).all(1).float().mean().item() * 100
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
    ``s_own``, ``s_img_nbr``, ``s_nbr_img``: shifted logits; ``m_ref``; ``proj``: P) and the report.
    """
    import torch

    m_ref = shift_reference(train_cache, settings.shift)
    proj = fit_projection(train_cache, settings, progress)
    v_t, t_t = fused_features(train_cache, proj, settings.lam)
    shifted = shifted_logits(train_cache, settings.alpha, settings.tau_m, m_ref, settings.shift)
    tensors = {"v": v_t.contiguous(), "t": t_t.contiguous(),
               "s_own": shifted["m_own"], "s_img_nbr": shifted["m_img_nbr"].contiguous(),
               "s_nbr_img": shifted["m_nbr_img"].contiguous(), "m_ref": torch.tensor([m_ref])}
    if proj is not None:
        tensors["proj"] = proj.contiguous()
    v_val, t_val = fused_features(val_cache, proj, settings.lam)
    val_shifted = shifted_logits(val_cache, settings.alpha, settings.tau_m, m_ref, settings.shift)
    report = ranking_report(val_cache, v_val, t_val, val_shifted, tau_t)
    report["m_ref"] = round(m_ref, 4)
    return tensors, report
