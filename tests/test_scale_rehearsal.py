"""The scale rehearsal's building blocks: a Flickr30K-shaped dataset the real loader accepts, and
per-stage memory measured from the outside."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image

from mcad_core.data.karpathy import load_karpathy
from mcad_core.params import KarpathyParams
from mcad_tools.scale_rehearsal import PHOTO_H, PHOTO_W, run_measured, split_sizes, write_flickr_like


def test_split_sizes_follow_flickr30k_at_full_size():
    assert split_sizes(31000) == {"train": 29000, "val": 1000, "test": 1000}
    assert split_sizes(120) == {"train": 80, "val": 20, "test": 20}


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
