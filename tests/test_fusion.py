"""Fused targets: P fitted to the cross-encoder's ranking carries what the dual teacher misses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mcad_core.mcad.fusion import FuseSettings, pair_groups, run_fusion


def twin_cache(n_pairs: int = 100, d: int = 8, hdim: int = 16, k: int = 3, seed: int = 0, nuisance: float = 0.0) -> dict:
    """A cache where twins look identical to the dual teacher (same v, t) but not to the
    cross-encoder: its fused vector h carries a per-scene code and its logits rank own > twin.
    Every photo has 2 captions (slots); cached pairs: own captions (m 4), the twin's captions
    (m −4) and k − 1 random photos' captions (m 0)."""
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
    pairs: dict[int, float] = {}
    for i in range(n):
        for c in range(caps_per):
            pairs[i * n * caps_per + i * caps_per + c] = 4.0
            pairs[i * n * caps_per + int(twin[i]) * caps_per + c] = -4.0
        for j in torch.randperm(n, generator=g)[: k - 1].tolist():
            if j not in (i, int(twin[i])):
                pairs[i * n * caps_per + j * caps_per] = 0.0
    keys = torch.tensor(sorted(pairs))
    return {
        "v": base.clone(), "t": F.normalize(t, dim=1), "slot_image": cap_image, "slot_text": torch.arange(n * caps_per),
        "slot_labelled": torch.ones(n * caps_per, dtype=torch.bool),
        "slot_h": code[cap_image] + 0.05 * torch.randn(n * caps_per, hdim, generator=g),
        "slot_m": torch.full((n * caps_per,), 4.0), "nbr": twin.unsqueeze(1),
        "pair_key": keys, "pair_m": torch.tensor([pairs[k] for k in keys.tolist()]),
        "n_texts": torch.tensor([n * caps_per]),
    }


def test_ranking_projection_recovers_twin_knowledge():
    train, val = twin_cache(seed=0), twin_cache(seed=1)
    tensors, report = run_fusion(train, val, FuseSettings(lam=1.0, alpha=1.0, tau_m=1.0, projection="ranking",
                                                          steps=200), tau_t=0.1, progress=False)
    assert report["dual_true_top1"] < 60         # twins are near-ties for the dual teacher
    assert report["fused_features_true_top1"] > 90
    assert tensors["proj"].shape == (8, 16)


def test_the_fit_draws_fit_batch_photos_per_step():
    """``fuse.fit_batch`` bounds the fit's draw (its memory); a draw of every photo equals any larger cap."""
    train, val = twin_cache(seed=0), twin_cache(seed=1)
    n = max(train["v"].shape[0], train["t"].shape[0])  # photos or texts, whichever are more
    settings = dict(lam=1.0, alpha=1.0, tau_m=1.0, projection="ranking", steps=20)
    capped, _ = run_fusion(train, val, FuseSettings(fit_batch=4, **settings), 0.1, progress=False)
    whole, _ = run_fusion(train, val, FuseSettings(fit_batch=n, **settings), 0.1, progress=False)
    default, _ = run_fusion(train, val, FuseSettings(**settings), 0.1, progress=False)
    assert n > 4 and not torch.equal(capped["proj"], whole["proj"])
    assert torch.equal(whole["proj"], default["proj"])  # 1024 > n: the default draws them all too


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
    assert m_ref == pytest.approx(float(train["pair_m"].mean()))
    assert torch.allclose(tensors["s_pair"], 2.0 * (train["pair_m"] - m_ref) / 0.5)
    assert report["fused_features_true_top1"] == report["dual_true_top1"]


def test_below_positive_shift_only_lowers_pairs_and_keeps_the_true_vs_twin_gap():
    train, val = twin_cache(), twin_cache(seed=2)
    settings = dict(lam=0.0, alpha=1.0, tau_m=2.0, projection="ranking")
    centred, _ = run_fusion(train, val, FuseSettings(**settings), 0.1, progress=False)
    lowered, _ = run_fusion(train, val, FuseSettings(shift="below_positive", **settings), 0.1, progress=False)
    # the reference is the mean logit of the user's own captioned pairs
    assert float(lowered["m_ref"]) == pytest.approx(float(train["slot_m"].mean()))
    assert (lowered["s_pair"] <= 0).all()
    own, twin = train["pair_m"] == 4.0, train["pair_m"] == -4.0
    assert (centred["s_pair"][own] > 0).all()  # centred lifts every true pair above uncached negatives
    # true pairs keep 0; the gap true − twin is the same under both shifts
    assert (lowered["s_pair"][own] == 0).all()
    gap_c = centred["s_pair"][own].mean() - centred["s_pair"][twin].mean()
    gap_l = lowered["s_pair"][own].mean() - lowered["s_pair"][twin].mean()
    assert torch.allclose(gap_c, gap_l)


def test_pca_projection_is_deterministic_and_follows_the_formula():
    cache = twin_cache()
    settings = FuseSettings(lam=0.5, alpha=0.0, tau_m=1.0, projection="pca")
    a, _ = run_fusion(cache, twin_cache(seed=3), settings, 0.1, progress=False)
    b, _ = run_fusion(cache, twin_cache(seed=3), settings, 0.1, progress=False)
    assert torch.equal(a["v"], b["v"])
    proj = a["proj"]
    # ṽ_i = norm(v_i + λ·norm(P h̄_i)), h̄_i the mean slot h of photo i (2 captions each), by hand
    h_bar = cache["slot_h"].view(-1, 2, cache["slot_h"].shape[1]).mean(1)
    want_v = F.normalize(cache["v"] + 0.5 * F.normalize(h_bar @ proj.T, dim=1), dim=1)
    want_t = F.normalize(cache["t"] + 0.5 * F.normalize(cache["slot_h"] @ proj.T, dim=1), dim=1)
    assert torch.allclose(a["v"], want_v, atol=1e-6) and torch.allclose(a["t"], want_t, atol=1e-6)


def test_pool_texts_without_a_slot_keep_the_dual_feature():
    cache = twin_cache()
    extra = F.normalize(torch.randn(3, cache["t"].shape[1]), dim=1)  # pool texts no photo picked
    cache = {**cache, "t": torch.cat([cache["t"], extra]), "n_texts": cache["n_texts"] + 3}
    n_old = int(cache["n_texts"]) - 3
    cache["pair_key"] = (cache["pair_key"] // n_old) * (n_old + 3) + cache["pair_key"] % n_old
    tensors, _ = run_fusion(cache, twin_cache(seed=3), FuseSettings(lam=0.5, alpha=0.0, tau_m=1.0, projection="pca"),
                            0.1, progress=False)
    assert torch.equal(tensors["t"][-3:], extra) and not torch.allclose(tensors["t"][:-3], cache["t"][:-3])


def test_pair_groups_pad_each_photo_and_text_list():
    cache = {"v": torch.zeros(2, 1), "t": torch.zeros(3, 1), "n_texts": torch.tensor([3]),
             "pair_key": torch.tensor([0, 2, 5]), "pair_m": torch.tensor([1.0, 2.0, 3.0])}
    ids, m = pair_groups(cache, "image")
    assert ids.tolist() == [[0, 2], [2, -1]] and m[0].tolist() == [1.0, 2.0] and m[1, 1] == -float("inf")
    ids, m = pair_groups(cache, "text")
    assert ids.tolist() == [[0, -1], [-1, -1], [0, 1]] and m[2].tolist() == [2.0, 3.0]
