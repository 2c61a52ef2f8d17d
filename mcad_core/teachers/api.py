"""The two teacher interfaces every stage relies on, whatever model sits behind them.

Images enter as PIL images so that each teacher applies its own preprocessing
(open_clip transforms, BLIP's processor, the region teacher's segmentation).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image


class DualTeacher(Protocol):
    """Dual-stream (CLIP-style): image and text embedded separately, compared by cosine."""

    embed_dim: int

    def encode_images(self, images: list[Image]) -> torch.Tensor:
        """Unit-norm image embeddings, shape [B, embed_dim]."""
        ...

    def encode_texts(self, captions: list[str]) -> torch.Tensor:
        """Unit-norm caption embeddings, shape [B, embed_dim]."""
        ...

    def fingerprint(self) -> str:
        """Hash of weights + preprocessing: a cache built with other weights is refused."""
        ...


class CrossEncoderTeacher(Protocol):
    """Single-stream: image and caption fused (cross-attention) into one vector and a match logit."""

    fused_dim: int

    def encode_images(self, images: list[Image]) -> torch.Tensor:
        """Per-image features reusable for many captions (BLIP: vision states; region: object tokens)."""
        ...

    def score(self, image_features: torch.Tensor, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """For pairs (image_features[i], captions[i]): fused vectors h [B, fused_dim], match logits m [B]."""
        ...

    def fingerprint(self) -> str:
        """Hash of weights + preprocessing."""
        ...
