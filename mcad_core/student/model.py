"""The phone-sized student: a depthwise-separable CNN image tower and a small text transformer.

Both towers are written for clean TFLite export and full-int8 quantization:
- image: float [B, 3, H, W] in [0, 1], normalised inside the tower; Conv-BN-ReLU6
  blocks whose BatchNorm is folded into the convolutions before export
  (:func:`fold_batchnorm`); global average pool; linear projection.
- text: int32 ids [B, context_length], pad id 0; explicit attention with a FINITE
  additive padding bias (a ``-inf`` mask crashes the full-int8 interpreter, and
  ``nn.MultiheadAttention``'s fast path and ``F.one_hot`` do not lower);
  pooling is the mean over non-pad tokens.
Both outputs are L2-normalised inside the model, so the exported files emit
ready-to-compare embeddings.

Towers from pretrained parts (``image.backbone: efficientnet_lite0``, ``text.backbone:
bert`` with ``pretrained``: ``"package"`` or a local path) keep the same contracts; they
live in :mod:`mcad_core.student.pretrained`, and :func:`student_tokenizer` gives each text
tower its tokenizer (word-level, trained on the captions, or the pretrained WordPiece one).

The student folder format (``save_student`` / ``load_student``) is defined here
and nowhere else: ``student.safetensors`` + ``config.json`` + ``tokenizer.json``.
A folder is self-contained: loading it never reads the pretrained packages.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from mcad_core.errors import McadError
from mcad_core.io import atomic_path
from mcad_core.student.config import ImageTowerConfig, StudentConfig, TextTowerConfig, load_config
from mcad_core.student.layers import Attention, l2norm, padding_bias
from mcad_core.student.tokenizer import StudentTokenizer

if TYPE_CHECKING:
    from mcad_core.data.images import MemoryImages, StreamedImages

WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE = "student.safetensors", "config.json", "tokenizer.json"


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) + BatchNorm + ReLU6; folded to Conv2d(+bias) + ReLU6 for export."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU6(inplace=True),
        )


class DepthwiseSeparable(nn.Module):
    """MobileNet block: 3x3 depthwise + 1x1 pointwise; residual when the shape is kept."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.dw = ConvBNAct(c_in, c_in, 3, stride, groups=c_in)
        self.pw = ConvBNAct(c_in, c_out, 1, 1)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.dw(x))
        return x + y if self.residual else y


class ImageTower(nn.Module):
    """float [B, 3, H, W] in [0, 1] -> unit embedding [B, embed_dim]."""

    def __init__(self, cfg: ImageTowerConfig, embed_dim: int) -> None:
        super().__init__()
        self.image_size = cfg.image_size
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("inv_std", 1.0 / torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)
        layers: list[nn.Module] = [ConvBNAct(3, cfg.stem_width, 3, 2)]
        width = cfg.stem_width
        for c_out, stride in cfg.blocks:
            layers.append(DepthwiseSeparable(width, c_out, stride))
            width = c_out
        self.features = nn.Sequential(*layers)
        self.proj = nn.Linear(width, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features((x - self.mean) * self.inv_std)
        return l2norm(self.proj(x.mean(dim=(2, 3))))


class Block(nn.Module):
    """Pre-LN transformer block."""

    def __init__(self, width: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, width * mlp_ratio), nn.GELU(approximate="tanh"),
                                 nn.Linear(width * mlp_ratio, width))

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), key_bias)
        return x + self.mlp(self.ln2(x))


class TextTower(nn.Module):
    """int32 ids [B, context_length] (pad 0) -> unit embedding [B, embed_dim]; mean over non-pad tokens."""

    def __init__(self, cfg: TextTowerConfig, vocab_size: int, embed_dim: int) -> None:
        super().__init__()
        self.context_length = cfg.context_length
        self.token_embedding = nn.Embedding(vocab_size, cfg.width)
        # CLIP's init: at PyTorch's default std 1.0 the token vectors drown the 0.01 positional
        # signal and the tower trains as a bag of words, blind to word order (twin_acc at chance).
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.positional_embedding = nn.Parameter(torch.randn(cfg.context_length, cfg.width) * 0.01)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.layers))
        self.ln_final = nn.LayerNorm(cfg.width)
        self.proj = nn.Linear(cfg.width, embed_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        keep, key_bias = padding_bias(ids)
        x = self.token_embedding(ids) + self.positional_embedding
        for block in self.blocks:
            x = block(x, key_bias)
        x = self.ln_final(x)
        pooled = (x * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp_min(1.0)
        return l2norm(self.proj(pooled))


class StudentModel(nn.Module):
    """CLIP-style dual encoder: ``logits = exp(logit_scale) * image_emb @ text_emb.T``."""

    def __init__(self, cfg: StudentConfig, vocab_size: int) -> None:
        super().__init__()
        self.config = cfg.model_copy(update={"vocab_size": vocab_size})
        self.image_tower: nn.Module
        self.text_tower: nn.Module
        if cfg.image.backbone == "mcad_cnn":
            self.image_tower = ImageTower(cfg.image, cfg.embed_dim)
        else:
            from mcad_core.student.pretrained import EfficientNetLite0Tower

            self.image_tower = EfficientNetLite0Tower(cfg.image, cfg.embed_dim)
        if cfg.text.backbone == "mcad_transformer":
            self.text_tower = TextTower(cfg.text, vocab_size, cfg.embed_dim)
        else:
            from mcad_core.student.pretrained import BertTextTower

            self.text_tower = BertTextTower(cfg.text, vocab_size, cfg.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(cfg.logit_scale_init))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.image_tower(x)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text_tower(ids)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.encode_image(x), self.encode_text(ids), self.logit_scale.exp()


def build_student(name_or_config_path: str | Path, vocab_size: int, pretrained: bool = True) -> StudentModel:
    """Build a student from its JSON config: random init, then the pretrained towers' weights
    (``image.pretrained`` / ``text.pretrained``) unless ``pretrained`` is False (a saved folder
    brings its own). Projections and the logit scale always start fresh."""
    cfg = load_config(name_or_config_path)
    if vocab_size < 2:
        raise McadError(f"student: vocab_size must be >= 2 (got {vocab_size})")
    if cfg.vocab_size is not None and cfg.vocab_size != vocab_size:
        raise McadError(f"{name_or_config_path}: config vocab_size {cfg.vocab_size} != tokenizer's {vocab_size}")
    model = StudentModel(cfg, vocab_size)
    if pretrained and cfg.image.pretrained is not None:
        from mcad_core.student.pretrained import load_image_weights

        load_image_weights(model.image_tower, cfg.image.pretrained)
    if pretrained and cfg.text.pretrained is not None:
        from mcad_core.student.pretrained import load_text_weights

        load_text_weights(model.text_tower, cfg.text)
    return model


def student_tokenizer(config: StudentConfig, captions: list[str]) -> StudentTokenizer:
    """The tokenizer a text tower reads: for ``mcad_transformer`` a word-level vocabulary built from
    the training ``captions``; for ``bert`` the pretrained WordPiece ``tokenizer.json`` (captions
    unused), padded / truncated to ``text.context_length``."""
    if config.text.backbone == "mcad_transformer":
        return StudentTokenizer.train(captions, context_length=config.text.context_length)
    from mcad_core.student.pretrained import pretrained_tokenizer

    return pretrained_tokenizer(config.text)


def params_m(module: nn.Module) -> float:
    """Parameter count in millions (what ``reports/results.json`` reports as ``params_m``)."""
    return sum(p.numel() for p in module.parameters()) / 1e6


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy with every Conv-BN folded into one biased Conv (what ships): each
    Conv2d directly followed by a BatchNorm2d in a Sequential (ConvBNAct, SameConvBNAct)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()
    for block in model.modules():
        if not isinstance(block, nn.Sequential):
            continue
        for i in range(len(block) - 1):
            if isinstance(block[i], nn.Conv2d) and isinstance(block[i + 1], nn.BatchNorm2d):
                block[i] = fuse_conv_bn_eval(block[i], block[i + 1])
                block[i + 1] = nn.Identity()
    return model


def save_student(model: StudentModel, tokenizer: StudentTokenizer, folder: str | Path) -> None:
    """Write the student folder atomically: weights, config (with vocab_size), tokenizer."""
    from safetensors.torch import save_file

    if tokenizer.vocab_size != model.config.vocab_size:
        raise McadError(f"save_student: tokenizer vocab {tokenizer.vocab_size} != model vocab {model.config.vocab_size}")
    if tokenizer.context_length != model.text_tower.context_length:
        raise McadError(f"save_student: tokenizer context {tokenizer.context_length} != "
                        f"model context {model.text_tower.context_length}")
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE))
        (tmp / CONFIG_FILE).write_text(model.config.to_json() + "\n")
        tokenizer.save(tmp / TOKENIZER_FILE)


def load_student(folder: str | Path) -> tuple[StudentModel, StudentTokenizer]:
    """Read a student folder written by :func:`save_student`; the model comes back in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    missing = [f for f in (WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE) if not (folder / f).is_file()]
    if missing:
        raise McadError(f"{folder}: not a student folder (missing {', '.join(missing)})")
    cfg = load_config(folder / CONFIG_FILE)
    tokenizer = StudentTokenizer.load(folder / TOKENIZER_FILE)
    model = build_student(folder / CONFIG_FILE, tokenizer.vocab_size, pretrained=False)
    try:
        state = load_file(str(folder / WEIGHTS_FILE))
    except SafetensorError as err:
        raise McadError(f"{folder / WEIGHTS_FILE}: unreadable weights ({err})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:200]
        raise McadError(f"{folder / WEIGHTS_FILE}: weights do not match config {cfg.name} ({detail})") from None
    return model.eval(), tokenizer


def encode_images_torch(model: StudentModel, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Unit image embeddings in eval mode, batched (the PyTorch reference for export parity)."""
    with torch.inference_mode():
        return torch.cat([model.encode_image(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def encode_texts_torch(model: StudentModel, ids: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Unit text embeddings from int32 ids, batched."""
    with torch.inference_mode():
        return torch.cat([model.encode_text(ids[i:i + batch_size]) for i in range(0, len(ids), batch_size)])


def encode_all(model: nn.Module, images: MemoryImages | StreamedImages, token_ids: torch.Tensor,
               device: str = "cpu", batch_size: int = 256, precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """Student embeddings of a whole split, images and captions ``batch_size`` at a time, in eval mode."""
    from mcad_core.data.images import in_order
    from mcad_core.precision import autocast

    was_training = model.training
    model.eval()
    with torch.inference_mode(), autocast(device, precision):
        f = torch.cat([model.encode_image(x.to(device).float() / 255).float()
                       for x in images.batches(in_order(len(images), batch_size))])
        g = encode_texts_torch(model, token_ids.to(device), batch_size).float()
    model.train(was_training)
    return f, g
