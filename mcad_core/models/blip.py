"""The real-mode single-stream teacher (DESIGN §3): BLIP's image-text matching model.

``BlipForImageTextRetrieval`` on its ITM path: the caption's text encoder cross-attends to the
vision transformer's states; the multimodal [CLS] state is the fused vector ``h`` and the ITM
head's logit(match) − logit(no match) is the match logit ``m``. The vision states depend on
the image alone, so ``encode_images`` computes them once and ``score`` reuses them for every
caption the cache stage pairs with that image.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcad_core.errors import McadError

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

# BLIP's own caption length limit (its retrieval configs truncate at 35 tokens).
MAX_CAPTION_TOKENS = 35
_PROBE = "a red circle left of a blue square"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _check_tokenizer(tokenizer: Any, vocab_size: int, source: str) -> None:
    """Refuse a tokenizer that silently maps words to [UNK] (transformers' offline fallback) or overflows the model."""
    ids = tokenizer(_PROBE, add_special_tokens=False)["input_ids"]
    if len(tokenizer) <= 2 or not ids or all(i == tokenizer.unk_token_id for i in ids):
        raise McadError(f"{source}: BLIP tokenizer is broken (vocabulary of {len(tokenizer)}, '{_PROBE}' -> "
                        f"unknown tokens); the folder must hold its vocab.txt / tokenizer.json")
    if len(tokenizer) > vocab_size:
        raise McadError(f"{source}: tokenizer has {len(tokenizer)} tokens but the model embeds only {vocab_size}")


class BlipTeacher:
    """BLIP ITM behind the ``CrossEncoderTeacher`` protocol."""

    def __init__(self, model: Any, processor: Any, source: str, device: str = "cpu", batch_size: int | None = None) -> None:
        self.model = model.to(device).eval()
        self.processor = processor
        self.source = source
        self.device = device
        # Forward batch: on a GPU a batch of 32 leaves it idle between Python-side steps.
        self.batch_size = batch_size or (256 if str(device).startswith("cuda") else 32)
        self.fused_dim = int(model.config.text_config.hidden_size)

    def encode_images(self, images: list[Image]) -> torch.Tensor:
        """Vision transformer states [B, tokens, vision_dim] (what the text encoder cross-attends to)."""
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                # on a GPU the processor resizes there: on the CPU it costs ~45 ms per photo (measured)
                on_gpu = {"device": self.device} if str(self.device).startswith("cuda") else {}
                pixels = self.processor.image_processor(images[i : i + self.batch_size], return_tensors="pt", **on_gpu)
                states = self.model.vision_model(pixel_values=pixels["pixel_values"].to(self.device))
                out.append(states.last_hidden_state.cpu())
        if not out:
            raise McadError("BLIP encode_images: no images given")
        return torch.cat(out)

    def score(self, image_features: torch.Tensor, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """For pairs (image_features[i], captions[i]): fused [CLS] vectors h [B, fused_dim] and ITM logits m [B]."""
        import torch

        if len(image_features) != len(captions) or not captions:
            raise McadError(f"BLIP score: {len(image_features)} image features for {len(captions)} captions")
        hs, ms = [], []
        with torch.inference_mode():
            for i in range(0, len(captions), self.batch_size):
                text = self.processor.tokenizer(captions[i : i + self.batch_size], padding="longest", truncation=True,
                                                max_length=MAX_CAPTION_TOKENS, return_tensors="pt").to(self.device)
                states = image_features[i : i + self.batch_size].to(self.device)
                fused = self.model.text_encoder(
                    input_ids=text["input_ids"], attention_mask=text["attention_mask"],
                    encoder_hidden_states=states,
                    encoder_attention_mask=torch.ones(states.shape[:2], dtype=torch.long, device=self.device),
                ).last_hidden_state[:, 0, :]
                logits = self.model.itm_head(fused)
                hs.append(fused.float().cpu())
                ms.append((logits[:, 1] - logits[:, 0]).float().cpu())
        return torch.cat(hs), torch.cat(ms)

    def fingerprint(self) -> str:
        """sha256 over weights, source, image preprocessing and vocabulary."""
        import torch

        h = hashlib.sha256()
        h.update(json.dumps({"source": self.source, "image": self.processor.image_processor.to_dict(),
                             "vocab": sorted(self.processor.tokenizer.get_vocab().items()),
                             "max_tokens": MAX_CAPTION_TOKENS}, sort_keys=True, default=str).encode())
        for name, tensor in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            h.update(str(tensor.dtype).encode())
            h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()


def _looks_like_path(name: str) -> bool:
    """A hub id is 'name' or 'org/name'; anything else is meant as a folder."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def load_blip_teacher(name_or_folder: str, device: str = "cpu") -> BlipTeacher:
    """BLIP ITM model + processor from a local folder (``save_pretrained`` layout) or a hub model name.

    A folder is read with ``local_files_only``; a name goes through the hub cache (offline,
    only what is already cached there). Failures are one McadError line naming the source.
    """
    from transformers import BlipForImageTextRetrieval, BlipProcessor

    folder = Path(name_or_folder).expanduser()
    is_folder = folder.exists()
    if is_folder and not folder.is_dir():
        raise McadError(f"teachers.single.model: {folder} is a file, not a BLIP model folder")
    if not is_folder and _looks_like_path(name_or_folder):
        raise McadError(f"teachers.single.model: BLIP model folder not found: {name_or_folder}")
    source = str(folder) if is_folder else name_or_folder
    try:
        model = BlipForImageTextRetrieval.from_pretrained(source, local_files_only=is_folder)
        processor = BlipProcessor.from_pretrained(source, local_files_only=is_folder)
    except Exception as err:  # missing files, no hub access, bad config: one line for the user
        where = "folder" if is_folder else "hub model (not a local folder; offline only a cached one loads)"
        raise McadError(f"teachers.single.model: cannot load BLIP {where} '{name_or_folder}': {_first_line(err)}") \
            from None
    if not model.config.text_config.is_decoder:
        raise McadError(f"teachers.single.model: {source} has no cross-attention (text_config.is_decoder is false)")
    _check_tokenizer(processor.tokenizer, model.config.text_config.vocab_size, source)
    return BlipTeacher(model, processor, source, device)
