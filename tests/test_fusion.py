"""Fused targets: P fitted to the cross-encoder's ranking carries what the dual teacher misses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mcad_core.mcad.fusion import FuseSettings, first_caption_index, fused_features, run_fusion


def twin_cache(n_pairs: int = 100, d: int = 8, hdim: int = 16, k: int = 3, seed: int = 0, nuisance: float = 0.0) -> dict:
    """A cache where twins look identical to the dual teacher (same v, t) but not to the
    cross-encoder: its fused vector h carries a per-scene code and its logits rank own > twin."""
    g = torch.Generator().manual_seed(seed)
    n = 2 * n_pairs
    base = F.normalize(torch.randn(n_pairs, d, generator=g), dim=1).repeat_interleave(2, 0)
    code = torch.randn(n, hdim, generator=g)
    # a large component twins share (what the dual teacher already knows), on the first half of h
    shared = torch.randn(n_pairs, hdim // 2, generator=g).repeat_interleave(2, 0) * nuisance
    code[:, : hdim // 2] = code[:, : hdim // 2] * 0.1 + shared
    caps_per = 2
    cap_image = torch.arange(n).repeat_interleave(caps_per)
    t = base[cap_image] + 0.01 * torch.randn(n * caps_per, d, generator=g)
    twin = torch.arange(n) ^ 1
    others = torch.stack([torch.randperm(n, generator=g)[: k - 1] for _ in range(n)])
    nbr = torch.cat([twin.unsqueeze(1), others], 1)
    m_img_nbr = torch.where(nbr == twin.unsqueeze(1), torch.tensor(-4.0), torch.tensor(0.0))
    return {
        "v": base.clone(), "t": F.normalize(t, dim=1), "cap_image": cap_image,
        "h": code[cap_image] + 0.05 * torch.randn(n * caps_per, hdim, generator=g),
        "m_own": torch.full((n * caps_per,), 4.0), "nbr": nbr,
        "m_img_nbr": m_img_nbr, "m_nbr_img": m_img_nbr.clone(),
    }


def test_ranking_projection_recovers_twin_knowledge():
    train, val = twin_cache(seed=0), twin_cache(seed=1)
    tensors, report = run_fusion(train, val, FuseSettings(lam=1.0, alpha=1.0, tau_m=1.0, projection="ranking",
                                                          steps=200), tau_t=0.1, progress=False)
    assert report["dual_true_top1"] < 60         # twins are near-ties for the dual teacher
    assert report["fused_features_true_top1"] > 90
    assert tensors["proj"].shape == (8, 16)


def test_fitting_beats_a_variance_preserving_projection_when_h_is_dominated_by_shared_content():
    train, val = twin_cache(seed=0, nuisance=10.0), twin_cache(seed=1, nuisance=10.0)
    settings = dict(lam=1.0, alpha=0.0, tau_m=1.0, steps=300)
    _, ranked = run_fusion(train, val, FuseSettings(projection="ranking", **settings), 0.1, progress=False)
    _, pca = run_fusion(train, val, FuseSettings(projection="pca", **settings), 0.1, progress=False)
    assert ranked["fused_features_true_top1"] > pca["fused_features_true_top1"] + 10


def test_lambda_zero_keeps_dual_features_and_alpha_scales_logits():
    train = twin_cache()
    tensors, report = run_fusion(train, twin_cache(seed=2), FuseSettings(lam=0.0, alpha=2.0, tau_m=0.5,
                                                                         projection="ranking"), 0.1, progress=False)
    assert torch.equal(tensors["v"], train["v"]) and torch.equal(tensors["t"], train["t"])
    assert "proj" not in tensors
    m_ref = float(tensors["m_ref"])
    assert m_ref == pytest.approx(float(torch.cat([train[k].reshape(-1) for k in ("m_own", "m_img_nbr", "m_nbr_img")]).mean()))
    assert torch.allclose(tensors["s_img_nbr"], 2.0 * (train["m_img_nbr"] - m_ref) / 0.5)
    assert report["fused_features_true_top1"] == report["dual_true_top1"]


def test_below_positive_shift_only_lowers_pairs_and_keeps_the_true_vs_twin_gap():
    train, val = twin_cache(), twin_cache(seed=2)
    settings = dict(lam=0.0, alpha=1.0, tau_m=2.0, projection="ranking")
    centred, _ = run_fusion(train, val, FuseSettings(**settings), 0.1, progress=False)
    lowered, _ = run_fusion(train, val, FuseSettings(shift="below_positive", **settings), 0.1, progress=False)
    assert float(lowered["m_ref"]) == pytest.approx(float(train["m_own"].mean()))
    for name in ("s_own", "s_img_nbr", "s_nbr_img"):
        assert (lowered[name] <= 0).all()
    assert (centred["s_own"] > 0).all()  # centred lifts every true pair above uncached negatives
    ref = first_caption_index(train["cap_image"], train["v"].shape[0])  # rows of m_img_nbr use c*_i
    below = train["m_img_nbr"] < float(train["m_own"].min())  # pairs every true pair outscores
    gap_centred = centred["s_own"][ref, None] - centred["s_img_nbr"]
    gap_lowered = lowered["s_own"][ref, None] - lowered["s_img_nbr"]
    keep = below & (lowered["s_own"][ref, None] == 0)
    assert keep.any()
    assert torch.allclose(gap_centred[keep], gap_lowered[keep])


def test_pca_projection_is_deterministic_and_unit_norm():
    cache = twin_cache()
    settings = FuseSettings(lam=0.5, alpha=0.0, tau_m=1.0, projection="pca")
    a, _ = run_fusion(cache, twin_cache(seed=3), settings, 0.1, progress=False)
    b, _ = run_fusion(cache, twin_cache(seed=3), settings, 0.1, progress=False)
    assert torch.equal(a["v"], b["v"])
    assert torch.allclose(a["t"].norm(dim=1), torch.ones(len(a["t"])), atol=1e-5)
    v_t, _ = fused_features(cache, a["proj"], 0.5)
    assert torch.allclose(v_t, a["v"])


def test_first_caption_index():
    cap_image = torch.tensor([0, 0, 0, 1, 2, 2])
    assert first_caption_index(cap_image, 3).tolist() == [0, 3, 4]
