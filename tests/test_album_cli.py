"""`mcad index` / `mcad search`: the exported files alone (LiteRT, tokenizer.json, gallery file) find
the photos the PyTorch student finds, incrementally, without torch, and bad input is one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from student_fixtures import TINY_CONFIG

from mcad_core.album.cli import main
from mcad_core.errors import McadError

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES, N_QUERIES = 60, 50

TRAIN_STEPS = 200  # enough that top-1 margins (min ~0.01) dwarf the int8 gallery's rounding (~0.001)


def train_tiny_student(folder: Path, records: list[dict], images: np.ndarray):
    """The tiny test student trained (CLIP loss, all 60 scenes a batch) until its ranking means something:
    a random one embeds every scene alike (cosine 0.9996), so int8 rounding alone reorders it."""
    import torch

    from mcad_core.mcad.losses import clip_loss
    from mcad_core.student.model import build_student
    from mcad_core.student.tokenizer import StudentTokenizer

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


# Tests that take ``album`` are marked slow: the fixture trains and exports a tiny student (~17 s, once
# for the module). The others are fast and run without it.
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
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".lock")


# `mcad index` in a process of its own, each photo slowed down (the tiny test model embeds one in well
# under a millisecond) so that a test can act while it runs: kill it, read the gallery, write beside it.
SLOW_INDEX = """
import sys
import time

from mcad_core.album import index
from mcad_core.album.cli import main
from mcad_core.errors import McadError

decode, delay = index.model_input, float(sys.argv[1])
index.model_input = lambda path, size: time.sleep(delay) or decode(path, size)
main(sys.argv[2:])
"""


def start_index(album, photos: Path, gallery: Path, delay_s: float, save_every: int, logs: Path) -> subprocess.Popen:
    """A real `mcad index` process; its stdout and stderr go to ``logs``.out and ``logs``.err."""
    args = [sys.executable, "-c", SLOW_INDEX, str(delay_s), "index", str(photos), "--models", str(album["models"]),
            "--out", str(gallery), "--save-every", str(save_every), "--no-progress"]
    with open(logs.with_suffix(".out"), "w") as out, open(logs.with_suffix(".err"), "w") as err:
        return subprocess.Popen(args, stdout=out, stderr=err, env={**os.environ, "PYTHONPATH": str(ROOT)})


def wait_for(check: Callable[[], bool], what: str, procs: list[subprocess.Popen], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert all(p.poll() is None for p in procs), f"a process ended while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def stored_rows(gallery: Path, fingerprint: str) -> list[str]:
    """The ids a reader sees now (none before the first store)."""
    from mcad_core.runtime.gallery import open_gallery

    if not gallery.exists():
        return []
    with open_gallery(gallery, fingerprint) as g:
        return g.ids


def copy_photos(photos: list[Path], folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    return [Path(shutil.copy2(p, folder / p.name)) for p in photos]


@pytest.mark.slow
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

    from mcad_core.student.tokenizer import StudentTokenizer

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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_the_command_runs_without_torch(album, tmp_path):
    """The phone holds LiteRT, the tokenizer and the gallery: the command must never load torch."""
    script = f"""
import sys
from mcad_core.album.cli import main
from mcad_core.errors import McadError
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
    assert "INFO" not in proc.stderr and "XNNPACK" not in proc.stderr, proc.stderr  # LiteRT's log line
    assert (tmp_path / "r.png").is_file() and (tmp_path / "r.html").is_file()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["mcad"] == "mcad_core.album.cli:main"


@pytest.mark.slow
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
    from mcad_core.runtime.gallery import write_gallery

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


def test_hidden_files_and_folders_are_left_out(tmp_path):
    """Dot files are thumbnails, caches and trash (.thumbnails, .Trashes, ._IMG.jpg): never photos. Only
    the parts below the indexed folder count: a folder that is itself hidden is still indexed."""
    from PIL import Image

    from mcad_core.album.images import list_images

    root = tmp_path / ".album"
    for rel in ["a.jpg", "f.jpeg", "sub/b.PNG", "sub/c.webp", ".hidden.jpg", "._a.jpg", ".thumbs/d.jpg",
                "sub/.cache/e.png"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(root / rel)
    (root / "notes.txt").write_text("not a photo")
    assert list_images(root) == [root / "a.jpg", root / "f.jpeg", root / "sub/b.PNG", root / "sub/c.webp"]


def test_photos_are_read_upright_as_their_exif_orientation_says(tmp_path):
    """A phone stores a portrait photo sideways with an EXIF orientation: the model must see it upright."""
    from PIL import Image

    from mcad_core.album.images import model_input, open_rgb

    sideways = Image.new("RGB", (60, 30), (255, 0, 0))
    sideways.paste((0, 0, 255), (30, 0, 60, 30))  # stored: red left half, blue right half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to show": red on top, blue below
    path = tmp_path / "portrait.jpg"
    sideways.save(path, "JPEG", exif=exif, quality=95)
    upright = open_rgb(path)
    assert upright.size == (30, 60)
    assert np.abs(np.asarray(upright, int)[5, 15] - [255, 0, 0]).max() < 8
    assert np.abs(np.asarray(upright, int)[55, 15] - [0, 0, 255]).max() < 8
    x = model_input(path, 16)  # the centre square: red top half, blue bottom half
    assert np.abs(x[:, 1, 8] - [1, 0, 0]).max() < 0.03 and np.abs(x[:, 14, 8] - [0, 0, 1]).max() < 0.03


def test_litert_info_lines_are_dropped_and_its_other_lines_kept(capfd):
    """LiteRT writes "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." to fd 2 from C++ when an
    interpreter is built: dropped; a warning or error it writes still reaches the user."""
    from mcad_core.runtime.encoder import _without_native_info

    with _without_native_info():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nWARNING: kept\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "WARNING: kept\nafter\n"


@pytest.mark.slow
def test_reindexing_one_folder_keeps_the_rows_of_the_others(album, tmp_path):
    """One gallery, two folders: re-indexing the first (unchanged, or with a photo changed and one deleted)
    leaves the second's rows as they were; hidden files are never indexed."""
    from mcad_core.album.index import id_path
    from mcad_core.runtime.gallery import open_gallery

    photos = sorted(album["photos"].glob("*.png"))
    a, b = copy_photos(photos[:20], tmp_path / "a"), copy_photos(photos[20:40], tmp_path / "b")
    (tmp_path / "a" / ".thumbs").mkdir()
    shutil.copy(photos[50], tmp_path / "a" / ".thumbs" / "t.png")
    shutil.copy(photos[51], tmp_path / "a" / ".hidden.png")
    gallery = tmp_path / "album.gallery"
    assert "written; 20 photos" in index(album, tmp_path / "a", gallery).stdout
    out = index(album, tmp_path / "b", gallery).stdout
    assert "appended; 40 photos (20 added, 0 updated, 0 removed, 20 unchanged)" in out, out

    def rows() -> dict[str, tuple]:
        with open_gallery(gallery) as g:
            return {id_path(i): (g.codes[r].tobytes(), g.residual[r].tobytes(), float(g.scales[r]))
                    for r, i in enumerate(g.ids)}

    before = rows()
    assert sorted(before) == sorted(str(p) for p in a + b)
    out = index(album, tmp_path / "a", gallery).stdout
    assert "nothing to do; 40 photos (0 added, 0 updated, 0 removed, 40 unchanged)" in out, out
    shutil.copyfile(photos[45], a[0])
    a[1].unlink()
    out = index(album, tmp_path / "a", gallery).stdout
    assert "rewritten; 39 photos (0 added, 1 updated, 1 removed, 38 unchanged)" in out, out
    after = rows()
    assert {p: after[str(p)] for p in map(str, b)} == {p: before[str(p)] for p in map(str, b)}
    assert str(a[1]) not in after and after[str(a[0])] != before[str(a[0])]


@pytest.mark.slow
def test_index_and_search_refuse_what_they_cannot_use_in_one_line(album, tmp_path):
    from mcad_core.album.index import index_folder
    from mcad_core.album.model import ExportedModel
    from mcad_core.runtime.gallery import write_gallery

    gallery = tmp_path / "album.gallery"
    photo = next(album["photos"].glob("*.png"))
    one_line_error(index(album, photo, gallery, ok=False), f"{photo}: not a folder")
    one_line_error(index(album, tmp_path / "missing", gallery, ok=False), "missing: not a folder")
    folder_out = tmp_path / "out"
    folder_out.mkdir()
    one_line_error(index(album, album["photos"], folder_out, ok=False), f"{folder_out}: is a folder; --out names")
    model = ExportedModel(album["models"], "dynamic_int8")
    with pytest.raises(McadError, match="is a folder"):
        index_folder(album["photos"], model, folder_out, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    write_gallery(gallery, model.fingerprint, np.zeros((0, model.image.embed_dim), np.float32), [])
    one_line_error(mcad("search", "a red circle", "--gallery", gallery, "--models", album["models"], ok=False),
                   f"{gallery}: the gallery is empty")


@pytest.mark.slow
def test_two_index_runs_on_one_gallery_take_turns_and_keep_every_photo(album, tmp_path):
    """Two processes index two folders into one gallery at once: the second waits for the first (one line
    on stderr), and the gallery ends with every photo of both. Meanwhile a reader (what `mcad search`
    opens) always finds a valid gallery, never fewer rows than before."""
    from mcad_core.album.index import id_path
    from mcad_core.album.model import ExportedModel
    from mcad_core.runtime.gallery import gallery_lock, open_gallery

    photos = sorted(album["photos"].glob("*.png"))
    folders = {"a": copy_photos(photos[:30], tmp_path / "a"), "b": copy_photos(photos[30:], tmp_path / "b")}
    gallery, logs = tmp_path / "album.gallery", tmp_path / "logs"
    logs.mkdir()
    fingerprint = ExportedModel(album["models"], "dynamic_int8").fingerprint
    with gallery_lock(gallery):  # both start while the gallery is being written: both must wait their turn
        procs = [start_index(album, tmp_path / name, gallery, 0.01, 4, logs / name) for name in folders]
        wait_for(lambda: all("waiting for it to finish" in (logs / f"{n}.err").read_text() for n in folders),
                 "both runs to wait", procs)
    seen, reads = 0, 0
    while any(p.poll() is None for p in procs):
        ids = stored_rows(gallery, fingerprint)
        assert len(ids) >= seen and set(map(id_path, ids)) <= {str(p) for p in folders["a"] + folders["b"]}
        if ids:
            with open_gallery(gallery, fingerprint) as g:
                assert len(g.search(np.full(g.dim, 0.1, np.float32), 3)[0]) == min(3, len(g))
            reads += 1
        seen = len(ids)
    for name, proc in zip(folders, procs):
        assert proc.wait() == 0, (logs / f"{name}.err").read_text()
        err = (logs / f"{name}.err").read_text().strip()
        assert err == f"{gallery}: another `mcad index` is writing it; waiting for it to finish", err
    outs = sorted((logs / f"{n}.out").read_text() for n in folders)
    assert "appended; 60 photos (30 added" in outs[0] and "written; 30 photos (30 added" in outs[1], outs
    assert sorted(map(id_path, stored_rows(gallery, fingerprint))) == sorted(str(p) for p in folders["a"] + folders["b"])
    assert leftovers(tmp_path) == []
    print(f"{reads} reads while the two runs wrote")


@pytest.mark.slow
def test_a_killed_index_keeps_what_it_saved_and_the_rerun_embeds_only_the_rest(album, tmp_path, monkeypatch):
    """SIGKILL part-way, after some chunks were saved: the gallery is valid and holds whole chunks; the
    re-run embeds only the photos not yet stored, and ends with the same rows as one uninterrupted run."""
    from mcad_core.album import index as index_module
    from mcad_core.album.index import id_path
    from mcad_core.album.model import ExportedModel
    from mcad_core.runtime.gallery import open_gallery

    photos = copy_photos(sorted(album["photos"].glob("*.png")), tmp_path / "photos")
    gallery = tmp_path / "album.gallery"
    fingerprint = ExportedModel(album["models"], "dynamic_int8").fingerprint
    proc = start_index(album, tmp_path / "photos", gallery, 0.05, 5, tmp_path / "killed")
    wait_for(lambda: len(stored_rows(gallery, fingerprint)) >= 15, "three saved chunks", [proc])
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    saved = stored_rows(gallery, fingerprint)
    assert 15 <= len(saved) < N_IMAGES and len(saved) % 5 == 0, len(saved)
    assert [id_path(i) for i in saved] == [str(p) for p in photos[:len(saved)]]

    embedded = []
    decode = index_module.model_input
    monkeypatch.setattr(index_module, "model_input", lambda path, size: embedded.append(path) or decode(path, size))
    out = index(album, tmp_path / "photos", gallery).stdout
    missing = N_IMAGES - len(saved)
    assert f"appended; {N_IMAGES} photos ({missing} added, 0 updated, 0 removed, {len(saved)} unchanged)" in out, out
    assert embedded == photos[len(saved):]
    monkeypatch.undo()

    whole = tmp_path / "whole.gallery"
    index(album, tmp_path / "photos", whole)

    def rows(path: Path) -> dict[str, tuple]:
        with open_gallery(path, fingerprint) as g:
            return {i: (g.codes[r].tobytes(), g.residual[r].tobytes(), float(g.scales[r]), float(g.residual_scales[r]))
                    for r, i in enumerate(g.ids)}

    assert rows(gallery) == rows(whole)
    assert leftovers(tmp_path) == []
