"""The scale rehearsal's building blocks: a Flickr30K-shaped dataset the real loader accepts, and
per-stage memory measured from the outside."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from mcad_core.data.karpathy import load_karpathy
from mcad_core.params import KarpathyParams
from mcad_tools.scale_rehearsal import PHOTO_H, PHOTO_W, run_measured, split_sizes, write_flickr_like


def test_split_sizes_follow_flickr30k_at_full_size():
    assert split_sizes(31000) == {"train": 29000, "val": 1000, "test": 1000}
    assert split_sizes(120) == {"train": 80, "val": 20, "test": 20}
    assert split_sizes(1000, held_out=300) == {"train": 400, "val": 300, "test": 300}  # fixed at every N
    with pytest.raises(ValueError, match="no train images"):
        split_sizes(600, held_out=300)


def test_flickr_like_dataset_is_read_by_the_karpathy_loader(tmp_path: Path):
    annotations, image_root, words = write_flickr_like(tmp_path, 45, seed=0, workers=2)
    data = load_karpathy(KarpathyParams(annotations=str(annotations), image_root=str(image_root)), progress=False)
    assert {s: len(r) for s, r in data.splits.items()} == split_sizes(45)
    first = data.splits["train"][0]
    assert len(first["captions"]) == 5
    with Image.open(image_root / first["image"]) as im:
        assert (im.format, im.size) == ("JPEG", (PHOTO_W, PHOTO_H))
    assert {"left", "circle", "of"} <= set(words)
    assert json.loads(annotations.read_text())["dataset"] == "flickr30k"


def test_run_measured_sees_a_stage_s_peak_memory(tmp_path: Path):
    grow = "import time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(0.6)"
    small = run_measured([sys.executable, "-c", "import time; time.sleep(0.6)"], tmp_path, {}, tmp_path / "a.log")
    big = run_measured([sys.executable, "-c", grow], tmp_path, {}, tmp_path / "b.log")
    assert big["peak_rss_mb"] - small["peak_rss_mb"] > 250
    assert big["peak_tree_pss_mb"] > 250 and big["wall_s"] >= 0.6
    assert big["peak_rss_hwm_mb"] >= big["peak_rss_mb"] - 1 and small["peak_rss_hwm_mb"] < 100


def test_shrunk_teachers_build_from_their_real_architectures(tmp_path: Path):
    import torch
    from transformers import BlipForImageTextRetrieval

    from mcad_core.teachers.dual import open_clip_with_configs
    from mcad_tools.scale_rehearsal import ARCHS, SHRUNK_WIDTH, _wordpiece_tokenizer, shrunk_blip_config

    tokenizer = _wordpiece_tokenizer(["a", "red", "circle"], tmp_path / "vocab")
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    blip = BlipForImageTextRetrieval(shrunk_blip_config(tokenizer)).eval()
    px = ARCHS["shrunk"]["blip_px"]
    with torch.inference_mode():
        out = blip(input_ids=tokenizer(["a red circle"], return_tensors="pt")["input_ids"],
                   pixel_values=torch.zeros(1, 3, px, px))
    assert out.itm_score.shape == (1, 2)
    assert blip.config.text_config.encoder_hidden_size == blip.config.vision_config.hidden_size == SHRUNK_WIDTH
    clip = open_clip_with_configs().create_model(ARCHS["shrunk"]["clip"])
    assert type(clip.visual).__name__ == "VisionTransformer" and clip.visual.image_size == (64, 64)
    assert sum(p.numel() for p in blip.parameters()) < 2e6


def test_shrunk_student_keeps_the_pretrained_towers(tmp_path: Path):
    from mcad_core.student.config import load_config
    from mcad_tools.scale_rehearsal import student_config

    cfg = load_config(student_config(tmp_path, ["a", "red", "circle"], "package", arch="shrunk"))
    assert (cfg.image.backbone, cfg.image.image_size, cfg.image.pretrained) == ("efficientnet_lite0", 64, None)
    assert (cfg.text.backbone, cfg.text.layers) == ("bert", 1) and Path(cfg.text.pretrained).is_dir()


def test_growth_fit_finds_the_slope_and_the_noise():
    from mcad_tools.scale_rehearsal import growth_fit

    line = growth_fit([500, 1500, 5000], [100 + n * 10 / 1024 for n in (500, 1500, 5000)])
    assert line["kb_per_image"] == 10.0 and line["residual_mb"] == 0.0 and line["slope_se_kb"] == 0.0
    noisy = growth_fit([500, 1500, 5000], [105, 115, 148])
    assert noisy["residual_mb"] > 0 and noisy["slope_se_kb"] > 0
    assert growth_fit([500, 5000], [100, 110])["residual_mb"] is None


def _fake_run(n: int, peak_per_image_kb: float, held_per_image_mb: float) -> dict:
    stage = {"peak_rss_hwm_mb": 300 + n * peak_per_image_kb / 1024, "peak_tree_pss_mb": 300.0}
    return {"n_images": n, "cache": stage, "held_mb": {"cache": n * held_per_image_mb}}


def test_growth_table_sets_the_prediction_beside_the_measurement():
    from mcad_tools.scale_rehearsal import format_growth_table, growth_table

    report = {"device": "cpu", **{str(n): _fake_run(n, 80, 20 / 1024) for n in (500, 1500, 5000)}}
    row = growth_table(report)["cache"]
    assert (row["predicted_kb_per_image"], row["excess_kb_per_image"], row["within_allowance"]) == (20.0, 60.0, False)
    assert "| cache | 339 / 417 / 691 | +80.0 | 0.0 | 0.0 |" in format_growth_table({"cache": row})


def test_held_bytes_follow_the_files_a_run_wrote(tmp_path: Path):
    import torch
    from safetensors.torch import save_file

    from mcad_core.paths import CACHE, FUSED, PREPARED
    from mcad_tools.scale_rehearsal import held_bytes

    for folder in (PREPARED, CACHE, FUSED):
        (tmp_path / folder).mkdir(parents=True)
    for split, n in (("train", 8), ("val", 2), ("test", 2)):
        lines = [json.dumps({"image_id": i, "image": f"{i}.jpg", "captions": ["a", "b"]}) for i in range(n)]
        (tmp_path / PREPARED / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    for path, rows in ((CACHE / "train.safetensors", 8), (CACHE / "val.safetensors", 2), (FUSED / "train.safetensors", 8)):
        save_file({"v": torch.zeros(rows, 16)}, str(tmp_path / path))
    student = tmp_path / "student.json"
    student.write_text(json.dumps({"embed_dim": 8}))
    params = {"distill": {"student": str(student)}, "teachers": {"rerank_k": 4}, "export": {"formats": ["fp32"]}}
    held = held_bytes(tmp_path, params)
    size = {p: (tmp_path / p).stat().st_size for p in (CACHE / "train.safetensors", FUSED / "train.safetensors")}
    assert held["distill"] == size[CACHE / "train.safetensors"] + size[FUSED / "train.safetensors"]
    assert held["teachers"] == 4 * 16 * 6 + 6 * 4 * 20  # 2 test images + 4 captions: dual embeddings, re-rank pairs
    assert held["export"] == 2 * 4 * 8 * 12


def test_a_held_out_split_too_big_for_a_size_is_one_line_error_before_anything_runs(tmp_path: Path):
    import importlib.util

    from click.testing import CliRunner

    spec = importlib.util.spec_from_file_location("rehearse_scale", Path(__file__).parents[1] / "scripts/rehearse_scale.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "scale.json"
    result = CliRunner().invoke(script.main, ["--sizes", "1000,500", "--held-out", "300", "--root", str(tmp_path / "r"),
                                              "--out", str(out)])
    assert result.exit_code == 2 and "--held-out" in result.output and "no train images" in result.output
    assert not out.exists() and not (tmp_path / "r").exists()  # N = 1,000 did not start either
