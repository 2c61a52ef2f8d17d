"""Image sources: the DataLoader path gives the preloaded path's pixels and embeddings, and the
open_clip-style transforms crop as open_clip does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mcad_core.data.images import MemoryImages, StreamedImages, in_order, load_images_uint8
from mcad_core.data.loader import eval_transform, train_transform
from mcad_core.data.manifest import flatten_captions, read_manifest
from mcad_core.student.model import encode_all, encode_texts_torch
from mcad_core.student.model import StudentTokenizer, build_student
from tests.pipeline_fixtures import make_prepared, tiny_student_config


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    prepared = make_prepared(root, n_train=8, n_val=20, n_test=8)
    return root, prepared, read_manifest(prepared / "val.jsonl")


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_batches_equal_the_preloaded_ones(split, workers):
    _, prepared, records = split
    memory = MemoryImages(load_images_uint8(prepared, records, 64, progress=False))
    streamed = StreamedImages(prepared, records, 64, workers=workers)
    batches = [[3, 0, 7], [19, 2], list(range(20))]
    for a, b in zip(memory.batches(batches), streamed.batches(batches), strict=True):
        assert a.dtype == b.dtype == torch.uint8 and torch.equal(a, b)


def test_streamed_path_gives_the_preloaded_embeddings(split):
    root, prepared, records = split
    captions, _ = flatten_captions(records)
    tok = StudentTokenizer.train(captions, context_length=24)
    torch.manual_seed(0)
    model = build_student(tiny_student_config(root), tok.vocab_size).eval()
    ids = torch.from_numpy(tok.encode(captions))
    f_mem, g_mem = encode_all(model, MemoryImages(load_images_uint8(prepared, records, 64, progress=False)), ids,
                              batch_size=7)
    f_str, g_str = encode_all(model, StreamedImages(prepared, records, 64, workers=1), ids, batch_size=7)
    assert torch.equal(f_mem, f_str) and torch.equal(g_mem, g_str)
    with torch.inference_mode():  # captions in batches of 7, in order, as the whole split at once
        assert torch.allclose(g_mem, encode_texts_torch(model, ids).float(), atol=1e-6)


def _striped(w: int, h: int) -> Image.Image:
    """Red left quarter, blue right quarter, green middle: a centre crop keeps only green."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 4, 0] = 255
    a[:, w // 4 : 3 * w // 4, 1] = 255
    a[:, 3 * w // 4 :, 2] = 255
    return Image.fromarray(a)


def test_eval_transform_resizes_the_shorter_side_and_centre_crops():
    out = eval_transform(32)(_striped(1000, 375))  # a wide landscape photo
    assert out.shape == (3, 32, 32) and out.dtype == np.uint8
    assert out[1].min() > 200 and out[0].max() < 60 and out[2].max() < 60  # only the green middle is left
    same = np.asarray(_striped(32, 32)).transpose(2, 0, 1)
    assert np.array_equal(eval_transform(32)(_striped(32, 32)), same)  # right-sized images pass unchanged


def test_train_transform_is_a_seeded_random_crop_without_flips():
    img = _striped(120, 90)
    torch.manual_seed(0)
    a = [train_transform(48)(img) for _ in range(3)]
    torch.manual_seed(0)
    b = [train_transform(48)(img) for _ in range(3)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], a[1])
    for x in a:  # red stays left of blue: no horizontal flip
        assert x[0, :, :4].mean() > x[2, :, :4].mean() and x[2, :, -4:].mean() > x[0, :, -4:].mean()


def test_in_order_covers_every_index_once():
    assert [i for b in in_order(10, 4) for i in b] == list(range(10))
