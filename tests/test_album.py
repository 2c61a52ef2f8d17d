"""The student's photo album: which training images it sees without captions."""

import numpy as np
import pytest

from mcad_core.data.album import split_album
from mcad_core.data.album import uncaptioned_mask as album_mask


def twins(n_pairs: int, n_single: int) -> list[int]:
    out = []
    for p in range(n_pairs):
        out += [2 * p + 1, 2 * p]
    return out + [-1] * n_single


@pytest.mark.parametrize("frac", [0.0, 0.3, 0.5, 0.8])
def test_album_size_and_determinism(frac):
    t = twins(40, 20)
    mask = album_mask(t, frac, seed=3)
    assert mask.sum() == round(frac * len(t))
    assert np.array_equal(mask, album_mask(t, frac, seed=3))


def test_no_twin_pair_loses_both_captions_until_half_the_images_are_album():
    t = twins(40, 20)
    mask = album_mask(t, 0.5, seed=0)
    pairs = mask[0:80:2].astype(int) + mask[1:80:2].astype(int)
    assert (pairs == 1).all()  # exactly one scene of each pair is album: labels never contrast twins
    assert mask[80:].sum() == 50 - 40
    assert not np.array_equal(mask, album_mask(t, 0.5, seed=1))


def test_split_album_hides_captions_and_pools_them_shuffled():
    t = twins(10, 0)
    records = [{"image_id": f"i{k}", "image": f"{k}.png", "captions": [f"c{k}a", f"c{k}b"], "twin": f"i{t[k]}",
                "objects": []} for k in range(20)]
    album = split_album(records, t, 0.5, pool_captions=1, seed=0)
    hidden = [r for r in album.photos if not r["captions"]]
    assert len(hidden) == 10 and all(set(r) == {"image_id", "image", "captions"} for r in album.photos)
    owners = [int(text[1:-1]) for text in album.texts]
    assert sorted(owners) == sorted(int(r["image_id"][1:]) for r in hidden)  # one caption of each hidden photo
    assert owners != sorted(owners)  # in an order that does not follow the photos
    assert album.truth is records
