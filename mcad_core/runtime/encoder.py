"""An exported tower in the LiteRT interpreter: what the phone app runs, without torch.

The ``mcad`` album command and the bench's search process load this module in processes that
never import torch, so it imports numpy and ``ai_edge_litert`` only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from mcad_core.errors import McadError, one_line

FORMATS = ("fp32", "dynamic_int8", "full_int8")
TOWERS = ("image", "text")


def model_filename(tower: str, fmt: str) -> str:
    """``image_fp32.tflite`` etc.: the one naming rule shared by export and bench."""
    return f"{tower}_{fmt}.tflite"


@contextmanager
def _without_native_info() -> Iterator[None]:
    """Drop the ``INFO: ...`` lines native code writes to stderr meanwhile; pass every other line on.

    LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." when it builds an
    interpreter, straight to file descriptor 2 from C++ (no log level or variable turns it off:
    TF_CPP_MIN_LOG_LEVEL does not), so `mcad` printed it before every answer and every error.
    Its warnings and errors still reach stderr.
    """
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                captured.seek(0)
                kept = [line for line in captured.read().splitlines(keepends=True) if not line.startswith(b"INFO: ")]
                if kept:
                    os.write(2, b"".join(kept))
    finally:
        os.close(saved)


class TFLiteEncoder:
    """One exported tower in the LiteRT interpreter: inputs batch -> float32 embeddings.

    The files are converted at batch 1 (reshapes are static), so a batch is a
    loop of batch-1 invokes, which is also how a phone serves single queries.
    """

    def __init__(self, path: str | Path, num_threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        if not self.path.is_file():
            raise McadError(f"{self.path}: TFLite model not found")
        try:
            with _without_native_info():
                self._interp = Interpreter(model_path=str(self.path), num_threads=num_threads)
                self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise McadError(f"{self.path}: not a loadable TFLite model ({one_line(err)})") from None
        inputs, outputs = self._interp.get_input_details(), self._interp.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise McadError(f"{self.path}: expected one input and one output, got {len(inputs)} and {len(outputs)}")
        self._in, self._out = inputs[0], outputs[0]
        self.input_shape: tuple[int, ...] = tuple(int(d) for d in self._in["shape"][1:])
        self.input_dtype = np.dtype(self._in["dtype"])
        self.embed_dim = int(self._out["shape"][-1])

    def encode_one(self, x: np.ndarray) -> np.ndarray:
        """One sample (with or without its batch axis) -> embedding [embed_dim].

        Full-int8 files take and give int8 tensors, so a float image is quantized here
        and an int8 output dequantized, then re-normalised: the in-graph L2 norm in
        int8 leaves norms between ~0.7 and ~1.7 (measured), which would bias dot-product
        ranking; one 256-d norm in float is what the phone app does too. int32 token
        ids pass unchanged.
        """
        x = np.asarray(x).reshape(1, *self.input_shape)
        scale, zero = self._in["quantization"]
        if scale and self.input_dtype.kind in "iu" and np.asarray(x).dtype.kind == "f":
            info = np.iinfo(self.input_dtype)
            x = np.clip(np.rint(x / scale + zero), info.min, info.max)
        self._interp.set_tensor(self._in["index"], np.ascontiguousarray(x, self.input_dtype))
        self._interp.invoke()
        out = self._interp.get_tensor(self._out["index"])[0]
        scale, zero = self._out["quantization"]
        if scale and out.dtype.kind in "iu":
            emb = (out.astype(np.float32) - zero) * np.float32(scale)
            return emb / max(float(np.linalg.norm(emb)), 1e-12)
        return out.astype(np.float32)

    def encode(self, batch: np.ndarray, progress: bool = False) -> np.ndarray:
        """Samples [N, *input_shape] -> float32 embeddings [N, embed_dim]."""
        from tqdm import tqdm

        batch = np.asarray(batch)
        if tuple(batch.shape[1:]) != self.input_shape:
            raise McadError(f"{self.path}: input shape {tuple(batch.shape[1:])} != model's {self.input_shape}")
        out = np.empty((len(batch), self.embed_dim), np.float32)
        for i in tqdm(range(len(batch)), desc=self.path.name, disable=not progress, leave=False):
            out[i] = self.encode_one(batch[i])
        return out
