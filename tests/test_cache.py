"""The teacher cache: contents equal a fresh teacher forward, mining reads nothing a user lacks,
and stale caches are refused."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mcad_core.data.manifest import TEXTS_FILE, TRUTH_FILE, flatten_captions, load_image, read_manifest, read_texts
from mcad_core.errors import McadError
from mcad_core.mcad.batches import PairBatchSampler
from mcad_core.mcad.cache import build_cache, cache_fingerprint, load_tensors, nearest, save_tensors
from mcad_core.mcad.targets import load_cache
from tests.pipeline_fixtures import make_prepared, tiny_teachers

K, TEXT_K = 4, 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    prepared = make_prepared(root)
    records = read_manifest(prepared / "train.jsonl")
    texts = read_texts(prepared / TEXTS_FILE)
    dual, cross = tiny_teachers(read_manifest(prepared / "teacher.jsonl"))
    cache = build_cache(records, prepared, dual, cross, hard_k=K, text_k=TEXT_K, batch_size=16, texts=texts,
                        progress=False)
    return root, prepared, records, texts, dual, cross, cache


def all_texts(records, texts):
    return flatten_captions(records)[0] + texts


def pair_dict(cache, texts):
    """{(image, text string): logit} of every cached pair."""
    n = int(cache["n_texts"])
    return {(k // n, texts[k % n]): m for k, m in zip(cache["pair_key"].tolist(), cache["pair_m"].tolist())}


def test_the_album_has_uncaptioned_photos_and_a_pool(setup):
    _, prepared, records, texts, *_ = setup
    bare = [r for r in records if not r["captions"]]
    assert bare and texts and all(set(r) == {"image_id", "image", "captions"} for r in records)
    truth = {r["image_id"]: r for r in read_manifest(prepared / TRUTH_FILE)}
    hidden = {c for r in bare for c in truth[r["image_id"]]["captions"]}
    assert set(texts) <= hidden  # the pool holds hidden captions, not in photo order
    assert texts != [truth[r["image_id"]]["captions"][0] for r in bare if truth[r["image_id"]]["captions"][0] in texts]


def test_cache_equals_fresh_teacher_forward(setup):
    _, prepared, records, texts, dual, cross, cache = setup
    every = all_texts(records, texts)
    captioned = next(i for i, r in enumerate(records) if r["captions"])
    images = [load_image(prepared, records[i]) for i in (0, captioned)]
    with torch.no_grad():
        assert torch.allclose(cache["v"][[0, captioned]], dual.encode_images(images), atol=1e-5)
        probe = [0, len(every) - 1]  # a caption and a pool text
        assert torch.allclose(cache["t"][probe], dual.encode_texts([every[j] for j in probe]), atol=1e-5)
        slot = int((cache["slot_image"] == captioned).nonzero()[0])
        feats = cross.encode_images(images[1:])
        h, m = cross.score(feats, [every[int(cache["slot_text"][slot])]])
        assert torch.allclose(cache["slot_h"][slot], h[0], atol=1e-5) and torch.allclose(cache["slot_m"][slot], m[0], atol=1e-5)
        j = int(cache["nbr"][captioned, 0])
        pairs = pair_dict(cache, every)
        for text in (every[int(t)] for t in cache["slot_text"][cache["slot_image"] == j]):
            _, mj = cross.score(feats, [text])
            assert abs(pairs[(captioned, text)] - float(mj[0])) < 1e-4


def test_slots_are_every_caption_and_one_pick_per_uncaptioned_photo(setup):
    _, prepared, records, texts, dual, cross, cache = setup
    every = all_texts(records, texts)
    labelled = cache["slot_labelled"]
    captions, cap_image = flatten_captions(records)
    assert sorted(cache["slot_text"][labelled].tolist()) == list(range(len(captions)))
    assert torch.equal(cache["slot_image"][labelled], torch.tensor(cap_image)[cache["slot_text"][labelled]])
    bare = [i for i, r in enumerate(records) if not r["captions"]]
    assert cache["slot_image"][~labelled].tolist() == bare
    # each pick is the cross-encoder's first among the dual teacher's TEXT_K nearest texts
    candidates = nearest(cache["v"][bare], cache["t"], TEXT_K)
    pairs = pair_dict(cache, every)
    for row, (i, pick) in enumerate(zip(bare, cache["slot_text"][~labelled].tolist())):
        scores = [pairs[(i, every[j])] for j in candidates[row].tolist()]
        assert pairs[(i, every[pick])] == max(scores)


def test_hard_pairs_have_logits_both_ways_for_every_slot_text(setup):
    _, _, records, texts, *_, cache = setup
    every = all_texts(records, texts)
    pairs = pair_dict(cache, every)
    slot_texts = {}
    for i, t in zip(cache["slot_image"].tolist(), cache["slot_text"].tolist()):
        slot_texts.setdefault(i, []).append(every[t])
    for i in range(len(records)):
        assert i not in cache["nbr"][i].tolist()
        for j in cache["nbr"][i].tolist():
            assert all((i, t) in pairs for t in slot_texts[j]) and all((j, t) in pairs for t in slot_texts[i])


def test_pool_order_and_twin_fields_do_not_change_what_the_student_trains_on(setup):
    """Reordering the unpaired pool, or putting the generator's twin links back into the records,
    leaves slots, targets, pair logits and batches the same (up to the reorder of text ids)."""
    _, prepared, records, texts, dual, cross, cache = setup
    reordered = texts[::-1]
    other = build_cache(records, prepared, dual, cross, hard_k=K, text_k=TEXT_K, batch_size=16, texts=reordered,
                        progress=False)
    truth = {r["image_id"]: r for r in read_manifest(prepared / TRUTH_FILE)}
    with_twins = [{**r, "twin": truth[r["image_id"]]["twin"], "objects": truth[r["image_id"]]["objects"]}
                  for r in records]
    twinned = build_cache(with_twins, prepared, dual, cross, hard_k=K, text_k=TEXT_K, batch_size=16, texts=texts,
                          progress=False)
    for name, tensor in cache.items():
        assert torch.equal(twinned[name], tensor), name
    a, b = all_texts(records, texts), all_texts(records, reordered)
    assert [a[j] for j in cache["slot_text"].tolist()] == [b[j] for j in other["slot_text"].tolist()]
    for name in ("v", "slot_image", "slot_labelled", "nbr"):
        assert torch.equal(other[name], cache[name]), name
    for name in ("slot_h", "slot_m"):
        assert torch.allclose(other[name], cache[name], atol=1e-6), name
    assert torch.allclose(other["t"][other["slot_text"]], cache["t"][cache["slot_text"]], atol=1e-6)
    pa, pb = pair_dict(cache, a), pair_dict(other, b)
    assert pa.keys() == pb.keys() and all(abs(pa[k] - pb[k]) < 1e-5 for k in pa)

    def batches(c):
        counts = torch.bincount(c["slot_image"], minlength=len(records)).tolist()
        return PairBatchSampler(counts, 8, slot_labelled=c["slot_labelled"].numpy(), hard_neighbours=c["nbr"].numpy(),
                                hard_batch_frac=1.0, seed=3).batches(0)

    for x, y in zip(batches(cache), batches(other), strict=True):
        assert np.array_equal(x.images, y.images) and np.array_equal(x.slots, y.slots)


def test_stale_cache_is_refused(setup, tmp_path):
    root, prepared, records, texts, dual, cross, cache = setup
    teachers = tmp_path / "teachers"
    teachers.mkdir()
    (teachers / "fingerprints.json").write_text(json.dumps({"dual": dual.fingerprint(), "cross": cross.fingerprint()}))
    fp = cache_fingerprint(dual.fingerprint(), cross.fingerprint(), prepared / "train.jsonl", K, TEXT_K,
                           prepared / TEXTS_FILE)
    cache_dir = tmp_path / "cache"
    save_tensors(cache_dir / "train.safetensors", cache, fp)
    params = SimpleNamespace(hard_k=K, text_k=TEXT_K)
    loaded = load_cache(cache_dir, "train", prepared, teachers, params)
    assert torch.equal(loaded["v"], cache["v"])
    with pytest.raises(McadError, match="fingerprint mismatch.*hard_k"):
        load_cache(cache_dir, "train", prepared, teachers, SimpleNamespace(hard_k=K + 1, text_k=TEXT_K))
    with pytest.raises(McadError, match="fingerprint mismatch.*text_k"):
        load_cache(cache_dir, "train", prepared, teachers, SimpleNamespace(hard_k=K, text_k=TEXT_K + 1))
    (teachers / "fingerprints.json").write_text(json.dumps({"dual": "other", "cross": cross.fingerprint()}))
    with pytest.raises(McadError, match=r"fingerprint mismatch \(dual changed\)"):
        load_cache(cache_dir, "train", prepared, teachers, params)


def test_changed_manifest_or_pool_is_refused(setup, tmp_path):
    _, prepared, records, texts, dual, cross, cache = setup
    manifest, pool = tmp_path / "train.jsonl", tmp_path / "texts.jsonl"
    manifest.write_text((prepared / "train.jsonl").read_text())
    pool.write_text((prepared / TEXTS_FILE).read_text())
    fp = cache_fingerprint("d", "c", manifest, K, TEXT_K, pool)
    save_tensors(tmp_path / "c.safetensors", {"v": cache["v"]}, fp)
    pool.write_text("".join(reversed(pool.read_text().splitlines(keepends=True))))
    with pytest.raises(McadError, match=r"texts changed"):
        load_tensors(tmp_path / "c.safetensors", cache_fingerprint("d", "c", manifest, K, TEXT_K, pool))
    manifest.write_text(manifest.read_text().replace("images/", "images//", 1))
    with pytest.raises(McadError, match=r"manifest, texts changed"):
        load_tensors(tmp_path / "c.safetensors", cache_fingerprint("d", "c", manifest, K, TEXT_K, pool))


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
    _, prepared, records, texts, dual, cross, at_once = setup  # built with the default chunk (> the split)
    counting = _CountingCross(cross)
    chunked = build_cache(records, prepared, dual, counting, hard_k=K, text_k=TEXT_K, batch_size=16, texts=texts,
                          progress=False, chunk_images=5)
    assert counting.largest == 5 < len(records)
    assert chunked.keys() == at_once.keys()
    for name, tensor in at_once.items():
        assert chunked[name].shape == tensor.shape, name
        if tensor.dtype.is_floating_point:
            assert torch.allclose(chunked[name], tensor, atol=1e-5), name
        else:
            assert torch.equal(chunked[name], tensor), name
