"""The distillation variants of the ablation (docs/DESIGN.md §4.6): which MCAD channels each one uses."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VariantSpec:
    """``distill``: KL to teacher distributions and feature loss at all (else contrastive only);
    ``fused_scores``: cross-encoder logits in the teacher distributions (α channel);
    ``fused_features``: ṽ, t̃ in place of v, t (λ channel)."""

    distill: bool
    fused_scores: bool
    fused_features: bool


VARIANTS: dict[str, VariantSpec] = {
    "contrastive": VariantSpec(distill=False, fused_scores=False, fused_features=False),
    "dual_kd": VariantSpec(distill=True, fused_scores=False, fused_features=False),
    "mcad": VariantSpec(distill=True, fused_scores=True, fused_features=True),
    "mcad_dist": VariantSpec(distill=True, fused_scores=True, fused_features=False),
    "mcad_feat": VariantSpec(distill=True, fused_scores=False, fused_features=True),
}
