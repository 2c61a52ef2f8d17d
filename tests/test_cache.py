"""The teacher cache: contents equal a fresh teacher forward, and stale caches are refused."""

from __future__ import annotations

import json

import pytest
import torch

from mcad_core.data.manifest import flatten_captions, load_image, read_manifest
from mcad_core.errors import McadError
from mcad_core.mcad.cache import build_cache, cache_fingerprint, load_tensors, save_tensors
from mcad_core.mcad.targets import load_cache
from tests.pipeline_fixtures import make_prepared, tiny_teachers


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    prepared = make_prepared(root)
    records = read_manifest(prepared / "train.jsonl")
    dual, cross = tiny_teachers(records)
    cache = build_cache(records, prepared, dual, cross, hard_k=4, batch_size=16, progress=False)
    return root, prepared, records, dual, cross, cache


def test_cache_equals_fresh_teacher_forward(setup):
    _, prepared, records, dual, cross, cache = setup
    captions, cap_image = flatten_captions(records)
    picks = [0, 7, len(records) - 1]
    images = [load_image(prepared, records[i]) for i in picks]
    with torch.no_grad():
        assert torch.allclose(cache["v"][picks], dual.encode_images(images), atol=1e-5)
        caps = [cap_image.index(i) for i in picks]
        assert torch.allclose(cache["t"][caps], dual.encode_texts([captions[c] for c in caps]), atol=1e-5)
        feats = cross.encode_images(images)
        h, m = cross.score(feats, [captions[c] for c in caps])
        assert torch.allclose(cache["h"][caps], h, atol=1e-5)
        assert torch.allclose(cache["m_own"][caps], m, atol=1e-5)
        # image 0 against the reference (first) caption of its first hard neighbour
        j = int(cache["nbr"][0, 0])
        _, m0j = cross.score(feats[:1], [records[j]["captions"][0]])
        assert torch.allclose(cache["m_img_nbr"][0, 0], m0j[0], atol=1e-5)


def test_twin_is_the_first_hard_neighbour(setup):
    _, _, records, *_, cache = setup
    ids = {r["image_id"]: i for i, r in enumerate(records)}
    with_twin = [(i, ids[r["twin"]]) for i, r in enumerate(records) if r.get("twin")]
    assert with_twin
    assert all(int(cache["nbr"][i, 0]) == t for i, t in with_twin)
    assert all(i not in cache["nbr"][i].tolist() for i in range(len(records)))


def test_stale_cache_is_refused(setup, tmp_path):
    root, prepared, records, dual, cross, cache = setup
    teachers = tmp_path / "teachers"
    teachers.mkdir()
    (teachers / "fingerprints.json").write_text(json.dumps({"dual": dual.fingerprint(), "cross": cross.fingerprint()}))
    fp = cache_fingerprint(dual.fingerprint(), cross.fingerprint(), prepared / "train.jsonl", 4)
    cache_dir = tmp_path / "cache"
    save_tensors(cache_dir / "train.safetensors", cache, fp)
    loaded = load_cache(cache_dir, "train", prepared, teachers, 4)
    assert torch.equal(loaded["v"], cache["v"])
    with pytest.raises(McadError, match="fingerprint mismatch.*hard_k"):
        load_cache(cache_dir, "train", prepared, teachers, 5)
    (teachers / "fingerprints.json").write_text(json.dumps({"dual": "other", "cross": cross.fingerprint()}))
    with pytest.raises(McadError, match=r"fingerprint mismatch \(dual changed\)"):
        load_cache(cache_dir, "train", prepared, teachers, 4)


def test_changed_manifest_is_refused(setup, tmp_path):
    _, prepared, records, dual, cross, cache = setup
    manifest = tmp_path / "train.jsonl"
    manifest.write_text((prepared / "train.jsonl").read_text())
    fp = cache_fingerprint("d", "c", manifest, 4)
    save_tensors(tmp_path / "c.safetensors", {"v": cache["v"]}, fp)
    manifest.write_text(manifest.read_text().replace("circle", "square", 1))
    with pytest.raises(McadError, match=r"manifest changed"):
        load_tensors(tmp_path / "c.safetensors", cache_fingerprint("d", "c", manifest, 4))


def test_missing_and_corrupt_cache_files(tmp_path):
    with pytest.raises(McadError, match="not found"):
        load_tensors(tmp_path / "absent.safetensors", {})
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(McadError, match="cannot read"):
        load_tensors(bad, {})


class _CountingCross:
    """Wraps a cross-encoder and records the largest set of image features alive at once."""

    def __init__(self, cross):
        self.cross, self.fused_dim, self.largest = cross, cross.fused_dim, 0

    def encode_images(self, images):
        self.largest = max(self.largest, len(images))
        return self.cross.encode_images(images)

    def score(self, feats, captions):
        return self.cross.score(feats, captions)


def test_chunked_cache_equals_the_cache_built_at_once(setup):
    _, prepared, records, dual, cross, at_once = setup  # built with the default chunk (> the split)
    counting = _CountingCross(cross)
    chunked = build_cache(records, prepared, dual, counting, hard_k=4, batch_size=16, progress=False,
                          chunk_images=5)
    assert counting.largest == 5 < len(records)
    assert chunked.keys() == at_once.keys()
    for name, tensor in at_once.items():
        assert chunked[name].shape == tensor.shape, name
        if tensor.dtype.is_floating_point:
            assert torch.allclose(chunked[name], tensor, atol=1e-5), name
        else:
            assert torch.equal(chunked[name], tensor), name
