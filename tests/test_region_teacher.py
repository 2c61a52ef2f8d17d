"""The embedded region teacher: segmentation, the CrossEncoderTeacher contract, save/load, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mcad_core.errors import McadError

TRAIN = {"epochs": 2, "batch_size": 32, "lr": 1e-3}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], list[dict]]:
    from mcad_core.data.synthetic import generate_split, write_split

    root = tmp_path_factory.mktemp("region_data")
    train = write_split(generate_split("train", 96, 0, 64, 3, 3), root, "train", 64, progress=False)
    val = write_split(generate_split("val", 24, 0, 64, 3, 3), root, "val", 64, progress=False)
    return root, train, val


@pytest.fixture(scope="module")
def teacher_dir(data: tuple[Path, list[dict], list[dict]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mcad_core.teachers.region.train import train_region_teacher

    root, train, val = data
    out = tmp_path_factory.mktemp("teacher") / "single"
    train_region_teacher(train, root, val, TRAIN, out, progress=False, threads=1)
    return out


def test_segmentation_finds_the_generated_objects() -> None:
    from mcad_core.data.synthetic import generate_split, render
    from mcad_core.teachers.region.segment import segment

    for item in generate_split("test", 60, 3, 64, 1, 3):
        segments = {s.colour: s for s in segment(render(item.scene, 64))}
        assert sorted(segments) == sorted(o.colour for o in item.scene.objects)
        for obj in item.scene.objects:
            found, truth = np.array(segments[obj.colour].box), np.array(obj.box(64))
            if obj.shape in ("triangle", "star"):
                # The manifest box is the circumscribed circle's; these shapes do not reach its lower edge.
                assert np.all(np.abs(found[:3] - truth[:3]) <= 2) and truth[3] - 8 <= found[3] <= truth[3]
            else:
                assert np.all(np.abs(found - truth) <= 2), (obj, found, truth)


def test_score_shapes_and_dependence(teacher_dir: Path, data: tuple[Path, list[dict], list[dict]]) -> None:
    from PIL import Image

    from mcad_core.teachers.region.teacher import RegionCrossEncoder

    root, _, val = data
    teacher = RegionCrossEncoder.load(teacher_dir)
    two = [r for r in val if len(r["objects"]) >= 2][:2]
    feats = teacher.encode_images([Image.open(root / r["image"]) for r in two])
    assert feats.shape[:2] == (2, teacher.pre.max_objects)
    h, m = teacher.score(feats, [two[0]["captions"][0], two[0]["captions"][0]])
    assert h.shape == (2, teacher.fused_dim) and m.shape == (2,)
    assert not np.allclose(h[0].numpy(), h[1].numpy()) and m[0] != m[1]  # the image matters
    h2, m2 = teacher.score(feats[:1].repeat(2, 1, 1), [two[0]["captions"][0], two[1]["captions"][0]])
    assert not np.allclose(h2[0].numpy(), h2[1].numpy()) and m2[0] != m2[1]  # the caption matters


def test_save_load_round_trip(teacher_dir: Path, data: tuple[Path, list[dict], list[dict]], tmp_path: Path) -> None:
    from PIL import Image

    from mcad_core.teachers.region.teacher import RegionCrossEncoder

    root, _, val = data
    teacher = RegionCrossEncoder.load(teacher_dir)
    teacher.save(tmp_path / "copy")
    again = RegionCrossEncoder.load(tmp_path / "copy")
    images, captions = [Image.open(root / r["image"]) for r in val[:4]], [r["captions"][0] for r in val[:4]]
    h1, m1 = teacher.score(teacher.encode_images(images), captions)
    h2, m2 = again.score(again.encode_images(images), captions)
    assert np.array_equal(h1.numpy(), h2.numpy()) and np.array_equal(m1.numpy(), m2.numpy())
    assert teacher.fingerprint() == again.fingerprint()


def test_missing_folder_is_a_one_line_error(tmp_path: Path) -> None:
    from mcad_core.teachers.region.teacher import RegionCrossEncoder

    with pytest.raises(McadError, match="nowhere") as err:
        RegionCrossEncoder.load(tmp_path / "nowhere")
    assert "\n" not in str(err.value)


def test_resume_after_kill_gives_the_same_weights(data: tuple[Path, list[dict], list[dict]], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from mcad_core.teachers.region.train import train_region_teacher

    root, train, _ = data
    train_region_teacher(train, root, [], TRAIN, tmp_path / "straight", progress=False, threads=1)
    killed = train_region_teacher(train, root, [], TRAIN, tmp_path / "resumed", progress=False, threads=1, max_steps=4)
    assert killed == {"stopped_at_step": 4} and not (tmp_path / "resumed").exists()
    resumed = train_region_teacher(train, root, [], TRAIN, tmp_path / "resumed", progress=False, threads=1)
    assert resumed["resumed_from_epoch"] == 1
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
