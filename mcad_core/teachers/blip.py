"""The real-mode single-stream teacher (docs/DESIGN.md §3): BLIP's image-text matching model.

``BlipForImageTextRetrieval`` on its ITM path: the caption's text encoder cross-attends to the
vision transformer's states; the multimodal [CLS] state is the fused vector ``h`` and the ITM
head's logit(match) − logit(no match) is the match logit ``m``. The vision states depend on
the image alone, so ``encode_images`` computes them once and ``score`` reuses them for every
caption the cache stage pairs with that image; they stay on the model's device.

Scored as the BLIP authors ran ITM (salesforce/BLIP ``blip_retrieval.py``, ``train_retrieval.py``),
not as HF's ``BlipForImageTextRetrieval`` does: captions cleaned by ``pre_caption``, ``[ENC]``
in place of ``[CLS]`` at position 0 (``itm_token="cls"`` keeps HF's way, for comparison), and
the ITM head in fp32 under autocast (bf16 rounds a logit near 8 by up to 0.06).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcad_core.errors import McadError

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

# BLIP's own caption length limit (its retrieval configs truncate at 35 tokens).
MAX_CAPTION_TOKENS = 35
MAX_CAPTION_WORDS = 30  # BLIP's retrieval datasets' pre_caption(max_words=30)
ITM_TOKENS = ("enc", "cls")
ENC_TOKEN = "[ENC]"
_PROBE = "a red circle left of a blue square"
BLIP_FILE = "blip.json"


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


def pre_caption(caption: str, max_words: int = MAX_CAPTION_WORDS) -> str:
    """BLIP's own caption cleaning (salesforce/BLIP ``data/utils.py``), used in its training and
    evaluation: lowercase, .!"()*#:;~ to spaces, runs of spaces collapsed, at most ``max_words``
    words; Flickr's trailing " ." would otherwise be a token BLIP never saw."""
    caption = re.sub(r"([.!\"()*#:;~])", " ", caption.lower())
    caption = re.sub(r"\s{2,}", " ", caption).rstrip("\n").strip(" ")
    return " ".join(caption.split(" ")[:max_words])


def _itm_token_id(tokenizer: Any, itm_token: str, source: str) -> int | None:
    """The id BLIP puts at position 0 for ITM ([ENC], added to its tokenizer in training), or None for HF's [CLS]."""
    if itm_token not in ITM_TOKENS:
        raise McadError(f"teachers.single.itm_token: '{itm_token}' is not one of {', '.join(ITM_TOKENS)}")
    if itm_token == "cls":
        return None
    if ENC_TOKEN not in tokenizer.get_vocab():
        raise McadError(f"{source}: the BLIP tokenizer has no {ENC_TOKEN} token (BLIP's ITM marker); "
                        f"set teachers.single.itm_token: cls to score with [CLS] as HF does")
    return int(tokenizer.convert_tokens_to_ids(ENC_TOKEN))


class BlipTeacher:
    """BLIP ITM behind the ``CrossEncoderTeacher`` protocol."""

    def __init__(self, model: Any, processor: Any, source: str, device: str = "cpu", batch_size: int | None = None,
                 itm_token: str = "enc") -> None:
        self.model = model.to(device).eval()
        self.processor = processor
        self.source = source
        self.device = device
        self.itm_token = itm_token
        self.itm_token_id = _itm_token_id(processor.tokenizer, itm_token, source)
        # Forward batch: on a GPU a batch of 32 leaves it idle between Python-side steps.
        self.batch_size = batch_size or (256 if str(device).startswith("cuda") else 32)
        self.fused_dim = int(model.config.text_config.hidden_size)

    def encode_images(self, images: list[Image]) -> torch.Tensor:
        """Vision transformer states [B, tokens, vision_dim] on the model's device (what the text
        encoder cross-attends to): a chunk of BLIP large is 0.6 GB, so a round trip through the
        CPU per pair batch would cost more than the scoring."""
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                # on a GPU the processor resizes there: on the CPU it costs ~45 ms per photo (measured)
                on_gpu = {"device": self.device} if str(self.device).startswith("cuda") else {}
                pixels = self.processor.image_processor(images[i : i + self.batch_size], return_tensors="pt", **on_gpu)
                states = self.model.vision_model(pixel_values=pixels["pixel_values"].to(self.device))
                out.append(states.last_hidden_state)
        if not out:
            raise McadError("BLIP encode_images: no images given")
        return torch.cat(out)

    def score(self, image_features: torch.Tensor, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """For pairs (image_features[i], captions[i]) (features from ``encode_images``, on the model's
        device): fused vectors h [B, fused_dim] at position 0 and ITM logits m [B], both fp32 on the CPU."""
        import torch

        if len(image_features) != len(captions) or not captions:
            raise McadError(f"BLIP score: {len(image_features)} image features for {len(captions)} captions")
        hs, ms = [], []
        with torch.inference_mode():
            for i in range(0, len(captions), self.batch_size):
                text = self.processor.tokenizer([pre_caption(c) for c in captions[i : i + self.batch_size]],
                                                padding="longest", truncation=True, max_length=MAX_CAPTION_TOKENS,
                                                return_tensors="pt").to(self.device)
                ids = text["input_ids"]
                if self.itm_token_id is not None:
                    ids[:, 0] = self.itm_token_id
                states = image_features[i : i + self.batch_size]
                fused = self.model.text_encoder(
                    input_ids=ids, attention_mask=text["attention_mask"], encoder_hidden_states=states,
                    encoder_attention_mask=torch.ones(states.shape[:2], dtype=torch.long, device=states.device),
                ).last_hidden_state[:, 0, :].float()
                with torch.autocast(fused.device.type, enabled=False):
                    logits = self.model.itm_head(fused)
                    m = logits[:, 1] - logits[:, 0]
                hs.append(fused.cpu())
                ms.append(m.cpu())
        return torch.cat(hs), torch.cat(ms)

    def fingerprint(self) -> str:
        """sha256 over weights, source, image preprocessing, vocabulary and how captions are scored."""
        import torch

        h = hashlib.sha256()
        h.update(json.dumps({"source": self.source, "image": self.processor.image_processor.to_dict(),
                             "vocab": sorted(self.processor.tokenizer.get_vocab().items()),
                             "max_tokens": MAX_CAPTION_TOKENS, "max_words": MAX_CAPTION_WORDS,
                             "itm_token": self.itm_token}, sort_keys=True, default=str).encode())
        for name, tensor in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            h.update(str(tensor.dtype).encode())
            h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()


def _looks_like_path(name: str) -> bool:
    """A hub id is 'name' or 'org/name'; anything else is meant as a folder."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def load_blip_teacher(name_or_folder: str, device: str = "cpu", itm_token: str = "enc") -> BlipTeacher:
    """BLIP ITM model + processor from a local folder (``save_pretrained`` layout) or a hub model name,
    scoring with ``itm_token`` at position 0 (param ``teachers.single.itm_token``: enc | cls).

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
    return BlipTeacher(model, processor, source, device, itm_token=itm_token)


def save_blip_reference(folder: Path, teacher: BlipTeacher) -> None:
    """``blip.json``: the BLIP model the teachers stage used and how it scores, for the stages after it."""
    from mcad_core.io import write_json

    write_json(folder / BLIP_FILE, {"source": teacher.source, "itm_token": teacher.itm_token})


def load_blip_reference(folder: Path, device: str = "cpu") -> BlipTeacher:
    """The BLIP teacher that ``blip.json`` in ``folder`` names, scoring as it was saved."""
    path = folder / BLIP_FILE
    try:
        ref = json.loads(path.read_text())
        source, itm_token = ref["source"], ref["itm_token"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise McadError(f"{path}: not a BLIP reference ({err!r}; re-run the teachers stage)") from None
    return load_blip_teacher(source, device, itm_token)
