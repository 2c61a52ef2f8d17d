"""What the from-scratch towers (``model``) and the pretrained ones (``pretrained``) share, written
for TFLite export and full-int8 quantization: one definition, so both keep the same contracts."""

from __future__ import annotations

import torch
from torch import nn

from mcad_core.errors import McadError

# Padding bias: large enough that exp() underflows to 0 against real scores, small
# enough that int8 calibration of the score tensor is not ruined by a huge range.
PAD_BIAS = -30.0


def padding_bias(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-pad mask [B, T] (an equality mask, not one_hot) and the finite additive key bias
    [B, 1, 1, T] that hides pad tokens (id 0) from attention."""
    keep = (ids != 0).to(torch.float32)
    return keep, ((1.0 - keep) * PAD_BIAS)[:, None, None, :]


def l2norm(x: torch.Tensor) -> torch.Tensor:
    """Unit rows; rsqrt of a sum lowers to plain TFLite ops (F.normalize's clamp_min adds a max op)."""
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + 1e-12)


class Attention(nn.Module):
    """Explicit multi-head self-attention with an additive (finite) key bias."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise McadError(f"student text tower: width {width} is not divisible by heads {heads}")
        self.heads, self.head_dim = heads, width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = (q * self.head_dim**-0.5) @ k.transpose(-1, -2) + key_bias
        y = torch.softmax(scores, dim=-1) @ v
        return self.out(y.transpose(1, 2).reshape(b, t, w))
