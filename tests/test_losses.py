"""MCAD loss terms against hand-computed 2x2 cases, and their defining properties."""

import math

import pytest
import torch
import torch.nn.functional as F

from mcad_core.errors import McadError
from mcad_core.mcad.losses import clip_loss, distribution_kd_loss, feature_loss, mcad_loss, teacher_logits


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
    want = 0.5**2 * 0.5 * (i2t + t2i)
    assert want == pytest.approx(0.0111296766)
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
    assert got.item() == pytest.approx(tau**2 * forward.item(), rel=1e-5)
    swapped = distribution_kd_loss(teacher * tau, sim / tau, tau)
    assert abs(swapped.item() - got.item()) > 1e-3
    # Student equal to the teacher at the same temperature: zero.
    assert distribution_kd_loss(sim, sim / tau, tau).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_temperature_factor_keeps_gradients_comparable():
    torch.manual_seed(1)
    target_sim = torch.rand(8, 8) * 2 - 1
    start = torch.rand(8, 8) * 2 - 1
    norms = {}
    for tau in (4.0, 8.0, 16.0):
        sim = start.clone().requires_grad_()
        distribution_kd_loss(sim, target_sim / tau, tau).backward()  # teacher at the same temperature
        norms[tau] = sim.grad.norm().item()
    # With τ² the gradient tends to a τ-free limit; without it, it would shrink 16-fold from 4 to 16.
    assert max(norms.values()) / min(norms.values()) < 1.3


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
    total, parts = mcad_loss(
        f, g, 20.0, teacher=teacher, tau_s=0.1, f_proj=f_proj, v_target=v, g_proj=g_proj, t_target=t,
        w_itc=1.0, w_dist=0.5, w_feat=2.0,
    )
    itc = clip_loss(f, g, 20.0).item()
    dist = distribution_kd_loss(f @ g.T, teacher, 0.1).item()
    feat = feature_loss(f_proj, v, g_proj, t).item()
    assert parts == pytest.approx({"itc": itc, "dist": dist, "feat": feat, "loss": itc + 0.5 * dist + 2 * feat})
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
