"""The prepare stage: manifests, source.json, card and contact sheet, written all-or-nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from karpathy_fixtures import make_karpathy
from PIL import Image

import mcad_core.data.prepare as prepare_module
from mcad_core.data.manifest import (SPLITS, TEXTS_FILE, TRUTH_FILE, image_path, load_image, read_manifest,
                                     read_texts, write_texts)
from mcad_core.data.prepare import prepare_dataset
from mcad_core.errors import McadError
from mcad_core.params import parse_params

REPO = Path(__file__).resolve().parents[1]
STAGE = REPO / "stages" / "prepare.py"
TINY = {"synthetic": {"n_train": 14, "n_val": 5, "n_test": 5, "n_teacher": 10, "n_teacher_val": 4, "image_size": 32,
                      "captions_per_image": 3}}


def _prepare(tmp_path: Path, data: dict) -> dict:
    return prepare_dataset(parse_params({"data": data}).data, tmp_path / "prepared", tmp_path / "data.json",
                           tmp_path / "sheet.png", progress=False)


def test_synthetic_prepare_writes_manifests_images_card_and_sheet(tmp_path: Path) -> None:
    card = _prepare(tmp_path, TINY)
    prepared = tmp_path / "prepared"
    assert json.loads((prepared / "source.json").read_text()) == {"source": "synthetic", "image_root": "."}
    for split, n in zip(SPLITS, (14, 5, 5)):
        records = read_manifest(prepared / (TRUTH_FILE if split == "train" else f"{split}.jsonl"))
        assert len(records) == n and all(len(r["captions"]) == 3 for r in records)
        assert image_path(prepared, records[0]) == prepared / "images" / split / f"{split}_000000.png"
        assert load_image(prepared, records[0]).size == (32, 32)
        assert card["splits"][split]["images"] == n and card["splits"][split]["captions"] == 3 * n
        assert card["splits"][split]["twin_pairs"] == sum(r["twin"] is not None for r in records) // 2
    assert json.loads((tmp_path / "data.json").read_text()) == card
    # the student's train split is a user's album: half the photos uncaptioned, no generator truth
    album, truth = read_manifest(prepared / "train.jsonl"), read_manifest(prepared / TRUTH_FILE)
    assert all(set(r) == {"image_id", "image", "captions"} for r in album)
    hidden = [t for a, t in zip(album, truth) if not a["captions"]]
    assert len(hidden) == 7 and card["user_split"] == {"captioned_photos": 7, "uncaptioned_photos": 7, "mismatched_photos": 0,
                                                 "unpaired_texts": 7}
    twins = {t["image_id"]: t["twin"] for t in truth}
    assert not any(twins.get(t["image_id"]) in {h["image_id"] for h in hidden} for t in hidden)  # one per pair
    pool = read_texts(prepared / TEXTS_FILE)
    assert sorted(pool) == sorted(c for t in hidden for c in t["captions"] if c in pool) and len(pool) == 7
    # the teachers' corpus is another stream of scenes, apart from every student split
    teacher = read_manifest(prepared / "teacher.jsonl")
    assert len(teacher) == 10 and len(read_manifest(prepared / "teacher_val.jsonl")) == 4
    assert all(r["image_id"].startswith("teacher_") and "twin" in r for r in teacher)
    student_caps = {c for split in ("val", "test") for r in read_manifest(prepared / f"{split}.jsonl")
                    for c in r["captions"]} | {c for r in truth for c in r["captions"]}
    assert {c for r in teacher for c in r["captions"]} != student_caps
    words = card["caption_words"]
    assert 2 <= words["min"] <= words["mean"] <= words["max"] and "skipped_images" not in card
    assert 20 <= card["vocabulary_size"] <= 60
    with Image.open(tmp_path / "sheet.png") as sheet:
        assert sheet.format == "PNG" and sheet.width > 600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.json", "prepared", "sheet.png"]  # no temporaries


def test_karpathy_prepare_points_into_the_image_root(tmp_path: Path) -> None:
    annotations, image_root, _ = make_karpathy(tmp_path, "coco")
    (image_root / "train2014" / "b.png").unlink()
    karpathy = {"annotations": str(annotations), "image_root": str(image_root), "skip_bad_images": True}
    card = _prepare(tmp_path, {"source": "karpathy", "karpathy": karpathy})
    prepared = tmp_path / "prepared"
    assert json.loads((prepared / "source.json").read_text())["image_root"] == str(image_root.resolve())
    assert not (prepared / "images").exists()
    train = read_manifest(prepared / "train.jsonl")
    assert [r["image_id"] for r in train] == ["a", "c"]
    assert image_path(prepared, train[1]) == image_root.resolve() / "val2014" / "c.jpg"
    assert load_image(prepared, train[1]).mode == "RGB"
    assert card["skipped_images"] == 1 and card["splits"]["train"] == {"images": 2, "captions": 10}
    assert card["caption_words"] == {"min": 4, "mean": 4.0, "max": 4}
    assert (tmp_path / "sheet.png").is_file()


def test_a_failure_leaves_the_previous_output_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _prepare(tmp_path, TINY)
    before = {p: p.read_bytes() for p in (tmp_path / "prepared").rglob("*") if p.is_file()}

    def fail(*args, **kwargs):
        raise McadError("sheet: boom")

    monkeypatch.setattr(prepare_module, "write_contact_sheet", fail)
    with pytest.raises(McadError, match="boom"):
        _prepare(tmp_path, {**TINY, "seed": 1})
    assert {p: p.read_bytes() for p in (tmp_path / "prepared").rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.json", "prepared", "sheet.png"]


def test_bad_karpathy_input_creates_nothing(tmp_path: Path) -> None:
    annotations, image_root, _ = make_karpathy(tmp_path, "flickr30k")
    (image_root / "a.jpg").write_bytes(b"")
    with pytest.raises(McadError, match="1 of 6 images"):
        _prepare(tmp_path / "out", {"source": "karpathy",
                                    "karpathy": {"annotations": str(annotations), "image_root": str(image_root)}})
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("data", "expected"), [
    ({"source": "coco"}, "'data.source'"),
    ({"synthetic": {"n_val": 0}}, "'data.synthetic.n_val': input should be greater than 0"),
    ({"synthetic": {"n_train": -5}}, "'data.synthetic.n_train'"),
    ({"synthetic": {"image_size": 8}}, "'data.synthetic.image_size'"),
    ({"karpathy": {"skip_bad_images": "yes"}}, "'data.karpathy.skip_bad_images'"),
])
def test_params_validation_rejects_bad_data_params(data: dict, expected: str) -> None:
    with pytest.raises(McadError, match="^params.yaml: ") as info:
        parse_params({"data": data})
    assert expected in str(info.value)


def _run_stage(cwd: Path, params: dict) -> subprocess.CompletedProcess:
    (cwd / "my_params.yaml").write_text(json.dumps(params))  # JSON is YAML
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, str(STAGE), "--params", "my_params.yaml"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_stage_end_to_end(tmp_path: Path) -> None:
    done = _run_stage(tmp_path, {"data": TINY})
    assert done.returncode == 0, done.stderr
    for split in SPLITS:
        assert (tmp_path / "data" / "prepared" / f"{split}.jsonl").is_file()
    assert json.loads((tmp_path / "reports" / "data.json").read_text())["splits"]["train"]["images"] == 14
    assert (tmp_path / "reports" / "contact_sheet.png").is_file()


def test_stage_bad_annotations_fails_in_one_line_and_keeps_the_old_output(tmp_path: Path) -> None:
    old = tmp_path / "data" / "prepared"
    old.mkdir(parents=True)
    (old / "train.jsonl").write_text("old\n")
    done = _run_stage(tmp_path, {"data": {"source": "karpathy", "karpathy": {"annotations": "missing.json",
                                                                             "image_root": "."}}})
    assert done.returncode == 1
    assert done.stderr == "Error: missing.json: annotations file not found (data.karpathy.annotations)\n"
    assert [p.name for p in old.parent.iterdir()] == ["prepared"] and (old / "train.jsonl").read_text() == "old\n"
    assert not (tmp_path / "reports").exists()


def test_stage_help() -> None:
    from click.testing import CliRunner

    sys.path.insert(0, str(STAGE.parent))
    try:
        import prepare as stage
    finally:
        sys.path.remove(str(STAGE.parent))
    result = CliRunner().invoke(stage.main, ["--help"])
    assert result.exit_code == 0 and "--params" in result.output and "data/prepared" in result.output


def test_the_unpaired_pool_round_trips_and_a_bad_line_is_one_line(tmp_path: Path) -> None:
    pool = tmp_path / TEXTS_FILE
    assert read_texts(pool) == []  # a dataset may have no pool
    write_texts(pool, ["a red circle", "two squares"])
    assert read_texts(pool) == ["a red circle", "two squares"]
    pool.write_text(pool.read_text() + '{"caption": "x"}\n')
    with pytest.raises(McadError, match=r"texts.jsonl:3: expected a JSON object with 'text'$"):
        read_texts(pool)
