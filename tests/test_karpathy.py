"""The Karpathy-split loader on tiny Flickr30K- and COCO-style fixtures, good and bad."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from karpathy_fixtures import ENTRIES, make_karpathy

from mcad_core.data.karpathy import load_karpathy
from mcad_core.errors import McadError
from mcad_core.params import KarpathyParams


def _load(annotations: Path | str | None, image_root: Path | str | None, skip: bool = False):
    params = KarpathyParams(annotations=annotations and str(annotations), image_root=image_root and str(image_root),
                            skip_bad_images=skip)
    return load_karpathy(params, progress=False)


def _error(annotations, image_root, skip: bool = False) -> str:
    with pytest.raises(McadError) as info:
        _load(annotations, image_root, skip)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("layout", ["flickr30k", "coco"])
def test_loads_both_layouts_with_restval_as_train(tmp_path: Path, layout: str) -> None:
    annotations, image_root, _ = make_karpathy(tmp_path, layout)
    dataset = _load(annotations, image_root)
    assert dataset.skipped_images == 0 and dataset.image_root == image_root.resolve()
    assert {s: [r["image_id"] for r in recs] for s, recs in dataset.splits.items()} == {
        "train": ["a", "b", "c"], "val": ["d"], "test": ["e", "f"]}
    train_c = dataset.splits["train"][2]
    assert train_c["image"] == ("val2014/c.jpg" if layout == "coco" else "c.jpg")
    assert train_c["captions"] == [f"Photo 2, caption {k}." for k in range(5)]
    for records in dataset.splits.values():
        for rec in records:
            assert set(rec) == {"image_id", "image", "captions"}
            assert (image_root / rec["image"]).is_file()


def test_unset_or_missing_annotations(tmp_path: Path) -> None:
    _, image_root, _ = make_karpathy(tmp_path, "coco")
    assert "data.karpathy.annotations: not set" in _error(None, image_root)
    missing = tmp_path / "nope.json"
    assert _error(missing, image_root).startswith(f"{missing}: annotations file not found")
    annotations, _, _ = make_karpathy(tmp_path, "coco")
    assert "data.karpathy.image_root: not set" in _error(annotations, None)
    assert _error(annotations, tmp_path / "no_images").startswith(f"{tmp_path / 'no_images'}: image folder not found")


@pytest.mark.parametrize(("content", "expected"), [
    ("{not json", "not valid JSON"),
    (json.dumps([1, 2]), "expected an object with an 'images' list"),
    (json.dumps({"images": {"a": 1}}), "expected an object with an 'images' list"),
    (json.dumps({"images": ["a.jpg"]}), "images[0]: expected an object"),
    (json.dumps({"images": [{"split": "train", "sentences": [{"raw": "x"}]}]}), "images[0]: needs a 'filename'"),
    (json.dumps({"images": [{"filename": "a.jpg", "split": "dev", "sentences": [{"raw": "x"}]}]}),
     "'split' must be one of train, restval, val, test (got 'dev')"),
    (json.dumps({"images": [{"filename": "a.jpg", "split": "val", "sentences": ["x"]}]}),
     "images[0]: needs a 'sentences' list"),
    (json.dumps({"images": [{"filename": "a.jpg", "filepath": 3, "split": "val", "sentences": []}]}),
     "'filepath' must be a string"),
])
def test_malformed_annotations_are_one_line_errors_naming_the_file(tmp_path: Path, content: str, expected: str) -> None:
    _, image_root, _ = make_karpathy(tmp_path, "flickr30k")
    annotations = tmp_path / "broken.json"
    annotations.write_text(content)
    message = _error(annotations, image_root)
    assert message.startswith(f"{annotations}: ") and expected in message


@pytest.mark.parametrize("sentences", [[], [{"raw": "   "}]])
def test_image_without_captions(tmp_path: Path, sentences: list) -> None:
    annotations, image_root, data = make_karpathy(tmp_path, "coco")
    data["images"][3]["sentences"] = sentences
    annotations.write_text(json.dumps(data))
    assert _error(annotations, image_root) == f"{annotations}: images[3] (val2014/d.jpg): no captions"


def _break_images(image_root: Path) -> None:
    """b.png missing, c.jpg not an image, e.png cut in half (its header still reads)."""
    (image_root / "b.png").unlink()
    (image_root / "c.jpg").write_bytes(b"this is not a jpeg")
    png = (image_root / "e.png").read_bytes()
    (image_root / "e.png").write_bytes(png[: len(png) // 2])


def test_bad_images_are_listed_or_skipped_and_counted(tmp_path: Path) -> None:
    annotations, image_root, _ = make_karpathy(tmp_path, "flickr30k")
    _break_images(image_root)
    message = _error(annotations, image_root)
    assert message.startswith(f"{image_root}: 3 of 6 images missing or unreadable: b.png (missing); c.jpg (unreadable")
    assert "e.png (unreadable" in message and "skip_bad_images" in message
    dataset = _load(annotations, image_root, skip=True)
    assert dataset.skipped_images == 3
    assert {s: [r["image_id"] for r in recs] for s, recs in dataset.splits.items()} == {
        "train": ["a"], "val": ["d"], "test": ["f"]}


def test_error_names_the_first_few_bad_images_and_counts_the_rest(tmp_path: Path) -> None:
    annotations, image_root, _ = make_karpathy(tmp_path, "flickr30k")
    for filename, _, _ in ENTRIES[:5]:
        (image_root / filename).unlink()
    message = _error(annotations, image_root)
    assert "5 of 6 images" in message and "a.jpg (missing); b.png (missing); c.jpg (missing) and 2 more" in message
    assert "d.jpg" not in message


def test_a_split_left_empty_is_an_error(tmp_path: Path) -> None:
    annotations, image_root, _ = make_karpathy(tmp_path, "coco")
    (image_root / "val2014" / "d.jpg").unlink()
    assert _error(annotations, image_root, skip=True) == f"{annotations}: no usable images in the val split"
