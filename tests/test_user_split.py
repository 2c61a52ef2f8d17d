"""The student's train split as a user has it: which photos it sees without captions, or with another's."""

import numpy as np
import pytest

from mcad_core.data.user_split import mismatch_order, uncaptioned_mask, user_split


def twins(n_pairs: int, n_single: int) -> list[int]:
    out = []
    for p in range(n_pairs):
        out += [2 * p + 1, 2 * p]
    return out + [-1] * n_single


@pytest.mark.parametrize("frac", [0.0, 0.3, 0.5, 0.8])
def test_uncaptioned_share_and_determinism(frac):
    t = twins(40, 20)
    mask = uncaptioned_mask(t, frac, seed=3)
    assert mask.sum() == round(frac * len(t))
    assert np.array_equal(mask, uncaptioned_mask(t, frac, seed=3))


def test_no_twin_pair_loses_both_captions_until_half_the_photos_are_uncaptioned():
    t = twins(40, 20)
    mask = uncaptioned_mask(t, 0.5, seed=0)
    pairs = mask[0:80:2].astype(int) + mask[1:80:2].astype(int)
    assert (pairs == 1).all()  # exactly one scene of each pair is uncaptioned: labels never contrast twins
    assert mask[80:].sum() == 50 - 40
    assert not np.array_equal(mask, uncaptioned_mask(t, 0.5, seed=1))


def test_user_split_hides_captions_and_pools_them_shuffled():
    t = twins(10, 0)
    records = [{"image_id": f"i{k}", "image": f"{k}.png", "captions": [f"c{k}a", f"c{k}b"], "twin": f"i{t[k]}",
                "objects": []} for k in range(20)]
    album = user_split(records, t, 0.5, pool_captions=1, mismatched_frac=0.0, seed=0)
    hidden = [r for r in album.photos if not r["captions"]]
    assert len(hidden) == 10 and all(set(r) == {"image_id", "image", "captions"} for r in album.photos)
    owners = [int(text[1:-1]) for text in album.texts]
    assert sorted(owners) == sorted(int(r["image_id"][1:]) for r in hidden)  # one caption of each hidden photo
    assert owners != sorted(owners)  # in an order that does not follow the photos
    assert album.truth is records


def test_mismatched_photos_show_another_captioned_photos_captions():
    t = twins(10, 0)
    records = [{"image_id": f"i{k}", "image": f"{k}.png", "captions": [f"c{k}a", f"c{k}b"]} for k in range(20)]
    user = user_split(records, t, 0.5, pool_captions=1, mismatched_frac=0.4, seed=0)
    shown = [(k, r["captions"]) for k, r in enumerate(user.photos) if r["captions"]]
    wrong = [(k, caps) for k, caps in shown if caps != records[k]["captions"]]
    assert len(wrong) == 4  # 40% of the 10 captioned photos
    owners = sorted(int(caps[0][1:-1]) for _, caps in wrong)
    assert owners == sorted(k for k, _ in wrong)  # their captions were shuffled among themselves
    assert user.truth is records and user.texts == user_split(records, t, 0.5, 1, 0.0, seed=0).texts


@pytest.mark.parametrize("frac", [0.0, 0.5, 1.0])
def test_mismatch_order_moves_exactly_the_chosen_share(frac):
    captioned = np.arange(30) % 3 != 0  # 20 captioned
    order = mismatch_order(captioned, frac, seed=4)
    moved = np.flatnonzero(order != np.arange(30))
    assert len(moved) == round(frac * 20) and captioned[moved].all() and captioned[order[moved]].all()
    assert sorted(order) == list(range(30))  # a permutation: no caption set is lost or doubled
