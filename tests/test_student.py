"""The student's shape contract, its tokenizer and its folder format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from student_fixtures import CAPTIONS, sample_inputs, tiny_student

from mcad_core.errors import McadError
from mcad_core.student.model import build_student, fold_batchnorm, load_student, params_m, save_student
from mcad_core.student.tokenizer import PAD_ID, StudentTokenizer


def test_shipped_config_is_phone_sized_and_outputs_unit_embeddings():
    model = build_student("mcad-student-tiny", vocab_size=120).eval()
    assert 0.1 <= params_m(model) <= 5.0
    ctx, dim = model.config.text.context_length, model.config.embed_dim
    ids = torch.zeros(3, ctx, dtype=torch.int32)
    ids[:, :5] = torch.randint(1, 120, (3, 5), dtype=torch.int32)
    with torch.no_grad():
        img, txt = model.encode_image(torch.rand(3, 3, 64, 64)), model.encode_text(ids)
    assert img.shape == txt.shape == (3, dim)
    assert torch.allclose(img.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert model.logit_scale.requires_grad


def test_padding_is_masked(tmp_path):
    model, tok = tiny_student(tmp_path)
    ids = torch.from_numpy(tok.encode(CAPTIONS[:2]))
    with torch.no_grad():
        before = model.encode_text(ids)
        model.text_tower.token_embedding.weight[PAD_ID] = torch.randn(32) * 5
        after = model.encode_text(ids)
    assert torch.allclose(before, after, atol=1e-5)


def test_fold_batchnorm_keeps_outputs(tmp_path):
    model, tok = tiny_student(tmp_path)
    images, _ = sample_inputs(tok)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        x = torch.from_numpy(images)
        assert torch.allclose(model.encode_image(x), folded.encode_image(x), atol=1e-5)


def test_tokenizer_encodes_fixed_length_int32_and_round_trips(tmp_path):
    tok = StudentTokenizer.train(CAPTIONS, context_length=6)
    ids = tok.encode(["A RED circle: zebra.", "a red circle left of a blue square"])
    assert ids.dtype == np.int32 and ids.shape == (2, 6)
    unk = tok._tok.token_to_id("[UNK]")
    # lowercased words and punctuation split; unknown word -> [UNK]; padded with 0; truncated
    assert list(ids[0]) == [tok._tok.token_to_id(w) for w in ["a", "red", "circle", ":"]] + [unk, tok._tok.token_to_id(".")]
    assert (ids[1] != PAD_ID).all()
    assert tok.encode(["red"])[0, 1:].tolist() == [PAD_ID] * 5
    tok.save(tmp_path / "tokenizer.json")
    again = StudentTokenizer.load(tmp_path / "tokenizer.json")
    assert again.vocab_size == tok.vocab_size and again.context_length == 6
    assert np.array_equal(again.encode(CAPTIONS), tok.encode(CAPTIONS))


def test_tokenizer_encodes_chunk_by_chunk_as_one_caption_at_a_time(monkeypatch):
    import mcad_core.student.tokenizer as tokenizer_module

    tok = StudentTokenizer.train(CAPTIONS, context_length=6)
    monkeypatch.setattr(tokenizer_module, "ENCODE_CHUNK", 2)  # 2, 2, 1 captions: chunks and a short tail
    captions = (CAPTIONS * 3)[:5]
    assert np.array_equal(tok.encode(captions), np.concatenate([tok.encode([c]) for c in captions]))
    assert tok.encode([]).shape == (0, 6)


def test_tokenizer_bad_file_is_one_line_error(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(McadError, match="tokenizer.json"):
        StudentTokenizer.load(bad)
    with pytest.raises(McadError, match="not found"):
        StudentTokenizer.load(tmp_path / "missing.json")


def test_student_folder_round_trip(tmp_path):
    model, tok = tiny_student(tmp_path)
    save_student(model, tok, tmp_path / "student")
    assert sorted(p.name for p in (tmp_path / "student").iterdir()) == ["config.json", "student.safetensors", "tokenizer.json"]
    loaded, tok2 = load_student(tmp_path / "student")
    images, ids = sample_inputs(tok)
    with torch.no_grad():
        for enc, x in (("encode_image", torch.from_numpy(images)), ("encode_text", torch.from_numpy(ids))):
            assert torch.equal(getattr(model, enc)(x), getattr(loaded, enc)(x))
    assert torch.equal(model.logit_scale, loaded.logit_scale)
    assert np.array_equal(tok2.encode(CAPTIONS), tok.encode(CAPTIONS))
    assert json.loads((tmp_path / "student" / "config.json").read_text())["vocab_size"] == tok.vocab_size


def test_student_folder_errors(tmp_path):
    model, tok = tiny_student(tmp_path)
    with pytest.raises(McadError, match="missing student.safetensors"):
        load_student(tmp_path)
    other = StudentTokenizer.train(CAPTIONS + ["zebra giraffe"], context_length=12)
    with pytest.raises(McadError, match="vocab"):
        save_student(model, other, tmp_path / "student")


def test_bad_config_is_one_line_error(tmp_path):
    with pytest.raises(McadError, match="not found"):
        build_student("no-such-student", 10)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "text": {"width": 30, "heads": 4}, "wat": 1}))
    with pytest.raises(McadError, match="wat"):
        build_student(bad, 10)
    bad.write_text(json.dumps({"name": "x", "text": {"width": 30, "heads": 4}}))
    with pytest.raises(McadError, match="divisible"):
        build_student(bad, 10)
