"""The student's losses (docs/DESIGN.md §4.4): L = w_itc·L_itc + w_dist·L_dist + w_feat·L_feat.

Notation: f [B, D] / g [B, D] are the student's unit image / text features of a batch whose
pairs are aligned by index (row i of f and row i of g form a ground-truth pair); v, t are the
dual teacher's features; S̃ [B, B] the teacher logits (rows = images, columns = captions).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mcad_core.errors import McadError

if TYPE_CHECKING:
    import torch


def clip_loss(f: torch.Tensor, g: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """L_itc = ½[CE(s·f·gᵀ, diag) + CE(s·g·fᵀ, diag)], cross-entropies averaged over the batch.

    ``logit_scale`` is s itself (open_clip's ``logit_scale.exp()``). Targets stay the plain
    diagonal even when a batch holds two captions of one image or a pair of twins: those are
    exactly the near-misses the model must learn to tell apart.
    """
    import torch
    import torch.nn.functional as F

    logits = logit_scale * (f @ g.T)
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def teacher_logits(
    v: torch.Tensor,
    t: torch.Tensor,
    tau_t: float,
    pair_m: torch.Tensor | None = None,
    alpha: float = 0.0,
    tau_m: float = 1.0,
    m_mean: float = 0.0,
) -> torch.Tensor:
    """S̃_ij = v_i·t_j / τ_T + α·(m_ij − m̄) / τ_M (docs/DESIGN.md §4.1), as a [B, B] tensor without grad.

    pair_m [B, B] holds the cached cross-encoder logits of the batch's pairs and NaN where a
    pair has none; those entries keep the dual term alone (the cross term is neutral, as m̄ is).
    With the feature channel on, the caller passes the modified features ṽ, t̃ as v, t.
    """
    import torch

    with torch.no_grad():
        logits = (v @ t.T) / tau_t
        if pair_m is not None and alpha != 0:
            cross = (pair_m.to(logits.dtype) - m_mean) / tau_m
            logits = logits + alpha * torch.nan_to_num(cross, nan=0.0)
    return logits


def distribution_kd_loss(student_sim: torch.Tensor, teacher: torch.Tensor, tau_s: float) -> torch.Tensor:
    """L_dist = ½[KL(p_i2t ‖ q_i2t) + KL(p_t2i ‖ q_t2i)] (docs/DESIGN.md §4.4), on the scale of L_itc.

    student_sim = f·gᵀ (cosines, rows = images); teacher = S̃, already divided by the teacher's
    temperatures.
    p_i2t = softmax over each row of S̃, p_t2i = softmax over each column; q likewise from
    f·gᵀ/τ_S. KL(p ‖ q) = Σ p (log p − log q): the teacher p is the target (detached); each KL
    is summed over a distribution and averaged over the rows (respectively columns), i.e.
    ``batchmean``. No τ_S² factor: Hinton et al. scale soft-target terms by T² to balance them
    against a hard-label term taken at T = 1, but here both L_itc and L_dist are cross-entropies
    of logits at the same scale (1/τ_S ≈ the learned logit scale), so ``w_dist = 1`` already
    weighs them alike; with τ_S² = 0.01 the KL term was ~100x weaker than L_itc (docs/RESEARCH.md).
    """
    import torch.nn.functional as F

    z = student_sim / tau_s
    p = teacher.detach().to(z.dtype)

    def kl(student_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
        return F.kl_div(
            F.log_softmax(student_logits, dim=1),
            F.log_softmax(target_logits, dim=1),
            reduction="batchmean",
            log_target=True,
        )

    return 0.5 * (kl(z, p) + kl(z.T, p.T))


def hard_candidate_kd_loss(student_sim: torch.Tensor, teacher: torch.Tensor, candidates: torch.Tensor,
                           tau_s: float) -> torch.Tensor:
    """L_hard = ½[mean over captions of KL(p ‖ q) among the caption's hard candidate images
    + the same over images' hard candidate captions] (CPRD, arXiv 2407.07479: distill the
    ranking among hard negatives).

    ``candidates`` [B_img, B_cap] bool marks each anchor's true pair and cached hard neighbours
    (its twin first). In a 256-way in-batch softmax the twin is one entry among many and the
    teacher's spread over easy negatives dominates the KL; restricted to the candidates, the
    teacher's judgement of exactly the near-misses (from the cross-encoder, in MCAD) reaches
    the student at full strength. Distributions with fewer than two candidates are skipped.
    """
    import torch

    z = student_sim / tau_s
    p = teacher.detach().to(z.dtype)

    def kl(zz: torch.Tensor, pp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask.sum(1) >= 2
        if not bool(keep.any()):
            return zz.sum() * 0.0
        zz, pp, mask = zz[keep], pp[keep], mask[keep]
        log_q = torch.log_softmax(zz.masked_fill(~mask, float("-inf")), dim=1)
        log_p = torch.log_softmax(pp.masked_fill(~mask, float("-inf")), dim=1)
        terms = torch.where(mask, log_p.exp() * (log_p - log_q), torch.zeros_like(zz))
        return terms.sum(1).mean()

    return 0.5 * (kl(z, p, candidates) + kl(z.T, p.T, candidates.T))


def feature_loss(
    f_proj: torch.Tensor, v_target: torch.Tensor, g_proj: torch.Tensor, t_target: torch.Tensor
) -> torch.Tensor:
    """L_feat = mean_i(1 − cos(W_v f_i, ṽ_i)) + mean_j(1 − cos(W_t g_j, t̃_j)) (docs/DESIGN.md §4.4).

    The caller applies the training-only heads (f_proj = W_v f, g_proj = W_t g); targets are
    detached, the teacher being frozen.
    """
    import torch.nn.functional as F

    image_term = (1 - F.cosine_similarity(f_proj, v_target.detach().to(f_proj.dtype), dim=1)).mean()
    text_term = (1 - F.cosine_similarity(g_proj, t_target.detach().to(g_proj.dtype), dim=1)).mean()
    return image_term + text_term


def mcad_loss(
    f: torch.Tensor,
    g: torch.Tensor,
    logit_scale: torch.Tensor | float,
    *,
    labelled: torch.Tensor | None = None,
    teacher: torch.Tensor | None = None,
    candidates: torch.Tensor | None = None,
    tau_s: float = 1.0,
    f_proj: torch.Tensor | None = None,
    v_target: torch.Tensor | None = None,
    g_proj: torch.Tensor | None = None,
    t_target: torch.Tensor | None = None,
    w_itc: float = 1.0,
    w_dist: float = 0.0,
    w_feat: float = 0.0,
    w_hard: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """L = w_itc·L_itc + w_dist·L_dist + w_hard·L_hard + w_feat·L_feat, and its parts as floats.

    A term whose weight is 0 is neither computed nor reported, so its inputs may be None
    (the ``contrastive`` variant needs no teacher at all). Parts are the unweighted terms
    under keys ``itc``, ``dist``, ``hard``, ``feat``, plus ``loss`` (the weighted total).

    ``labelled`` [B] bool: the pairs the student may treat as ground truth (default: all). L_itc
    is computed over those alone; album pairs (unlabelled) enter the teacher terms only. A
    batch without a labelled pair skips L_itc.
    """
    if w_itc == 0 and w_dist == 0 and w_feat == 0 and w_hard == 0:
        raise McadError("distill: w_itc, w_dist, w_hard and w_feat are all 0, there is nothing to train")
    terms = {}
    if w_itc != 0 and (labelled is None or bool(labelled.any())):
        pairs = slice(None) if labelled is None else labelled
        terms["itc"] = (w_itc, clip_loss(f[pairs], g[pairs], logit_scale))
    if w_dist != 0:
        if teacher is None:
            raise McadError("distill: w_dist > 0 needs teacher logits")
        terms["dist"] = (w_dist, distribution_kd_loss(f @ g.T, teacher, tau_s))
    if w_hard != 0:
        if teacher is None or candidates is None:
            raise McadError("distill: w_hard > 0 needs teacher logits and the batch's hard candidates")
        terms["hard"] = (w_hard, hard_candidate_kd_loss(f @ g.T, teacher, candidates, tau_s))
    if w_feat != 0:
        if f_proj is None or v_target is None or g_proj is None or t_target is None:
            raise McadError("distill: w_feat > 0 needs projected student features and teacher targets")
        terms["feat"] = (w_feat, feature_loss(f_proj, v_target, g_proj, t_target))
    total = sum((w * value for w, value in terms.values()), start=f.sum() * 0.0)
    parts = {name: value.item() for name, (_, value) in terms.items()}
    parts["loss"] = total.item()
    return total, parts
