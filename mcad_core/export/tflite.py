"""Student -> TFLite (fp32, dynamic-range int8, full int8); the files run in :mod:`mcad_core.runtime`.

Route (docs/ENVIRONMENT.md, measured): ``litert_torch.convert(...).export`` for fp32, then
``ai_edge_quantizer`` recipes ``dynamic_wi8_afp32`` (int8 weights) and
``static_wi8_ai8`` + calibration over the full range of every activation (int8 weights and
activations). No TensorFlow.
Each tower is exported separately, at batch 1, so each file is what a phone
loads for one query.

torch, litert_torch and ai_edge_quantizer are imported inside functions (each costs seconds).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mcad_core.errors import McadError, one_line
from mcad_core.runtime.encoder import FORMATS, model_filename

if TYPE_CHECKING:
    from mcad_core.student.model import StudentModel
    from mcad_core.student.tokenizer import StudentTokenizer

WORKER = Path(__file__).with_name("bench_worker.py")


def parity(path: str | Path, tflite_emb: np.ndarray, torch_emb: np.ndarray) -> dict:
    """How far a TFLite file drifts from PyTorch: per-sample cosine (mean, min) and file size."""
    a, b = np.asarray(tflite_emb, np.float64), np.asarray(torch_emb, np.float64)
    if a.shape != b.shape or a.ndim != 2 or not len(a):
        raise McadError(f"parity: embeddings must be matching non-empty [N, D] arrays (got {a.shape} and {b.shape})")
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return {"size_bytes": Path(path).stat().st_size, "cosine_to_torch": {"mean": float(cos.mean()), "min": float(cos.min())}}


def _smoke_test(path: Path, sample: np.ndarray) -> None:
    """Load and invoke the file in a child process: a bad quantized graph can SIGABRT the interpreter
    (open_clip's -inf mask did in full int8), which must fail this format, not the whole export."""
    npy = path.with_suffix(".smoke.npy")
    np.save(npy, sample)
    try:
        proc = subprocess.run([sys.executable, str(WORKER), "smoke", str(path), str(npy)],
                              capture_output=True, text=True, timeout=300)
    finally:
        npy.unlink(missing_ok=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [""])[-1]
        raise RuntimeError(f"interpreter failed on the exported file (exit {proc.returncode}) {tail}".strip())


def _widest(old: dict, new: dict) -> dict:
    """One calibration step's update of an activation's range: the extremes seen so far."""
    return {"min": np.minimum(old["min"], new["min"]), "max": np.maximum(old["max"], new["max"])}


def _calibrate(float_path: Path, static_recipe: list, samples: dict) -> dict:
    """Activation ranges that cover every calibration sample (min and max over all of them).

    ai-edge-quantizer's default keeps a 0.95 moving average of each sample's min and max, so a
    range follows the last ~20 samples and clips the tails the others reach (the pooled image
    features, the projections, the final L2 norm). On `mcad` that clipping cost 1.84 t2i R@1 in
    full int8, and still 1.52 with every activation in int16; the full ranges cost ~0.2
    (reports/probes/full_int8_levers.md).
    """
    from ai_edge_quantizer import calibrator, recipe_manager

    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(static_recipe)
    calib = calibrator.Calibrator(str(float_path), num_threads=1, qsv_update_func=_widest)
    calib.calibrate(samples, manager)
    return calib.get_model_qsvs()


def _quantize(float_path: Path, fmt: str, calib: np.ndarray, out_path: Path) -> None:
    from ai_edge_quantizer import quantizer, recipe

    q = quantizer.Quantizer(str(float_path))
    if fmt == "dynamic_int8":
        q.load_quantization_recipe(recipe.dynamic_wi8_afp32())
        result = q.quantize(enable_progress_bar=False, enable_progress_report=False)
    else:
        from ai_edge_litert.interpreter import Interpreter

        static = recipe.static_wi8_ai8()  # int8 weights per output channel, int8 activations per tensor
        q.load_quantization_recipe(static)
        (sig, spec), = Interpreter(model_path=str(float_path)).get_signature_list().items()
        (name,) = spec["inputs"]
        ranges = _calibrate(float_path, static, {sig: [{name: calib[i:i + 1]} for i in range(len(calib))]})
        result = q.quantize(ranges, enable_progress_bar=False, enable_progress_report=False)
    result.export_model(str(out_path), overwrite=True)


def export_tower(module: object, sample: np.ndarray, calib: np.ndarray, out_dir: Path, tower: str,
                 formats: list[str]) -> dict[str, dict]:
    """Convert one tower to every requested format; a format that fails carries its one-line reason."""
    import litert_torch
    import torch

    report: dict[str, dict] = {}
    float_path = out_dir / model_filename(tower, "fp32")
    start = time.perf_counter()
    try:
        litert_torch.convert(module, (torch.from_numpy(sample),)).export(str(float_path))
        float_s = time.perf_counter() - start
    except Exception as err:  # the converter raises many types; all mean "this tower did not convert"
        reason = f"fp32 conversion failed: {one_line(err)}"
        return {fmt: {"status": "failed", "reason": reason} for fmt in formats}
    for fmt in formats:
        path = out_dir / model_filename(tower, fmt)
        start = time.perf_counter()
        try:
            if fmt != "fp32":
                _quantize(float_path, fmt, calib, path)
            _smoke_test(path, sample)
        except Exception as err:  # same: report the converter's / interpreter's reason for this format
            if fmt != "fp32":  # the float file stays until every quantized format is made
                path.unlink(missing_ok=True)
            report[fmt] = {"status": "failed", "reason": one_line(err)}
            continue
        seconds = time.perf_counter() - start + (float_s if fmt == "fp32" else 0.0)
        report[fmt] = {"status": "ok", "file": path.name, "size_bytes": path.stat().st_size,
                       "export_s": round(seconds, 2)}
    if report.get("fp32", {}).get("status") != "ok":
        float_path.unlink()
    return report


def export_student(model: StudentModel, tokenizer: StudentTokenizer, out_dir: str | Path, formats: list[str],
                   calib_images: np.ndarray, calib_ids: np.ndarray) -> dict:
    """Write ``{image,text}_{fmt}.tflite`` and ``tokenizer.json`` into ``out_dir``.

    ``calib_images``: float [N, 3, H, W] in [0, 1]; ``calib_ids``: int32 [N, ctx]
    (full-int8 activation ranges come from them). Returns, per tower and format,
    ``status`` ok (file, size_bytes, export_s) or failed (reason).
    """
    from mcad_core.student.model import fold_batchnorm

    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise McadError(f"export: formats must be a non-empty subset of {list(FORMATS)} (got {formats})")
    calib_images = np.ascontiguousarray(calib_images, np.float32)
    calib_ids = np.ascontiguousarray(calib_ids)
    size, ctx = model.image_tower.image_size, model.text_tower.context_length
    if calib_images.ndim != 4 or calib_images.shape[1:] != (3, size, size) or not len(calib_images):
        raise McadError(f"export: calib_images must be float [N, 3, {size}, {size}] (got {calib_images.shape})")
    if calib_ids.dtype != np.int32 or calib_ids.ndim != 2 or calib_ids.shape[1] != ctx or not len(calib_ids):
        raise McadError(f"export: calib_ids must be int32 [N, {ctx}] (got {calib_ids.dtype} {calib_ids.shape})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shipped = fold_batchnorm(model)
    towers = {"image": (shipped.image_tower, calib_images), "text": (shipped.text_tower, calib_ids)}
    report: dict = {}
    for tower, (module, calib) in towers.items():
        report[tower] = export_tower(module, calib[:1], calib, out_dir, tower, list(formats))
    tokenizer.save(out_dir / "tokenizer.json")
    report["tokenizer"] = "tokenizer.json"
    return report
