"""MCAD loss terms against hand-computed 2x2 cases, and their defining properties."""

import math

import pytest
import torch
import torch.nn.functional as F

from mcad_core.errors import McadError
from mcad_core.mcad.losses import (
    clip_loss,
    distribution_kd_loss,
    feature_loss,
    hard_candidate_kd_loss,
    mcad_loss,
    teacher_logits,
)


def softplus(x):
    return math.log1p(math.exp(x))


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def test_clip_loss_hand_case():
    # f = I, g rows (0.9, 0.3), (0.1, 0.5): f·gᵀ = [[0.9, 0.1], [0.3, 0.5]]; s = 10 -> [[9, 1], [3, 5]].
    f = torch.eye(2)
    g = torch.tensor([[0.9, 0.3], [0.1, 0.5]])
    rows = (softplus(1 - 9) + softplus(3 - 5)) / 2  # CE of rows (9, 1) -> 0 and (3, 5) -> 1
    cols = (softplus(3 - 9) + softplus(1 - 5)) / 2  # CE of columns (9, 3) -> 0 and (1, 5) -> 1
    want = 0.5 * (rows + cols)
    assert want == pytest.approx(0.0369722576)
    assert clip_loss(f, g, 10.0).item() == pytest.approx(want, rel=1e-6)
    assert clip_loss(f, g, torch.tensor(10.0)).item() == pytest.approx(want, rel=1e-6)


def test_teacher_logits_hand_case_and_nan_is_neutral():
    v = torch.eye(2)
    t = torch.tensor([[0.6, 0.8], [0.8, 0.6]])  # v·tᵀ = [[0.6, 0.8], [0.8, 0.6]]
    dual = torch.tensor([[6.0, 8.0], [8.0, 6.0]])  # / τ_T = 0.1
    nan = float("nan")
    m = torch.tensor([[3.0, nan], [1.0, nan]])
    # α (m - m̄) / τ_M with α = 0.5, m̄ = 1, τ_M = 2: +0.5 at (0, 0), 0 at (1, 0), NaN -> 0.
    got = teacher_logits(v, t, 0.1, m, alpha=0.5, tau_m=2.0, m_mean=1.0)
    assert torch.allclose(got, torch.tensor([[6.5, 8.0], [8.0, 6.0]]))
    assert torch.allclose(teacher_logits(v, t, 0.1), dual)
    all_nan = torch.full((2, 2), nan)
    assert torch.equal(teacher_logits(v, t, 0.1, all_nan, alpha=3.0), teacher_logits(v, t, 0.1))
    assert torch.equal(teacher_logits(v, t, 0.1, m, alpha=0.0), teacher_logits(v, t, 0.1))
    assert not teacher_logits(v.requires_grad_(), t, 0.1, m, alpha=1.0).requires_grad


def test_distribution_kd_hand_case():
    # Teacher S̃ = [[2, 0], [1, 1]]: rows p = (σ2, σ-2), (½, ½); columns (2, 1) -> (σ1, σ-1), (0, 1) -> (σ-1, σ1).
    # Student f·gᵀ = [[0.5, 0], [0, 0]], τ_S = 0.5 -> [[1, 0], [0, 0]]:
    #   rows q = (σ1, σ-1), (½, ½); columns q = (σ1, σ-1), (½, ½).
    teacher = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    sim = torch.tensor([[0.5, 0.0], [0.0, 0.0]])
    i2t = (kl((sigmoid(2), sigmoid(-2)), (sigmoid(1), sigmoid(-1))) + kl((0.5, 0.5), (0.5, 0.5))) / 2
    t2i = (kl((sigmoid(1), sigmoid(-1)), (sigmoid(1), sigmoid(-1))) + kl((sigmoid(-1), sigmoid(1)), (0.5, 0.5))) / 2
    want = 0.5 * (i2t + t2i)  # no τ_S² factor (the KL weight convention, see the next test)
    assert want == pytest.approx(0.0111296766 / 0.5**2)
    assert distribution_kd_loss(sim, teacher, 0.5).item() == pytest.approx(want, rel=1e-6)


def test_kd_direction_and_zero_at_agreement():
    torch.manual_seed(0)
    sim = torch.rand(5, 5) * 2 - 1
    teacher = torch.randn(5, 5) * 3
    tau = 0.2
    # KL(p ‖ q) with the teacher p as target, not KL(q ‖ p): swapping the roles changes the value.
    log_p_rows, log_q_rows = F.log_softmax(teacher, 1), F.log_softmax(sim / tau, 1)
    log_p_cols, log_q_cols = F.log_softmax(teacher, 0), F.log_softmax(sim / tau, 0)
    forward = 0.5 * (
        (log_p_rows.exp() * (log_p_rows - log_q_rows)).sum() / 5 + (log_p_cols.exp() * (log_p_cols - log_q_cols)).sum() / 5
    )
    got = distribution_kd_loss(sim, teacher, tau)
    assert got.item() == pytest.approx(forward.item(), rel=1e-5)
    swapped = distribution_kd_loss(teacher * tau, sim / tau, tau)
    assert abs(swapped.item() - got.item()) > 1e-3
    # Student equal to the teacher at the same temperature: zero.
    assert distribution_kd_loss(sim, sim / tau, tau).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_weight_convention_matches_itc_scale():
    # A one-hot teacher (the ground truth) makes KL(p ‖ q) = −log q_ii, i.e. L_dist = L_itc at
    # logit scale 1/τ_S: w_dist = 1 weighs the two terms alike (no τ_S² = 0.01 factor).
    torch.manual_seed(1)
    f, g = F.normalize(torch.randn(6, 4), dim=1), F.normalize(torch.randn(6, 4), dim=1)
    one_hot = torch.eye(6) * 1e4
    tau = 0.1
    assert distribution_kd_loss(f @ g.T, one_hot, tau).item() == pytest.approx(clip_loss(f, g, 1 / tau).item(), rel=1e-5)


def test_feature_loss_hand_case():
    f_proj = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    v = torch.tensor([[1.0, 0.0], [1.0, 1.0]]) / torch.tensor([[1.0], [math.sqrt(2)]])
    g_proj = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    t = torch.tensor([[0.8, 0.6], [-1.0, 0.0]])
    # image: cos 1 and 1/√2 -> mean(0, 1 - 0.7071); text: cos 24/25 and -1 -> mean(0.04, 2).
    want = (1 - 1 / math.sqrt(2)) / 2 + (0.04 + 2) / 2
    assert want == pytest.approx(1.1664466094)
    assert feature_loss(f_proj, v, g_proj, t).item() == pytest.approx(want, rel=1e-6)


def batch(seed=0, b=4, d=6):
    gen = torch.Generator().manual_seed(seed)
    f = F.normalize(torch.randn(b, d, generator=gen), dim=1).requires_grad_()
    g = F.normalize(torch.randn(b, d, generator=gen), dim=1).requires_grad_()
    return f, g, torch.randn(b, b, generator=gen), torch.randn(b, 3, generator=gen), torch.randn(b, 3, generator=gen)


def test_mcad_loss_is_the_weighted_sum_of_its_parts():
    f, g, teacher, v, t = batch()
    f_proj, g_proj = f[:, :3] * 2, g[:, :3] + 1
    candidates = torch.eye(f.shape[0], dtype=torch.bool) | torch.eye(f.shape[0], dtype=torch.bool).roll(1, 1)
    total, parts = mcad_loss(
        f, g, 20.0, teacher=teacher, candidates=candidates, tau_s=0.1, f_proj=f_proj, v_target=v, g_proj=g_proj,
        t_target=t, w_itc=1.0, w_dist=0.5, w_feat=2.0, w_hard=3.0,
    )
    itc = clip_loss(f, g, 20.0).item()
    dist = distribution_kd_loss(f @ g.T, teacher, 0.1).item()
    hard = hard_candidate_kd_loss(f @ g.T, teacher, candidates, 0.1).item()
    feat = feature_loss(f_proj, v, g_proj, t).item()
    assert hard > 0  # so a hard term dropped or zeroed inside mcad_loss changes the total
    assert parts == pytest.approx({"itc": itc, "dist": dist, "hard": hard, "feat": feat,
                                   "loss": itc + 0.5 * dist + 3 * hard + 2 * feat})
    assert total.item() == pytest.approx(parts["loss"])
    total.backward()
    assert f.grad is not None and torch.isfinite(f.grad).all()


def test_mcad_loss_skips_zero_weight_terms():
    f, g, teacher, _, _ = batch()
    # No teacher and no heads: only L_itc can be, and is, computed.
    total, parts = mcad_loss(f, g, 10.0)
    assert set(parts) == {"itc", "loss"} and total.item() == pytest.approx(clip_loss(f, g, 10.0).item())
    total, parts = mcad_loss(f, g, 10.0, teacher=teacher, tau_s=0.5, w_itc=0.0, w_dist=1.0)
    assert set(parts) == {"dist", "loss"}
    with pytest.raises(McadError):
        mcad_loss(f, g, 10.0, w_dist=1.0)  # a nonzero weight needs its inputs
    with pytest.raises(McadError):
        mcad_loss(f, g, 10.0, teacher=teacher, w_itc=0.0)


def test_mcad_loss_with_album_pairs_uses_labelled_pairs_for_itc_and_every_pair_for_kd():
    f, g, teacher, _, _ = batch(b=4)
    labelled = torch.tensor([True, False, True, False])  # pairs 1 and 3 are album photos and their captions
    total, parts = mcad_loss(f, g, 10.0, labelled=labelled, teacher=teacher, tau_s=0.1, w_itc=1.0, w_dist=1.0)
    assert parts["itc"] == pytest.approx(clip_loss(f[labelled], g[labelled], 10.0).item())
    assert parts["dist"] == pytest.approx(distribution_kd_loss(f @ g.T, teacher, 0.1).item())
    total.backward()
    assert f.grad[1].abs().sum() > 0  # album images learn from the teachers' distributions
    # No labelled pair at all: L_itc is skipped, the teacher term remains.
    total, parts = mcad_loss(f, g, 10.0, labelled=labelled & False, teacher=teacher, tau_s=0.1, w_dist=1.0)
    assert set(parts) == {"dist", "loss"}


def test_hard_candidate_kd_hand_case():
    # 3 images x 2 captions; caption 0's candidates: images 0 and 1 (its twin); caption 1's: image 1 only
    # (skipped); image rows: row 0 {c0}, row 1 {c0, c1}, row 2 none -> only row 1 counts.
    teacher = torch.tensor([[3.0, 0.0], [1.0, 2.0], [5.0, 5.0]])
    cand = torch.tensor([[True, False], [True, True], [False, False]])
    sim = torch.zeros(3, 2)
    col0 = kl((sigmoid(2), sigmoid(-2)), (0.5, 0.5))  # teacher (3, 1) among images 0, 1
    row1 = kl((sigmoid(-1), sigmoid(1)), (0.5, 0.5))  # teacher (1, 2) among captions 0, 1
    got = hard_candidate_kd_loss(sim, teacher, cand, 1.0)
    assert got.item() == pytest.approx(0.5 * (col0 + row1), rel=1e-6)
    # the easy negative (image 2, teacher logit 5) is outside every candidate set: it changes nothing
    teacher[2] = -9.0
    assert hard_candidate_kd_loss(sim, teacher, cand, 1.0).item() == pytest.approx(got.item())
    assert hard_candidate_kd_loss(sim, teacher, cand & False, 1.0).item() == 0.0
