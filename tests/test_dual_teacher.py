"""The open_clip dual teacher: loading, encoding, saving, and training that resumes after a kill."""

import numpy as np
import pytest
import torch
from PIL import Image

from mcad_core.checkpoint import LAST
from mcad_core.errors import McadError
from mcad_core.teachers.dual import load_dual_teacher, load_saved_dual_teacher, save_dual_teacher
from mcad_core.teachers.dual_train import train_dual_teacher

MODEL = "mcad-dual-tiny"
CAPTIONS = ["a red circle", "a small blue square left of a green star", "there is a large yellow hexagon"]


def _images():
    rng = np.random.default_rng(0)
    sizes = [(64, 64), (64, 64), (80, 100)]  # the last goes through the resize / crop path
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teacher():
    return load_dual_teacher(MODEL, None, seed=1)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """24 embedded scenes on disk, laid out as a Karpathy dataset is: the images in their own
    folder, which the prepared folder's source.json names (so training must resolve paths
    through it, as real data needs)."""
    import json

    from mcad_core.data.manifest import SOURCE_FILE
    from mcad_core.data.synthetic import generate_split, write_split

    images, prepared = tmp_path_factory.mktemp("images"), tmp_path_factory.mktemp("prepared")
    records = write_split(generate_split("train", 24, 0, 64, 5, 3), images, "train", 64, progress=False)
    (prepared / SOURCE_FILE).write_text(json.dumps({"source": "karpathy", "image_root": str(images)}))
    return prepared, records


def test_encodings_are_unit_norm_and_use_the_model_preprocessing(teacher):
    images = _images()
    img, txt = teacher.encode_images(images), teacher.encode_texts(CAPTIONS)
    assert teacher.embed_dim == 128
    assert img.shape == (3, 128) and txt.shape == (3, 128)
    assert torch.allclose(img.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(txt.norm(dim=1), torch.ones(3), atol=1e-5)
    reference = torch.stack([teacher.preprocess(im) for im in images])
    assert torch.equal(teacher.normalize(teacher.image_pixels(images)).contiguous(), reference)


def test_checkpoint_file_loads_back_identically(teacher, tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": teacher.model.state_dict()}, path)
    again = load_dual_teacher(MODEL, str(path))
    assert torch.equal(again.encode_images(_images()), teacher.encode_images(_images()))
    assert torch.equal(again.encode_texts(CAPTIONS), teacher.encode_texts(CAPTIONS))
    assert again.fingerprint() == teacher.fingerprint() != load_dual_teacher(MODEL, None, seed=2).fingerprint()

    save_dual_teacher(teacher, tmp_path / "dual")
    saved = load_saved_dual_teacher(tmp_path / "dual")
    assert saved.model_name == MODEL and saved.fingerprint() == teacher.fingerprint()


def test_a_checkpoint_named_by_its_tag_gets_and_keeps_the_tags_preprocessing(teacher, tmp_path, monkeypatch):
    """open_clip applies a tag's preprocessing only when ``pretrained`` is the tag, and never its
    quick_gelu: a local checkpoint whose tag is named gets both, and the saved teacher keeps them
    (a tag with everything non-default, registered for the tiny model here)."""
    import json

    import open_clip

    tag = {"url": "", "hf_hub": "", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
           "interpolation": "bilinear", "resize_mode": "squash", "quick_gelu": True}
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, MODEL, {"mytag": tag})
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": teacher.model.state_dict()}, path)
    plain = load_dual_teacher(MODEL, str(path))
    tagged = load_dual_teacher(MODEL, str(path), preprocess_tag="mytag")
    got = json.loads(json.dumps(tagged.preprocess_cfg))
    assert {k: got[k] for k in ("mean", "std", "interpolation", "resize_mode")} == \
        {k: tag[k] for k in ("mean", "std", "interpolation", "resize_mode")}
    assert tagged.quick_gelu and not plain.quick_gelu
    assert not torch.allclose(tagged.encode_texts(CAPTIONS), plain.encode_texts(CAPTIONS))
    assert not torch.allclose(tagged.encode_images(_images()[2:]), plain.encode_images(_images()[2:]))  # squash
    assert tagged.fingerprint() != plain.fingerprint()

    save_dual_teacher(tagged, tmp_path / "dual")
    monkeypatch.delitem(open_clip.pretrained._PRETRAINED, MODEL)  # the saved folder needs the tag no more
    saved = load_saved_dual_teacher(tmp_path / "dual")
    assert json.dumps(saved.preprocess_cfg) == json.dumps(tagged.preprocess_cfg) and saved.quick_gelu
    assert torch.equal(saved.encode_images(_images()), tagged.encode_images(_images()))
    assert torch.equal(saved.encode_texts(CAPTIONS), tagged.encode_texts(CAPTIONS))
    assert saved.fingerprint() == tagged.fingerprint()
    with pytest.raises(McadError, match="teachers.dual.preprocess_tag: 'nope' is not an open_clip tag") as err:
        load_dual_teacher(MODEL, str(path), preprocess_tag="nope")
    assert "\n" not in str(err.value)


def test_bad_sources_are_one_line_errors(tmp_path, monkeypatch):
    import open_clip

    missing = tmp_path / "nope" / "weights.pt"
    cases = [
        ((MODEL, str(missing)), str(missing)),
        ((MODEL, "laion2b"), "laion2b"),
        (("no-such-model", None), "no-such-model"),
    ]
    for args, named in cases:
        with pytest.raises(McadError) as err:
            load_dual_teacher(*args)
        assert named in str(err.value) and "\n" not in str(err.value)

    def offline(*args, **kwargs):
        raise RuntimeError("hub unreachable\nmore detail")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    with pytest.raises(McadError, match="'openai'.*hub unreachable") as err:
        load_dual_teacher("RN50", "openai")
    assert "\n" not in str(err.value)
    with pytest.raises(McadError, match="teacher.json"):
        load_saved_dual_teacher(tmp_path / "no_dual")


def test_training_resumes_after_a_kill_to_the_same_weights(scenes, tmp_path, monkeypatch):
    root, records = scenes
    settings = dict(epochs=3, batch_size=8, lr=2e-3, seed=0, progress=False)

    whole = load_dual_teacher(MODEL, None)
    summary = train_dual_teacher(whole, records, root, out_dir=tmp_path / "a", **settings)
    assert summary["steps"] == 9 and len(summary["loss"]) == 3

    calls = {"n": 0}
    real_step = torch.optim.AdamW.step

    def dying_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # the second step of epoch 2: epoch 1's state is on disk
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train_dual_teacher(load_dual_teacher(MODEL, None), records, root, out_dir=tmp_path / "b", **settings)
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    assert torch.load(tmp_path / "b" / LAST, weights_only=False)["epoch"] == 1

    resumed = load_dual_teacher(MODEL, None)
    steps_run = {"n": 0}

    def counted_step(self, *args, **kwargs):
        steps_run["n"] += 1
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", counted_step)
    again = train_dual_teacher(resumed, records, root, out_dir=tmp_path / "b", **settings)
    assert steps_run["n"] == 6  # epochs 2 and 3 only: the saved state was loaded, not retrained from scratch
    assert again["steps"] == summary["steps"] and again["loss"] == summary["loss"]
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_zero_epochs_keeps_the_weights(teacher, scenes, tmp_path):
    root, records = scenes
    before = teacher.fingerprint()
    summary = train_dual_teacher(teacher, records, root, 0, 8, 1e-3, tmp_path, 0, progress=False,
                                 val_records=records)
    assert teacher.fingerprint() == before and summary["steps"] == 0
    assert 0 <= summary["val"]["t2i_r1"] <= 100 and "twin_acc" in summary["val"]
