"""Partial captions: what a caption asserts, which scenes make it true, and retrieval that counts
every true match."""

import numpy as np
import pytest
import torch

from mcad_core.data.claims import caption_matches, claim_holds
from mcad_core.data.manifest import flatten_captions, twin_index, twin_kinds
from mcad_core.data.synthetic import generate_split, manifest_record
from mcad_core.errors import McadError
from mcad_core.evaluation.metrics import embedding_metrics
from mcad_core.evaluation.retrieval import matched_retrieval_metrics, retrieval_metrics


def records(partial: float, n: int = 200) -> list[dict]:
    return [manifest_record(it, "x.png", 64) for it in generate_split("test", n, 0, 64, 5, 3, partial)]


def scene(objects, relation=None):
    boxes = [[4, 4, 12, 12], [40, 6, 52, 18], [8, 44, 18, 54]]
    rec = {"image_id": "s", "objects": [{"box": b, "size": z, "colour": c, "shape": s}
                                        for b, (z, c, s) in zip(boxes, objects)]}
    if relation:
        rec["relation"] = {"subject": 0, "object": 1, "relation": relation}
    return rec


def test_claims_hold_as_the_words_say():
    red, blue, pink = ("small", "red", "circle"), ("large", "blue", "square"), ("small", "pink", "star")
    three = scene([red, blue, pink], "left of")
    assert claim_holds({"objects": [red], "relation": None, "exact": False}, three)
    assert not claim_holds({"objects": [red], "relation": None, "exact": True}, three)  # "one small red circle"
    assert claim_holds({"objects": [blue, red], "relation": "right of", "exact": False}, three)  # the converse
    assert not claim_holds({"objects": [red, blue], "relation": "above", "exact": False}, three)
    assert claim_holds({"objects": [red, pink], "relation": "above", "exact": False}, three)  # from the boxes
    assert not claim_holds({"objects": [("small", "blue", "square")], "relation": None, "exact": False}, three)


def test_default_captions_carry_no_claims_and_partial_ones_match_other_scenes():
    assert caption_matches(records(0.0)) is None
    recs = records(0.6)
    m = caption_matches(recs)
    captions, own = flatten_captions(recs)
    assert m.shape == (len(captions), len(recs)) and m[np.arange(len(own)), own].all()
    assert (m.sum(1) > 1).mean() > 0.2  # partial captions truly describe several scenes
    full = [c for r in recs for c, cl in zip(r["captions"], r["claims"]) if len(cl["objects"]) == len(r["objects"])]
    assert len(full) < len(captions)


def test_a_twins_distinguishing_caption_never_matches_the_twin():
    recs = records(0.6)
    m, (_, own), twins = caption_matches(recs), flatten_captions(recs), twin_index(recs)
    full = np.array([len(cl["objects"]) == len(r["objects"]) for r in recs for cl in r["claims"]])
    has_twin = np.array([twins[i] >= 0 for i in own])
    assert not m[np.arange(len(own)), np.maximum(np.array(twins)[own], 0)][full & has_twin].any()


def test_matched_retrieval_equals_the_single_match_protocol_when_each_caption_has_one_image():
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(30, 8, generator=g), torch.randn(90, 8, generator=g)
    own = torch.arange(90) // 3
    one = np.zeros((90, 30), dtype=bool)
    one[np.arange(90), own.numpy()] = True
    assert matched_retrieval_metrics(img, txt, one, chunk_size=7) == pytest.approx(retrieval_metrics(img, txt, own))


def test_a_hit_on_any_true_match_counts():
    img = torch.eye(3)
    txt = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # caption 0 prefers image 1, caption 1 image 2
    only_own = np.array([[True, False, False], [False, False, True]])
    also_1 = np.array([[True, True, False], [False, False, True]])
    assert matched_retrieval_metrics(img, txt, only_own)["t2i_r1"] == 50.0
    assert matched_retrieval_metrics(img, txt, also_1)["t2i_r1"] == 100.0
    # i2t: image 0 (its caption ties with the other one) misses; image 1 becomes a query, and hits
    assert matched_retrieval_metrics(img, txt, only_own)["i2t_r1"] == 50.0
    assert matched_retrieval_metrics(img, txt, also_1)["i2t_r1"] == pytest.approx(200 / 3)
    with pytest.raises(McadError, match="matches: expected a bool array"):
        matched_retrieval_metrics(img, txt, also_1[:1])


def test_twin_accuracy_reads_only_the_captions_that_tell_twins_apart():
    recs = records(0.6)
    captions, own = flatten_captions(recs)
    m = caption_matches(recs)
    g = torch.Generator().manual_seed(1)
    img, txt = torch.randn(len(recs), 16, generator=g), torch.randn(len(captions), 16, generator=g)
    twins = twin_index(recs)
    partial_only = embedding_metrics(img, txt, own, twins, twin_kinds(recs), m)
    telling = [c for c, i in enumerate(own) if twins[i] < 0 or not m[c, twins[i]]]
    txt_told = txt.clone()
    txt_told[telling] = img[torch.tensor(own)[telling]]  # every telling caption now sits on its own image
    assert embedding_metrics(img, txt_told, own, twins, twin_kinds(recs), m)["twin_acc"] == 100.0
    assert partial_only["twin_acc"] < 100.0
