"""Evaluation reports: twin accuracy per twin kind (embeddings and the cross-encoder re-rank), the
compared metrics, the results table and the twin figure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mcad_core.errors import McadError
from mcad_core.data.manifest import twin_index, twin_kinds
from mcad_core.evaluation.metrics import embedding_metrics
from mcad_core.evaluation.report import compared_metrics, plot_twins, results_markdown
from mcad_core.teachers.report import rerank_metrics

# Four images in two minimal pairs: I0/I1 swap colours, I2/I3 mirror their relation; I4 has no twin.
RECORDS = [
    {"image_id": "a", "twin": "b", "twin_kind": "colour"},
    {"image_id": "b", "twin": "a", "twin_kind": "colour"},
    {"image_id": "c", "twin": "d", "twin_kind": "relation"},
    {"image_id": "d", "twin": "c", "twin_kind": "relation"},
    {"image_id": "e", "twin": None},
]


def test_twin_index_and_kinds_read_the_manifest():
    assert twin_index(RECORDS) == [1, 0, 3, 2, -1]
    assert twin_kinds(RECORDS) == ["colour", "colour", "relation", "relation", None]
    assert twin_kinds([{"image_id": "x", "captions": ["k"]}]) == [None]  # Karpathy: no twins, no kinds


def test_twin_accuracy_per_kind_hand_case():
    images = np.eye(5, dtype=np.float32)
    # One caption per image, scored against its own image and its twin:
    #   c0 (I0): own 1 > twin 0, right   c1 (I1): own 1 > twin 0, right         -> colour 100
    #   c2 (I2): own 1 > twin 0, right   c3 (I3): reads like I2, own 0 < twin 1 -> relation 50
    #   c4 (I4): no twin, counts nowhere                                        -> twin_acc 75
    captions = images[[0, 1, 2, 2, 4]]
    cap_image = [0, 1, 2, 3, 4]
    got = embedding_metrics(images, captions, cap_image, twin_index(RECORDS), twin_kinds(RECORDS))
    assert (got["twin_acc"], got["twin_colour"], got["twin_relation"]) == (75.0, 100.0, 50.0)
    assert "twin_size" not in got  # no caption's image has a size twin
    # Positional calls without kinds (the training loop's) keep the old keys.
    plain = embedding_metrics(images, captions, cap_image, twin_index(RECORDS))
    assert plain == {k: v for k, v in got.items() if k not in ("twin_colour", "twin_relation")}
    assert "twin_acc" not in embedding_metrics(images, captions, cap_image, [-1] * 5, [None] * 5)
    with pytest.raises(McadError, match="twin_kind"):
        embedding_metrics(images, captions, cap_image, twin_index(RECORDS), ["colour"])


class _TableCrossEncoder:
    """A cross-encoder whose pair logits come from a table: image features are the image's index,
    read back from the grey level it was drawn with."""

    def __init__(self, logits: dict[str, list[float]]):
        self.logits = logits

    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        return torch.tensor([[np.asarray(im)[0, 0, 0] // 40] for im in images])

    def score(self, feats: torch.Tensor, captions: list[str]) -> tuple[None, torch.Tensor]:
        return None, torch.tensor([self.logits[c][int(i)] for c, i in zip(captions, feats[:, 0])])


def test_rerank_twin_accuracy_per_kind(tmp_path: Path):
    (tmp_path / "source.json").write_text(json.dumps({"source": "synthetic", "image_root": "."}))
    records = []
    for i, rec in enumerate(RECORDS):
        Image.fromarray(np.full((4, 4, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
        records.append({**rec, "image": f"{i}.png", "captions": [f"c{i}"]})
    # Cross-encoder logits of each caption with images I0..I4. Own vs twin:
    #   c0 2 > 1 and c1 2 > 0: colour 100;  c2 1 = 1 (a tie, half) and c3 0 < 3: relation 25
    logits = {"c0": [2, 1, 0, 0, 0], "c1": [0, 2, 0, 0, 0], "c2": [0, 0, 1, 1, 0], "c3": [0, 0, 3, 0, 0],
              "c4": [0, 0, 0, 0, 1]}
    emb = torch.eye(5)
    got = rerank_metrics(_TableCrossEncoder(logits), emb, emb, records, tmp_path, [f"c{i}" for i in range(5)],
                         list(range(5)), k=2)
    assert (got["twin_acc"], got["twin_colour"], got["twin_relation"]) == (62.5, 100.0, 25.0)
    assert "twin_size" not in got


RESULTS = {
    "mcad": {"i2t_r1": 60.9, "i2t_r5": 91.1, "i2t_r10": 96.4, "t2i_r1": 57.9, "t2i_r5": 98.14, "t2i_r10": 99.76,
             "rsum": 504.2, "twin_acc": 67.83, "twin_colour": 70.0, "twin_size": 80.5, "twin_relation": 52.25,
             "params_m": 0.395},
    "karpathy_like": {"i2t_r1": 10.0, "i2t_r5": 20.0, "i2t_r10": 30.0, "t2i_r1": 10.0, "t2i_r5": 20.0,
                      "t2i_r10": 30.0, "rsum": 120.0, "params_m": 1.0},
}


def test_results_markdown_has_the_twin_columns_after_rsum():
    header, rule, mcad, other = results_markdown(RESULTS).splitlines()
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols[cols.index("rsum"):] == ["rsum", "twin_acc", "twin_colour", "twin_size", "twin_relation", "params_m"]
    assert rule.count("|---") == len(cols)
    assert "| 504.20 | 67.83 | 70.00 | 80.50 | 52.25 | 0.40 |" in mcad
    assert "| 120.00 | – | – | – | – | 1.00 |" in other


def test_compared_metrics_keep_rsum_and_twin_accuracies_only():
    assert compared_metrics(RESULTS) == {
        "mcad": {"rsum": 504.2, "twin_acc": 67.83, "twin_colour": 70.0, "twin_size": 80.5, "twin_relation": 52.25},
        "karpathy_like": {"rsum": 120.0},
    }


@pytest.mark.parametrize("results", [RESULTS, {"karpathy_like": RESULTS["karpathy_like"]}])
def test_plot_twins_writes_a_png(tmp_path: Path, results: dict):
    plot_twins(results, tmp_path / "twins.png")
    assert (tmp_path / "twins.png").read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in tmp_path.iterdir()] == ["twins.png"]  # no temporary file left behind
