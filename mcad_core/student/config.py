"""A student's architecture as data: the JSON configs shipped in ``configs/`` and their validation.

Kept apart from the torch modules so the model, its pretrained towers and the export read one
definition, and reading a config never imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, ValidationInfo, field_validator

from mcad_core.errors import McadError

CONFIG_DIR = Path(__file__).parent / "configs"


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageTowerConfig(_Cfg):
    image_size: int = Field(64, ge=16)
    mean: Annotated[list[float], Field(min_length=3, max_length=3)] = [0.5, 0.5, 0.5]
    std: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=3, max_length=3)] = [0.25, 0.25, 0.25]
    stem_width: PositiveInt = 32
    blocks: list[tuple[PositiveInt, Annotated[int, Field(ge=1, le=2)]]] = [(64, 1), (128, 2), (256, 2)]
    # mcad_cnn: the from-scratch CNN above (stem_width, blocks); efficientnet_lite0: ImageNet
    # backbone (stem_width / blocks unused). pretrained: "package" | weights file | null (random).
    backbone: Literal["mcad_cnn", "efficientnet_lite0"] = "mcad_cnn"
    pretrained: str | None = None

    @field_validator("pretrained")
    @classmethod
    def _pretrained_needs_a_backbone(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("backbone") == "mcad_cnn":
            raise ValueError("the mcad_cnn backbone has no pretrained weights (set backbone: efficientnet_lite0)")
        return value


class TextTowerConfig(_Cfg):
    context_length: int = Field(32, ge=2)
    width: PositiveInt = 192
    layers: PositiveInt = 4
    heads: PositiveInt = 4
    mlp_ratio: PositiveInt = 4
    # mcad_transformer: the from-scratch pre-LN transformer with a word-level vocabulary trained on
    # the captions; bert: a post-LN BERT encoder (e.g. all-MiniLM-L6-v2) with its own WordPiece
    # tokenizer, so pretrained ("package" | Hugging Face folder) is required.
    backbone: Literal["mcad_transformer", "bert"] = "mcad_transformer"
    pretrained: str | None = Field(None, validate_default=True)

    @field_validator("pretrained")
    @classmethod
    def _pretrained_fits_backbone(cls, value: str | None, info: ValidationInfo) -> str | None:
        backbone = info.data.get("backbone")
        if value is not None and backbone == "mcad_transformer":
            raise ValueError("the mcad_transformer backbone has no pretrained weights (set backbone: bert)")
        if value is None and backbone == "bert":
            raise ValueError("the bert backbone needs pretrained weights and tokenizer ('package' or a folder)")
        return value


# Keys added for pretrained towers: left out of a saved config.json when at their defaults, so
# the from-scratch students' folders stay byte-identical to those written before they existed.
_TOWER_KEYS = ("backbone", "pretrained")


class StudentConfig(_Cfg):
    name: str
    embed_dim: PositiveInt = 256
    logit_scale_init: float = 2.6593  # ln(1 / 0.07), as CLIP
    image: ImageTowerConfig = ImageTowerConfig()
    text: TextTowerConfig = TextTowerConfig()
    vocab_size: PositiveInt | None = None  # filled in when saved with a trained student

    def to_json(self) -> str:
        """The config.json of a student folder."""
        exclude = {}
        for tower in ("image", "text"):
            cfg = getattr(self, tower)
            at_default = {k for k in _TOWER_KEYS if getattr(cfg, k) == type(cfg).model_fields[k].default}
            if at_default:
                exclude[tower] = at_default
        return self.model_dump_json(indent=2, exclude=exclude)


def load_config(name_or_config_path: str | Path) -> StudentConfig:
    """A shipped config by name (``mcad-student-tiny``) or a JSON file path."""
    path = Path(name_or_config_path)
    if path.suffix != ".json":
        path = CONFIG_DIR / f"{name_or_config_path}.json"
        if not path.is_file():
            shipped = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
            raise McadError(f"student config '{name_or_config_path}' not found (shipped: {', '.join(shipped)})")
    elif not path.is_file():
        raise McadError(f"{path}: student config not found")
    try:
        return StudentConfig.model_validate(json.loads(path.read_text()))
    except json.JSONDecodeError as err:
        raise McadError(f"{path}: not valid JSON ({err.msg})") from None
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise McadError(f"{path}: '{key}': {first['msg'].lower()}") from None
