"""The exported student as the phone holds it: one format's image and text towers and the tokenizer.

Its fingerprint names the format and hashes the three files, so a gallery embedded by one
export is never searched with another (a re-export, another format, another model).
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from mcad_core.errors import McadError
from mcad_core.runtime.encoder import FORMATS, TFLiteEncoder, model_filename

if TYPE_CHECKING:
    from mcad_core.student.tokenizer import StudentTokenizer

FINGERPRINT_PREFIX = "mcad-student"
TOKENIZER_FILE = "tokenizer.json"


def fingerprint_format(fingerprint: str) -> str | None:
    """The format recorded in a fingerprint made here (``mcad-student:<format>:<hash>``), else None."""
    parts = fingerprint.split(":")
    if len(parts) == 3 and parts[0] == FINGERPRINT_PREFIX and parts[1] in FORMATS:
        return parts[1]
    return None


class ExportedModel:
    """``models_dir``'s files for ``fmt``; towers and tokenizer load on first use (index needs no text side)."""

    def __init__(self, models_dir: str | Path, fmt: str, threads: int = 1) -> None:
        if fmt not in FORMATS:
            raise McadError(f"format must be one of {', '.join(FORMATS)} (got {fmt!r})")
        self.folder, self.fmt, self.threads = Path(models_dir), fmt, threads
        if not self.folder.is_dir():
            raise McadError(f"{self.folder}: models folder not found (the export stage writes models/tflite)")
        self.paths = {"image": self.folder / model_filename("image", fmt),
                      "text": self.folder / model_filename("text", fmt),
                      "tokenizer": self.folder / TOKENIZER_FILE}
        for what, path in self.paths.items():
            if not path.is_file():
                raise McadError(f"{path}: {what} file not found in the models folder")

    @cached_property
    def fingerprint(self) -> str:
        """``mcad-student:<format>:<16 hex>``: sha256 over the three files' bytes."""
        h = hashlib.sha256()
        for path in self.paths.values():
            with open(path, "rb") as f:
                h.update(hashlib.file_digest(f, "sha256").digest())
        return f"{FINGERPRINT_PREFIX}:{self.fmt}:{h.hexdigest()[:16]}"

    @cached_property
    def image(self) -> TFLiteEncoder:
        enc = TFLiteEncoder(self.paths["image"], num_threads=self.threads)
        if len(enc.input_shape) != 3 or enc.input_shape[0] != 3 or enc.input_shape[1] != enc.input_shape[2]:
            raise McadError(f"{self.paths['image']}: expected a [1, 3, S, S] image input, got {enc.input_shape}")
        return enc

    @property
    def image_size(self) -> int:
        return self.image.input_shape[-1]

    @cached_property
    def text(self) -> TFLiteEncoder:
        return TFLiteEncoder(self.paths["text"], num_threads=self.threads)

    @cached_property
    def tokenizer(self) -> StudentTokenizer:
        from mcad_core.student.tokenizer import StudentTokenizer

        tok = StudentTokenizer.load(self.paths["tokenizer"])
        if (tok.context_length,) != self.text.input_shape:
            raise McadError(f"{self.paths['tokenizer']}: pads to {tok.context_length} tokens, "
                            f"the text model takes {self.text.input_shape}")
        return tok
