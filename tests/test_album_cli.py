"""`mcad index` / `mcad search`: the exported files alone (LiteRT, tokenizer.json, gallery file) find
the photos the PyTorch student finds, incrementally, without torch, and bad input is one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from student_fixtures import TINY_CONFIG

from mcad_core.album.cli import main

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES, N_QUERIES = 60, 50

pytestmark = pytest.mark.slow  # trains and exports a tiny student (~17 s, once for the module)
TRAIN_STEPS = 200  # enough that top-1 margins (min ~0.01) dwarf the int8 gallery's rounding (~0.001)


def train_tiny_student(folder: Path, records: list[dict], images: np.ndarray):
    """The tiny test student trained (CLIP loss, all 60 scenes a batch) until its ranking means something:
    a random one embeds every scene alike (cosine 0.9996), so int8 rounding alone reorders it."""
    import torch

    from mcad_core.mcad.losses import clip_loss
    from mcad_core.models.student import build_student
    from mcad_core.models.student_tokenizer import StudentTokenizer

    captions = [c for rec in records for c in rec["captions"]]
    tok = StudentTokenizer.train(captions, context_length=16)
    config = folder / "tiny.json"
    config.write_text(json.dumps({**TINY_CONFIG, "text": {**TINY_CONFIG["text"], "context_length": 16}}))
    torch.manual_seed(0)
    model = build_student(config, tok.vocab_size)
    x = torch.from_numpy(images)
    ids = torch.from_numpy(tok.encode(captions)).view(len(records), 5, -1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rows, gen = torch.arange(len(records)), torch.Generator().manual_seed(0)
    for _ in range(TRAIN_STEPS):
        loss = clip_loss(*model(x, ids[rows, torch.randint(0, 5, (len(records),), generator=gen)]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), tok


@pytest.fixture(scope="module")
def album(tmp_path_factory, one_thread):
    """A small test split of generated 64 px scenes, and a tiny student trained on it and exported
    to fp32 and dynamic int8 (the model takes 32 px: indexing resizes as evaluation does)."""
    from mcad_core.data.synthetic import generate_split, write_split
    from mcad_core.export.pipeline import load_image_array
    from mcad_core.export.tflite import export_student

    root = tmp_path_factory.mktemp("album")
    items = generate_split("test", N_IMAGES, seed=0, image_size=64, captions_per_image=5, max_objects=3)
    records = write_split(items, root, "test", 64, progress=False)
    (root / "source.json").write_text(json.dumps({"source": "synthetic", "image_root": "."}))
    images = load_image_array(root, records, TINY_CONFIG["image"]["image_size"])
    model, tok = train_tiny_student(root, records, images)
    export_student(model, tok, root / "tflite", ["fp32", "dynamic_int8"], images[:16],
                   tok.encode([rec["captions"][0] for rec in records[:16]]))
    return {"model": model, "tok": tok, "models": root / "tflite", "images": images, "records": records,
            "photos": root / "images" / "test"}


def mcad(*args: str, input: str | None = None, ok: bool = True):
    result = CliRunner().invoke(main, [str(a) for a in args], input=input)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def index(album, photos: Path, out: Path, fmt: str = "dynamic_int8", models: Path | None = None, ok: bool = True):
    return mcad("index", photos, "--models", models or album["models"], "--format", fmt, "--out", out,
                "--no-progress", ok=ok)


def search_many(album, gallery: Path, queries: list[str], top: int = 10) -> list[dict]:
    """Every query through one interactive session (models loaded once), as JSON lines."""
    out = mcad("search", "--interactive", "--json", "--gallery", gallery, "--models", album["models"],
               "--top", top, input="\n".join(queries) + "\n").stdout
    lines = [json.loads(line) for line in out.splitlines()]
    assert [r["query"] for r in lines] == queries
    return lines


def one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 1, result.output
    err = result.stderr.strip()
    assert err.startswith("Error: ") and "\n" not in err and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in err, err
    return err


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_tflite_search_finds_what_the_pytorch_student_finds(album, tmp_path):
    import torch

    records = album["records"]
    queries = [rec["captions"][i % 5] for i, rec in enumerate(records[:N_QUERIES])]
    with torch.no_grad():  # the student as evaluated: images resized by the evaluation loader
        images = album["model"].encode_image(torch.from_numpy(album["images"]))
        texts = album["model"].encode_text(torch.from_numpy(album["tok"].encode(queries)))
    ref = (texts @ images.T).numpy()
    names = [Path(rec["image"]).name for rec in records]
    torch_top = [[names[j] for j in np.argsort(-row, kind="stable")[:10]] for row in ref]

    for fmt in ("fp32", "dynamic_int8"):
        gallery = tmp_path / f"{fmt}.gallery"
        index(album, album["photos"], gallery, fmt)
        got = [[Path(h["path"]).name for h in r["hits"]] for r in search_many(album, gallery, queries)]
        top1 = np.mean([g[0] == t[0] for g, t in zip(got, torch_top)])
        overlap = np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got, torch_top)])
        print(f"{fmt}: top-1 agreement {top1:.2f}, mean top-10 overlap {overlap:.3f}")
        if fmt == "fp32":
            assert top1 == 1.0
        else:
            assert overlap >= 0.9


def test_photos_are_cropped_as_the_student_is_evaluated():
    """PIL alone (no torchvision, which loads torch) gives the evaluation transform's exact pixels."""
    from PIL import Image

    from mcad_core.album.images import square_crop
    from mcad_core.data.loader import eval_transform

    rng = np.random.default_rng(0)
    for w, h in [(64, 64), (64, 48), (33, 97), (400, 31), *rng.integers(20, 300, (20, 2)).tolist()]:
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for size in (32, 64):
            assert np.array_equal(np.asarray(square_crop(im, size)).transpose(2, 0, 1), eval_transform(size)(im))


def test_a_query_of_unknown_words_is_told_apart_with_a_wordpiece_tokenizer_too():
    """[CLS] and [SEP] (a pretrained student's WordPiece tokenizer adds them) are not known words."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    from mcad_core.models.student_tokenizer import StudentTokenizer

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "red": 4, "circle": 5, "##s": 6, "a": 7}
    wp = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=True)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    wp.enable_padding(pad_id=0, pad_token="[PAD]", length=8)
    words = StudentTokenizer.train(["a red circle", "two red circles"], context_length=8)
    for tok in (StudentTokenizer(wp), words):
        ids, known, unknown = tok.encode_query("a Zebra circle")
        assert ids.dtype == np.int32 and ids.shape == (1, 8) and np.array_equal(ids, tok.encode("a Zebra circle"))
        assert (known, unknown) == (2, ["Zebra"])
        assert tok.encode_query("Zebra qq")[1:] == (0, ["Zebra", "qq"])
        assert tok.encode_query("  ")[1:] == (0, [])


def test_appending_photos_gives_the_same_gallery_as_indexing_them_at_once(album, tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree(album["photos"], photos)
    later = sorted(photos.glob("*.png"))[40:]
    held = tmp_path / "held"
    held.mkdir()
    for p in later:
        p.rename(held / p.name)
    grown, fresh = tmp_path / "grown.gallery", tmp_path / "fresh.gallery"
    assert "written; 40 photos" in index(album, photos, grown).stdout
    for p in later:
        (held / p.name).rename(p)
    assert "appended; 60 photos (20 added, 0 updated, 0 removed, 40 unchanged)" in index(album, photos, grown).stdout
    assert "nothing to do; 60 photos" in index(album, photos, grown).stdout
    index(album, photos, fresh)
    queries = [rec["captions"][0] for rec in album["records"][:10]]
    hits = [[r["hits"] for r in search_many(album, g, queries)] for g in (grown, fresh)]
    assert hits[0] == hits[1]  # same photos, same scores, same order

    # a changed photo replaces its row, a deleted one loses it: the gallery is rewritten
    first, second = sorted(photos.glob("*.png"))[:2]
    shutil.copyfile(later[0], first)
    second.unlink()
    out = index(album, photos, grown).stdout
    assert "rewritten; 59 photos (0 added, 1 updated, 1 removed, 58 unchanged)" in out, out
    hit = search_many(album, grown, [album["records"][40]["captions"][0]], top=60)[0]["hits"]
    scores = {Path(h["path"]).name: h["score"] for h in hit}
    assert second.name not in scores and scores[first.name] == pytest.approx(scores[later[0].name], abs=1e-6)


def test_results_print_with_time_split_and_render_offline(album, tmp_path):
    gallery = tmp_path / "album.gallery"
    index(album, album["photos"], gallery)
    png, page = tmp_path / "out" / "hits.png", tmp_path / "hits.html"
    out = mcad("search", "a small red circle left of a large blue square", "--gallery", gallery,
               "--models", album["models"], "--top", "5", "--png", png, "--html", page).stdout
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0].isdigit()]
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4, 5]
    assert all(Path(r[2]).parent.name == "test" for r in rows)
    assert "tokenize" in out and "encode" in out and "scan" in out
    from PIL import Image

    with Image.open(png) as im:
        assert im.width > 5 * 128
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 5 and "http" not in text.replace("http-equiv", "")


def test_the_command_runs_without_torch(album, tmp_path):
    """The phone holds LiteRT, the tokenizer and the gallery: the command must never load torch."""
    script = f"""
import sys
from mcad_core.album.cli import main
for args in (["index", {str(album['photos'])!r}, "--models", {str(album['models'])!r}, "--out", "g.gallery",
              "--no-progress"],
             ["search", "a red circle", "--gallery", "g.gallery", "--models", {str(album['models'])!r},
              "--png", "r.png", "--html", "r.html"]):
    try:
        main(args)
    except SystemExit as e:
        assert e.code == 0, e
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "litert_torch", "tensorflow"))
print("heavy modules:", bad)
sys.exit(1 if bad else 0)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "r.png").is_file() and (tmp_path / "r.html").is_file()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["mcad"] == "mcad_core.album.cli:main"


def test_bad_input_is_one_line_and_leaves_no_gallery(album, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    gallery = out / "album.gallery"

    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("not a photo")
    one_line_error(index(album, empty, gallery, ok=False), "no photos found")

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    one_line_error(index(album, broken, gallery, ok=False), "none of the 1 photos could be read", "a.jpg")
    assert not gallery.exists() and leftovers(out) == []

    # unreadable files beside good ones are skipped and listed, the rest is indexed
    mixed = tmp_path / "mixed"
    shutil.copytree(album["photos"], mixed)
    shutil.copy(broken / "a.jpg", mixed / "zz_broken.jpg")
    result = index(album, mixed, gallery)
    assert f"{N_IMAGES} photos" in result.stdout and "skipped 1 unreadable" in result.stderr
    assert "zz_broken.jpg" in result.stderr

    # a gallery from another model: refused by search and by index, and left as it was
    from mcad_core.export.gallery import write_gallery

    foreign = out / "foreign.gallery"
    write_gallery(foreign, "mcad-student:dynamic_int8:0123456789abcdef", np.eye(3, 32, dtype=np.float32),
                  ["x", "y", "z"])
    before = foreign.read_bytes()
    one_line_error(mcad("search", "a red circle", "--gallery", foreign, "--models", album["models"], ok=False),
                   "indexed by model mcad-student:dynamic_int8:0123456789abcdef", "re-index")
    one_line_error(index(album, album["photos"], foreign, ok=False), "0123456789abcdef")
    assert foreign.read_bytes() == before
    one_line_error(mcad("search", "a red circle", "--gallery", gallery, "--models", album["models"],
                        "--format", "fp32", ok=False), "indexed by model mcad-student:dynamic_int8:")

    # a models folder without its tokenizer
    no_tok = tmp_path / "no_tok"
    shutil.copytree(album["models"], no_tok)
    (no_tok / "tokenizer.json").unlink()
    one_line_error(mcad("search", "a red circle", "--gallery", gallery, "--models", no_tok, ok=False),
                   "tokenizer.json: tokenizer file not found")
    one_line_error(index(album, album["photos"], out / "new.gallery", models=no_tok, ok=False), "tokenizer.json")
    assert not (out / "new.gallery").exists()

    # queries that tokenize to nothing: say which words are unknown
    one_line_error(mcad("search", "zebra Giraffe!", "--gallery", gallery, "--models", album["models"], ok=False),
                   "no word of the query is in the model's vocabulary", "zebra", "Giraffe")
    one_line_error(mcad("search", "   ", "--gallery", gallery, "--models", album["models"], ok=False),
                   "the query is empty")
    one_line_error(mcad("search", "--gallery", gallery, ok=False), "give a QUERY, or --interactive")
    one_line_error(mcad("search", "a red circle", "--gallery", out / "missing.gallery",
                        "--models", album["models"], ok=False), "missing.gallery")
    # ...but a query with one known word searches, and the interactive session survives a bad line
    out_lines = mcad("search", "-i", "--json", "--gallery", gallery, "--models", album["models"],
                     input="zebra\na zebra circle\n")
    assert "Error: no word of the query" in out_lines.stderr
    (answer,) = [json.loads(line) for line in out_lines.stdout.splitlines()]
    assert answer["unknown"] == ["zebra"] and len(answer["hits"]) == 10
    assert leftovers(out) == []
