"""TFLite export: every produced file runs in LiteRT and matches PyTorch; failures are reported."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from student_fixtures import FORMATS, exported, sample_inputs

from mcad_core.errors import McadError
from mcad_core.evaluation.retrieval import retrieval_metrics
from mcad_core.export.pipeline import export_metrics, format_retrieval
from mcad_core.export.tflite import _quantize, export_student, export_tower, parity
from mcad_core.runtime.encoder import TFLiteEncoder

pytestmark = pytest.mark.slow

# Measured on the tiny random student (mean cosine): fp32 1.0, dynamic int8 > 0.9999, full int8 ~0.99
MIN_COSINE = {"fp32": 0.9999, "dynamic_int8": 0.99, "full_int8": 0.95}


def test_every_format_is_produced():
    _, _, folder, report = exported()
    for tower in ("image", "text"):
        for fmt in FORMATS:
            entry = report[tower][fmt]
            assert entry["status"] == "ok", entry
            assert (folder / entry["file"]).stat().st_size == entry["size_bytes"]
    assert (folder / "tokenizer.json").is_file()
    assert report["image"]["full_int8"]["size_bytes"] < report["image"]["fp32"]["size_bytes"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_tflite_matches_pytorch(fmt):
    model, tok, folder, _ = exported()
    images, ids = sample_inputs(tok, seed=1)
    with torch.no_grad():
        ref = {"image": model.encode_image(torch.from_numpy(images)).numpy(),
               "text": model.encode_text(torch.from_numpy(ids)).numpy()}
    for tower, x in (("image", images), ("text", ids)):
        path = folder / f"{tower}_{fmt}.tflite"
        enc = TFLiteEncoder(path, num_threads=1)
        emb = enc.encode(x)
        assert emb.dtype == np.float32 and emb.shape == ref[tower].shape
        # full-int8 files have int8 I/O: a missed (de)quantization shows as norms near 0 or ~1000
        assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=0.05), (tower, fmt)
        result = parity(path, emb, ref[tower])
        assert result["cosine_to_torch"]["mean"] > MIN_COSINE[fmt], (tower, result)
        assert result["size_bytes"] == path.stat().st_size


def test_text_model_takes_int32_ids():
    _, _, folder, _ = exported()
    enc = TFLiteEncoder(folder / "text_fp32.tflite")
    assert enc.input_dtype == np.int32 and enc.input_shape == (12,)
    with pytest.raises(McadError, match="input shape"):
        enc.encode(np.zeros((2, 7), np.int32))


def test_missing_or_corrupt_model_is_one_line_error(tmp_path):
    with pytest.raises(McadError, match="nothing.tflite: TFLite model not found"):
        TFLiteEncoder(tmp_path / "nothing.tflite")
    bad = tmp_path / "corrupt.tflite"
    bad.write_bytes(b"\x00not a flatbuffer" * 10)
    with pytest.raises(McadError, match="corrupt.tflite") as err:
        TFLiteEncoder(bad)
    assert "\n" not in str(err.value)
    truncated = tmp_path / "truncated.tflite"
    _, _, folder, _ = exported()
    truncated.write_bytes((folder / "image_fp32.tflite").read_bytes()[:5000])
    with pytest.raises(McadError, match="truncated.tflite"):
        TFLiteEncoder(truncated)


def test_a_tower_that_cannot_convert_is_reported_not_raised(tmp_path):
    class Broken(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise ValueError("this op has no lowering")

    sample = np.zeros((1, 4), np.float32)
    report = export_tower(Broken(), sample, sample, tmp_path, "image", ["fp32", "full_int8"])
    for fmt in ("fp32", "full_int8"):
        assert report[fmt]["status"] == "failed"
        assert "this op has no lowering" in report[fmt]["reason"] and "\n" not in report[fmt]["reason"]
    assert not list(tmp_path.glob("*.tflite"))


def test_bad_export_arguments(tmp_path):
    model, tok, _, _ = exported()
    images, ids = sample_inputs(tok)
    with pytest.raises(McadError, match="formats"):
        export_student(model, tok, tmp_path, ["int4"], images, ids)
    with pytest.raises(McadError, match="int32"):
        export_student(model, tok, tmp_path, ["fp32"], images, ids.astype(np.int64))
    with pytest.raises(McadError, match="calib_images"):
        export_student(model, tok, tmp_path, ["fp32"], images[:, :, :16], ids)


def test_export_metrics_are_the_rsum_drop_of_each_converted_format():
    report = {"formats": {
        "fp32": {"test": {"rsum": 500.0}, "drop_vs_torch": {"t2i_r1": 0.0, "i2t_r1": 0.0, "rsum": 0.0}},
        "full_int8": {"test": {"rsum": 498.5}, "drop_vs_torch": {"t2i_r1": 0.4, "i2t_r1": -0.2, "rsum": 1.5}},
        "dynamic_int8": {"image": {"status": "failed"}, "test": None},  # a tower did not convert
    }}
    assert export_metrics(report) == {"fp32": {"rsum_drop": 0.0}, "full_int8": {"rsum_drop": 1.5}}


def test_full_int8_ranges_cover_every_calibration_sample(tmp_path):
    """ai-edge-quantizer's default range is a moving average of each sample's extremes: it clips
    what early samples reach (on `mcad` that cost 1.84 t2i R@1). A bright first sample, then dim
    ones: the full-int8 input range must still reach the bright pixel (the average: ~0.35)."""
    _, _, folder, _ = exported()
    rng = np.random.default_rng(0)
    calib = np.concatenate([np.ones((1, 3, 32, 32), np.float32),
                            rng.random((40, 3, 32, 32), dtype=np.float32) * 0.25])
    out = tmp_path / "image_full_int8.tflite"
    _quantize(folder / "image_fp32.tflite", "full_int8", calib, out)
    from ai_edge_litert.interpreter import Interpreter

    (detail,) = Interpreter(model_path=str(out)).get_input_details()
    scale, zero = detail["quantization"]
    assert detail["dtype"] == np.int8
    assert (127 - zero) * scale == pytest.approx(1.0, abs=2 * scale)
    assert (-128 - zero) * scale <= 0.0


def test_format_retrieval_reports_both_towers_and_each_tower_alone():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(30, 16)).astype(np.float32)
    index = [i for i in range(30) for _ in range(2)]
    texts = images[index] + 0.1 * rng.normal(size=(60, 16)).astype(np.float32)
    torch_r = retrieval_metrics(images, texts, index)
    scrambled = images[rng.permutation(30)]  # a converted image tower that lost everything
    entry = format_retrieval(torch_r, (images, texts), {"image": scrambled, "text": texts}, index)
    both = retrieval_metrics(scrambled, texts, index)
    assert entry["test"]["rsum"] == round(both["rsum"], 2)
    assert entry["drop_vs_torch"]["rsum"] == round(torch_r["rsum"] - both["rsum"], 2)
    assert entry["drop_per_tower"]["text_only"] == {"t2i_r1": 0.0, "i2t_r1": 0.0, "rsum": 0.0}
    assert entry["drop_per_tower"]["image_only"]["t2i_r1"] > 50  # the image tower is the one that loses
    text_failed = format_retrieval(torch_r, (images, texts), {"image": images}, index)
    assert text_failed["test"] is None and "drop_vs_torch" not in text_failed
    assert text_failed["drop_per_tower"] == {"image_only": {"t2i_r1": 0.0, "i2t_r1": 0.0, "rsum": 0.0}}
