"""Pipeline parameters: declared once here, validated once at load.

``params.yaml`` is grouped by stage, as DVC's example projects are. Every stage
loads it through :func:`load_params`, so an unknown key, a wrong type or a
non-positive size fails the same way everywhere: one line naming the key.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, model_validator

from mcad_core.errors import McadError

Variant = Literal["contrastive", "dual_kd", "mcad", "mcad_dist", "mcad_feat"]
ExportFormat = Literal["fp32", "dynamic_int8", "full_int8"]


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


class SyntheticParams(_Group):
    n_train: PositiveInt = 10000
    n_val: PositiveInt = 1000
    n_test: PositiveInt = 1000
    n_teacher: PositiveInt = 10000     # the teachers' own corpus (another random stream)
    n_teacher_val: PositiveInt = 1000
    image_size: int = Field(64, ge=32)
    captions_per_image: PositiveInt = 5
    max_objects: int = Field(3, ge=1, le=3)
    partial_captions: float = Field(0.0, ge=0, le=1)  # captions describing part of a scene (multi-match evaluation)


class KarpathyParams(_Group):
    annotations: str | None = None
    image_root: str | None = None
    skip_bad_images: bool = False


class UserSplitParams(_Group):
    uncaptioned_frac: float = Field(0.5, ge=0, lt=1)
    pool_captions: int = Field(1, ge=0)
    mismatched_frac: float = Field(0.0, ge=0, le=1)


class DataParams(_Group):
    source: Literal["synthetic", "karpathy"] = "synthetic"
    seed: int = 0
    user_split: UserSplitParams = UserSplitParams()
    synthetic: SyntheticParams = SyntheticParams()
    karpathy: KarpathyParams = KarpathyParams()


class DualTeacherParams(_Group):
    model: str = "mcad-dual-tiny"
    pretrained: str | None = None
    preprocess_tag: str | None = None  # the open_clip tag a local checkpoint came from (its preprocessing)
    epochs: int = Field(5, ge=0)
    batch_size: PositiveInt = 128
    lr: PositiveFloat = 2e-3


class SingleTeacherParams(_Group):
    model: str = "region"
    pretrained: str | None = None
    itm_token: Literal["enc", "cls"] = "enc"  # BLIP: [ENC] at position 0 as its authors ran ITM, or HF's [CLS]
    epochs: int = Field(1, ge=0)
    batch_size: PositiveInt = 128
    lr: PositiveFloat = 1e-3


class TeachersParams(_Group):
    dual: DualTeacherParams = DualTeacherParams()
    single: SingleTeacherParams = SingleTeacherParams()
    rerank_k: PositiveInt = 16


class CacheParams(_Group):
    batch_size: PositiveInt = 256
    hard_k: PositiveInt = 4
    text_k: PositiveInt = 8
    chunk_images: PositiveInt = 256


class FuseParams(_Group):
    lambda_: float = Field(0.3, ge=0, alias="lambda")
    alpha: float = Field(1.0, ge=0)
    tau_m: PositiveFloat = 1.0
    shift: Literal["centred", "below_positive"] = "below_positive"
    projection: Literal["ranking", "pca"] = "ranking"
    fit_batch: PositiveInt = 1024  # photos and texts drawn per step of P's fit: its memory, whatever N


class DistillParams(_Group):
    variants: list[Variant] = ["contrastive", "dual_kd", "mcad"]
    seed: int = 0
    student: str = "mcad-student-tiny"
    epochs: PositiveInt = 12
    batch_size: PositiveInt = 256
    lr: PositiveFloat = 2e-3
    tau_t: PositiveFloat = 0.1
    tau_s: PositiveFloat = 0.1
    w_itc: float = Field(1.0, ge=0)
    w_dist: float = Field(1.0, ge=0)
    w_feat: float = Field(0.0, ge=0)
    w_hard: float = Field(3.0, ge=0)
    hard_batch_frac: float = Field(1.0, ge=0, le=1)
    images: Literal["memory", "stream"] = "memory"
    # Each variant at its own val-chosen setting (reports/tuning.md): {variant: {key: value}} over the keys above.
    per_variant: dict[Variant, dict[str, float | int | str | bool]] = {"mcad": {"w_hard": 1.0}}

    @model_validator(mode="after")
    def _overrides_are_valid(self) -> DistillParams:
        for variant in self.per_variant:
            self.for_variant(variant)
        return self

    def for_variant(self, variant: str) -> DistillParams:
        """The settings ``variant`` trains with: the shared ones, then its ``per_variant`` overrides."""
        over = self.per_variant.get(variant, {})
        if {"variants", "per_variant"} & over.keys():
            raise ValueError(f"per_variant.{variant}: variants and per_variant cannot be overridden")
        try:
            return DistillParams.model_validate({**self.model_dump(exclude={"per_variant"}), **over, "per_variant": {}})
        except ValidationError as err:
            raise ValueError(f"per_variant.{variant}: {_first_error(err)}") from None


class ExportParams(_Group):
    formats: list[ExportFormat] = ["fp32", "dynamic_int8", "full_int8"]
    calib_samples: PositiveInt = 200
    variant: Variant = "mcad"


class BenchParams(_Group):
    threads: list[PositiveInt] = [1, 2]
    runs: PositiveInt = 50
    warmup: int = Field(5, ge=0)
    gallery_sizes: list[PositiveInt] = [1000, 10000, 100000]
    topk: PositiveInt = 10
    recall_queries: int = Field(1000, ge=0)  # random queries for the search's recall@k (0: skip)


class Params(_Group):
    seed: int = 0
    device: Literal["cpu", "cuda"] = "cpu"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    workers: int = Field(0, ge=0)
    data: DataParams = DataParams()
    teachers: TeachersParams = TeachersParams()
    cache: CacheParams = CacheParams()
    fuse: FuseParams = FuseParams()
    distill: DistillParams = DistillParams()
    export: ExportParams = ExportParams()
    bench: BenchParams = BenchParams()


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "<top level>"
    if first["type"] == "extra_forbidden":
        return f"unknown key '{key}'"
    got = first.get("input")
    shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
    return f"'{key}': {first['msg'].lower()} (got {shown})"


def parse_params(raw: object, source: str = "params.yaml") -> Params:
    """Validate an already-loaded mapping; errors name ``source`` and the key."""
    if not isinstance(raw, dict):
        raise McadError(f"{source}: expected a mapping of param groups, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise McadError(f"{source}: {_first_error(err)}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml`` (or another file with the same keys)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise McadError(f"{path}: params file not found") from None
    except yaml.YAMLError as err:
        raise McadError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    return parse_params(raw if raw is not None else {}, str(path))


def with_overrides(params: Params, overrides: Sequence[str]) -> Params:
    """``params`` with ``group.key=value`` overrides applied, as ``dvc exp run -S`` takes them
    (values parsed as YAML), validated like the file itself."""
    raw = params.model_dump(by_alias=True)
    for item in overrides:
        dotted, sep, value = item.partition("=")
        keys = dotted.split(".")
        if not sep or not all(keys):
            raise McadError(f"override '{item}': expected group.key=value")
        node = raw
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise McadError(f"override '{item}': '{key}' is not a group")
        node[keys[-1]] = yaml.safe_load(value)
    return parse_params(raw, "override")
