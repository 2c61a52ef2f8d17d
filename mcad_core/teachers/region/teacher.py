"""``RegionCrossEncoder``: the embedded cross-encoder teacher behind ``CrossEncoderTeacher``.

Saved as a folder (safetensors weights + config JSON + vocabulary) so the cache stage
can load it without the training code, and fingerprinted over all three.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch

from mcad_core.errors import McadError
from mcad_core.teachers.region.model import CrossEncoder
from mcad_core.teachers.region.objects import AttributeClassifier, Preprocessing, object_slots, scene_arrays
from mcad_core.teachers.region.tokenizer import WordTokenizer

WEIGHTS, CONFIG, VOCAB = "model.safetensors", "config.json", "vocab.json"
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def load_model_config(name_or_path: str | Path) -> dict:
    """A region model config by name (``region-tiny``, shipped in mcad_core) or JSON path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise McadError(f"{path}: region teacher config not found")
    return json.loads(path.read_text())


class RegionCrossEncoder:
    """Segmentation + attribute classifier + fusion transformer; see ``model.CrossEncoder``."""

    def __init__(self, cfg: dict, tokenizer: WordTokenizer, device: str = "cpu") -> None:
        self.cfg = cfg
        self.pre = Preprocessing(**cfg["preprocessing"])
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        cls_cfg = cfg["classifier"]
        self.classifier = AttributeClassifier(self.pre.crop, tuple(cls_cfg["channels"]), cls_cfg["hidden"]).to(self.device)
        self.encoder = CrossEncoder(cfg["encoder"], tokenizer).to(self.device)
        self.fused_dim = self.encoder.fused_dim

    def encode_images(self, images: list) -> torch.Tensor:
        """Object slots [B, max_objects, SLOT_DIM] (valid flag, attribute probabilities, geometry)."""
        self.classifier.eval()
        return object_slots(self.classifier, scene_arrays(images, self.pre))

    def token_ids(self, captions: list[str]) -> torch.Tensor:
        return torch.tensor(self.tokenizer.encode(captions), dtype=torch.long, device=self.device)

    @torch.no_grad()
    def score(self, image_features: torch.Tensor, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused vectors h [B, fused_dim] and match logits m [B] for pairs (image_features[i], captions[i])."""
        if len(captions) != image_features.shape[0]:
            raise McadError(f"score: {image_features.shape[0]} images but {len(captions)} captions")
        self.encoder.eval()
        out = self.encoder(image_features.to(self.device), self.token_ids(captions))
        return out["h"], out["m"]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**{f"classifier.{k}": v for k, v in self.classifier.state_dict().items()},
                **{f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.classifier.load_state_dict({k[11:]: v for k, v in state.items() if k.startswith("classifier.")})
        self.encoder.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("encoder.")})

    def fingerprint(self) -> str:
        """sha256 of weights, vocabulary and config (preprocessing included)."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        digest.update(self.tokenizer.to_json().encode())
        digest.update(json.dumps(self.cfg, sort_keys=True).encode())
        return digest.hexdigest()

    def save(self, folder: str | Path) -> None:
        """Write weights, config and vocabulary into ``folder`` (the caller makes it atomic)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(folder / WEIGHTS))
        (folder / CONFIG).write_text(json.dumps(self.cfg, indent=2) + "\n")
        self.tokenizer.save(folder / VOCAB)

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> RegionCrossEncoder:
        """A saved teacher; a missing folder or file is a one-line McadError naming it."""
        from safetensors.torch import load_file

        folder = Path(folder)
        for name in (CONFIG, VOCAB, WEIGHTS):
            if not (folder / name).is_file():
                what = "folder not found" if not folder.is_dir() else f"{name} missing"
                raise McadError(f"{folder}: region teacher {what} (run the teachers stage first)")
        teacher = cls(json.loads((folder / CONFIG).read_text()), WordTokenizer.load(folder / VOCAB), device)
        teacher.load_state_dict(load_file(str(folder / WEIGHTS)))
        return teacher


def default_config(model_cfg: dict) -> dict:
    """The saved config: the model config with every preprocessing setting spelled out (they enter the fingerprint)."""
    return {**model_cfg, "preprocessing": dataclasses.asdict(Preprocessing(**model_cfg.get("preprocessing", {})))}
