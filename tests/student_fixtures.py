"""A tiny student (config written by the test) and its TFLite export, made once per test process.

Conversion costs ~10 s per tower, so test_export and test_bench share one export.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

CAPTIONS = [
    "a red circle left of a blue square",
    "A small green star above a large ring.",
    "two objects: a pink cross and a cyan hexagon",
    "an orange diamond below a purple triangle",
    "a large yellow ring right of a small red star",
]
TINY_CONFIG = {
    "name": "tiny-test",
    "embed_dim": 32,
    "image": {"image_size": 32, "stem_width": 8, "blocks": [[16, 2], [16, 1], [32, 2]]},
    "text": {"context_length": 12, "width": 32, "layers": 2, "heads": 2, "mlp_ratio": 2},
}
FORMATS = ["fp32", "dynamic_int8", "full_int8"]


def tiny_student(folder: Path):
    """A tiny student with non-trivial BatchNorm statistics, and its tokenizer."""
    import torch

    from mcad_core.student.model import build_student
    from mcad_core.student.tokenizer import StudentTokenizer

    tok = StudentTokenizer.train(CAPTIONS, context_length=TINY_CONFIG["text"]["context_length"])
    cfg_path = folder / "tiny.json"
    cfg_path.write_text(json.dumps(TINY_CONFIG))
    torch.manual_seed(0)
    model = build_student(cfg_path, tok.vocab_size)
    model.train()
    with torch.no_grad():
        for _ in range(3):  # move BN running stats away from (0, 1) so folding is exercised
            model.encode_image(torch.rand(16, 3, 32, 32) * 0.5 + 0.2)
    return model.eval(), tok


def sample_inputs(tok, n: int = 24, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.random((n, 3, 32, 32), dtype=np.float32)
    ids = tok.encode([CAPTIONS[i % len(CAPTIONS)] for i in range(n)])
    return images, ids


@functools.cache
def exported() -> tuple[object, object, Path, dict]:
    """(model, tokenizer, folder of .tflite files, export report), exported once per process."""
    from mcad_core.export.tflite import export_student

    folder = Path(tempfile.mkdtemp(prefix="mcad-tiny-export-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    model, tok = tiny_student(folder)
    images, ids = sample_inputs(tok, seed=0)
    report = export_student(model, tok, folder / "tflite", FORMATS, images, ids)
    return model, tok, folder / "tflite", report
