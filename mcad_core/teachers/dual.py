"""The dual-stream teacher (docs/DESIGN.md §3): an open_clip model behind the ``DualTeacher`` protocol.

Real mode loads a named open_clip model with a pretrained tag or a local checkpoint; embedded
mode builds a small config shipped in ``configs/`` (trained by :mod:`mcad_core.teachers.dual_train`).
Saved with its preprocessing, so every later stage rebuilds exactly the teacher that was trained.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcad_core.errors import McadError
from mcad_core.io import atomic_path

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

CONFIG_DIR = Path(__file__).parent / "configs"
CHECKPOINT_FILE, META_FILE = "open_clip_model.pt", "teacher.json"
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def open_clip_with_configs() -> Any:
    """open_clip with the project's configs registered (importing it costs seconds, so only here)."""
    import open_clip

    if str(CONFIG_DIR) not in map(str, open_clip.factory._MODEL_CONFIG_PATHS):
        open_clip.add_model_config(CONFIG_DIR)
    return open_clip


class OpenClipTeacher:
    """An open_clip model with its own preprocessing and tokenizer; outputs are unit-norm."""

    def __init__(self, model: Any, model_name: str, device: str = "cpu", batch_size: int = 256) -> None:
        import torch
        from torchvision.transforms import Normalize, ToTensor

        open_clip = open_clip_with_configs()
        # channels_last: oneDNN's native layout; the CNN towers train ~20 % faster on CPU with it.
        self.model = model.to(device, memory_format=torch.channels_last)
        self.model_name = model_name
        self.device = device
        self.batch_size = batch_size
        self.preprocess_cfg = dict(model.visual.preprocess_cfg)
        # Not in the weights or in preprocess_cfg, yet it changes every output: saved and fingerprinted.
        self.quick_gelu = any(isinstance(m, open_clip.transformer.QuickGELU) for m in model.modules())
        self.preprocess = open_clip.transform.image_transform_v2(
            open_clip.transform.PreprocessCfg(**self.preprocess_cfg), is_train=False)
        *self._pil_steps, to_tensor, self._normalize = self.preprocess.transforms
        if not (isinstance(to_tensor, ToTensor) and isinstance(self._normalize, Normalize)):
            raise McadError(f"teachers.dual.model: {model_name}'s preprocessing does not end in ToTensor, "
                            f"Normalize ({self.preprocess})")
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.embed_dim = int(open_clip.get_model_config(model_name)["embed_dim"])

    def image_pixels(self, images: list[Image]) -> torch.Tensor:
        """Preprocessed uint8 pixels [B, 3, H, W]: the transform's PIL steps, before ToTensor/Normalize.

        open_clip resizes and crops the PIL image, then divides its bytes by 255, so keeping the
        bytes loses nothing, takes a quarter of the memory (a whole split fits in RAM for
        training) and avoids per-image tensor ops, which are slow with several threads.
        """
        import numpy as np
        import torch

        arrays = []
        for img in images:
            for step in self._pil_steps:
                img = step(img)
            arrays.append(np.asarray(img, dtype=np.uint8))
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

    def pixels_of(self, image: Image) -> Any:
        """One image's preprocessed uint8 pixels [3, H, W] as numpy: the transform a DataLoader
        worker runs, so the PIL steps leave the process that drives the model."""
        return self.image_pixels([image])[0].numpy()

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 pixels -> the model's normalised float input (the transform's last step)."""
        import torch

        x = self._normalize(pixels.to(self.device).float() / 255)
        return x.contiguous(memory_format=torch.channels_last)

    def tokenize(self, captions: list[str]) -> torch.Tensor:
        """Token ids [B, context_length] from the model's own open_clip tokenizer."""
        return self.tokenizer(captions)

    def encode_images(self, images: list[Image]) -> torch.Tensor:
        """Unit-norm image embeddings [B, embed_dim], in batches of ``batch_size``."""
        chunks = range(0, len(images), self.batch_size)
        return self._encode((self.image_pixels(images[i : i + self.batch_size]) for i in chunks), self.encode_pixels)

    def encode_texts(self, captions: list[str]) -> torch.Tensor:
        """Unit-norm caption embeddings [B, embed_dim], in batches of ``batch_size``."""
        chunks = range(0, len(captions), self.batch_size)
        return self._encode((self.tokenize(captions[i : i + self.batch_size]) for i in chunks), self.encode_tokens)

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings of preprocessed uint8 pixels (gradients flow: used in training)."""
        return self.model.encode_image(self.normalize(pixels), normalize=True)

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings of preprocessed uint8 pixels, in eval mode, without gradients
        (pixels prepared by ``image_pixels`` in DataLoader workers)."""
        return self._encode([pixels], self.encode_pixels)

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings of token ids (gradients flow: used in training)."""
        return self.model.encode_text(tokens.to(self.device), normalize=True)

    def _encode(self, batches: Iterable[torch.Tensor], fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Embed batch by batch without gradients, leaving the train/eval mode as it was."""
        import torch

        was_training = self.model.training
        self.model.eval()
        with torch.inference_mode():
            out = [fn(b).float().cpu() for b in batches]
        self.model.train(was_training)
        return torch.cat(out) if out else torch.empty(0, self.embed_dim)

    def fingerprint(self) -> str:
        """sha256 over weights, model name, preprocessing and tokenizer: a cache of other weights is refused."""
        import torch

        h = hashlib.sha256()
        h.update(json.dumps({"model": self.model_name, "preprocess": self.preprocess_cfg,
                             "quick_gelu": self.quick_gelu, "tokenizer": type(self.tokenizer).__name__,
                             "context_length": self.tokenizer.context_length}, sort_keys=True).encode())
        for name, tensor in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            h.update(str(tensor.dtype).encode())
            h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()


def _resolve_pretrained(open_clip: Any, model: str, pretrained: str) -> str:
    """A known open_clip tag is passed through; anything else must be an existing checkpoint file."""
    if pretrained in open_clip.list_pretrained_tags_by_model(model):
        return pretrained
    if os.path.isfile(pretrained):
        return pretrained
    if os.sep in pretrained or "/" in pretrained or pretrained.endswith(_CHECKPOINT_SUFFIXES):
        raise McadError(f"teachers.dual.pretrained: checkpoint file not found: {pretrained}")
    tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
    raise McadError(f"teachers.dual.pretrained: '{pretrained}' is neither a checkpoint file nor an "
                    f"open_clip tag of {model} (tags: {tags})")


def _tag_config(open_clip: Any, model: str, tag: str, key: str) -> dict[str, Any]:
    """open_clip's record for ``tag`` of ``model``: the preprocessing and quick_gelu its weights were trained with."""
    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
        raise McadError(f"{key}: '{tag}' is not an open_clip tag of {model} (tags: {tags})")
    return cfg


def load_dual_teacher(model: str, pretrained: str | None, device: str = "cpu", seed: int = 0,
                      preprocess_tag: str | None = None, preprocess: dict[str, Any] | None = None,
                      quick_gelu: bool = False) -> OpenClipTeacher:
    """Build open_clip ``model`` (a built-in name or a config in ``configs/``) with weights from ``pretrained``.

    ``pretrained``: an open_clip tag, a local checkpoint file, or None for a random init
    (seeded, so the embedded pipeline is reproducible). open_clip applies a tag's mean/std,
    resize mode and interpolation only when ``pretrained`` is that tag, and never its
    quick_gelu, so: a tag brings its whole record; ``preprocess_tag`` names the tag a local
    checkpoint came from (param ``teachers.dual.preprocess_tag``) to get the same; ``preprocess``
    / ``quick_gelu`` restore what :func:`save_dual_teacher` recorded. Every failure is one
    McadError line.
    """
    import torch

    open_clip = open_clip_with_configs()
    if model not in open_clip.list_models():
        raise McadError(f"teachers.dual.model: unknown open_clip model '{model}' "
                        f"(neither built in nor in {CONFIG_DIR})")
    weights = None if pretrained is None else _resolve_pretrained(open_clip, model, pretrained)
    if preprocess_tag is not None:
        tag_cfg = _tag_config(open_clip, model, preprocess_tag, "teachers.dual.preprocess_tag")
    elif weights is not None and not os.path.isfile(weights):
        tag_cfg = _tag_config(open_clip, model, weights, "teachers.dual.pretrained")
    else:
        tag_cfg = {}
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = open_clip.create_model(model, pretrained=weights, device=device,
                                         force_quick_gelu=quick_gelu or bool(tag_cfg.get("quick_gelu")),
                                         force_preprocess_cfg=preprocess or tag_cfg)
    except Exception as err:  # download, format and shape errors all reach the user as one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise McadError(f"teachers.dual.pretrained: cannot load '{pretrained}' into {model}: {first}") from None
    return OpenClipTeacher(net, model, device)


def save_dual_teacher(teacher: OpenClipTeacher, folder: str | Path) -> None:
    """Write the teacher as an open_clip checkpoint + ``teacher.json`` (model name, preprocessing,
    quick_gelu, fingerprint), atomically: a checkpoint file alone would reload with open_clip's
    default preprocessing."""
    import torch

    with atomic_path(folder) as tmp:
        tmp.mkdir()
        state = {k: v.detach().cpu() for k, v in teacher.model.state_dict().items()}
        torch.save({"state_dict": state}, tmp / CHECKPOINT_FILE)
        (tmp / META_FILE).write_text(json.dumps(
            {"model": teacher.model_name, "checkpoint": CHECKPOINT_FILE, "preprocess": teacher.preprocess_cfg,
             "quick_gelu": teacher.quick_gelu, "fingerprint": teacher.fingerprint()}, indent=2) + "\n")


def load_saved_dual_teacher(folder: str | Path, device: str = "cpu") -> OpenClipTeacher:
    """Load a teacher written by :func:`save_dual_teacher` (the cache stage's entry point), with
    the preprocessing and quick_gelu it was saved with."""
    folder = Path(folder)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise McadError(f"{meta_path}: dual teacher metadata not found (run the teachers stage first)")
    try:
        meta = json.loads(meta_path.read_text())
        model, checkpoint = meta["model"], folder / meta["checkpoint"]
        preprocess, quick_gelu = meta["preprocess"], bool(meta["quick_gelu"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise McadError(f"{meta_path}: not a dual teacher description ({err!r}; re-run the teachers stage)") from None
    if not checkpoint.is_file():
        raise McadError(f"{checkpoint}: dual teacher checkpoint not found")
    teacher = load_dual_teacher(model, str(checkpoint), device, preprocess=preprocess, quick_gelu=quick_gelu)
    if json.dumps([teacher.preprocess_cfg, teacher.quick_gelu], sort_keys=True) != \
            json.dumps([preprocess, quick_gelu], sort_keys=True):
        raise McadError(f"{meta_path}: {model} rebuilt with preprocessing {teacher.preprocess_cfg} and quick_gelu "
                        f"{teacher.quick_gelu}, not the saved {preprocess}, {quick_gelu}")
    return teacher
