"""A rehearsal of the real-data path without the real data (``scripts/rehearse_scale.py``).

It builds what a user of the README's "Real teachers and data" section would have on disk:
- a Flickr30K-shaped Karpathy dataset: N JPEG photos of 500 x 375 (the generator's scenes drawn
  at 375 px on a 500 px wide canvas), five captions each, ``dataset_flickr30k.json``;
- teachers with random weights, saved as a user saves downloaded ones: an open_clip ViT
  checkpoint file and a BLIP ITM folder with a WordPiece vocabulary. ``arch="real"``: real size
  (open_clip ``ViT-B-16``; ``BlipConfig()`` defaults: ViT-B/16 at 384 px, BERT-base with
  cross-attention), the GPU run. ``arch="shrunk"``: the same architectures, narrow and shallow at
  64 px (``mcad-dual-vit-tiny``, :func:`shrunk_blip_config`), so 2 CPU cores score thousands of
  images and the memory's growth with N shows above the allocator's noise;
- the student's pretrained parts from their packages, or (``student_parts="random"``, where the
  packages are absent) random ones of the same shape in a local Hugging Face folder; shrunk: the
  same towers (EfficientNet-Lite0, BERT) random, narrow, at 64 px;
and runs the pipeline's stage scripts on it, each in its own process, measuring wall time and
peak memory (of the main process, and of the whole process tree with its DataLoader workers).
The checkout whose stages and config it runs is an argument (``repo``), not this file's location.

:func:`held_bytes` is the docs' memory formula per stage, computed from what the run wrote
(cache and fused files, manifests, split sizes); :func:`growth_table` sets its growth per image
beside the measured one, fitted over the sizes with the fit's noise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from mcad_core.paths import CACHE, CHECKPOINTS, FUSED, PREPARED

PHOTO_W, PHOTO_H = 500, 375
CAPTIONS = 5
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
STAGES = ("prepare", "teachers", "cache", "fuse", "distill", "evaluate", "export")
# The open_clip model and BLIP input size of each teacher size (the BLIP shape: shrunk_blip_config).
ARCHS = {"real": {"clip": "ViT-B-16", "blip_px": 384}, "shrunk": {"clip": "mcad-dual-vit-tiny", "blip_px": 64}}
SHRUNK_WIDTH = 64  # hidden width of every shrunk transformer (BLIP vision / text, the student's BERT)


def split_sizes(n: int, held_out: int = 0) -> dict[str, int]:
    """``held_out`` val and test images each, the rest train; 0: Flickr30K's proportions at N = 31,000
    (29k / 1k / 1k), at least 20 val and test images. A memory rehearsal holds them fixed above the
    evaluation batch (256) at every N: a split smaller than one batch makes the batch's activations
    look like growth per image, and Flickr30K's val and test stay at 1,000 whatever the album's size."""
    held = held_out or min(1000, max(20, n // 10))
    if n - 2 * held < 1:
        raise ValueError(f"N = {n} leaves no train images after {held} val and {held} test images")
    return {"train": n - 2 * held, "val": held, "test": held}


def _render_photo(args: tuple[Any, Path]) -> None:
    from PIL import Image

    from mcad_core.data.synthetic import render

    scene, path = args
    square = render(scene, PHOTO_H)
    pad = (PHOTO_W - PHOTO_H) // 2
    photo = np.pad(square, ((0, 0), (pad, PHOTO_W - PHOTO_H - pad), (0, 0)), mode="edge")
    Image.fromarray(photo).save(path, quality=90)


def write_flickr_like(root: Path, n: int, seed: int = 0, workers: int = 1,
                      held_out: int = 0) -> tuple[Path, Path, list[str]]:
    """The Karpathy annotations, the image folder, and the caption words (for the vocabularies)."""
    from multiprocessing import get_context

    from mcad_core.data.synthetic import generate_split

    image_root = root / "flickr30k-images"
    image_root.mkdir(parents=True, exist_ok=True)
    entries, jobs, words = [], [], set()
    for split, count in split_sizes(n, held_out).items():
        for item in generate_split(split, count, seed, PHOTO_H, CAPTIONS, 3):
            filename = f"{len(entries):07d}.jpg"
            entries.append({"filename": filename, "split": split, "imgid": len(entries),
                            "sentences": [{"raw": c, "tokens": c.split()} for c in item.scene.captions]})
            jobs.append((item.scene, image_root / filename))
            words.update(w for c in item.scene.captions for w in re.findall(r"[a-z]+|[^a-z\s]", c.lower()))
    with get_context("fork").Pool(max(1, workers)) as pool:
        pool.map(_render_photo, jobs, chunksize=64)
    annotations = root / "dataset_flickr30k.json"
    annotations.write_text(json.dumps({"images": entries, "dataset": "flickr30k"}))
    return annotations, image_root, sorted(words)


def _wordpiece_tokenizer(words: list[str], folder: Path) -> Any:
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(SPECIALS + words) + "\n")
    return BertTokenizerFast.from_pretrained(str(folder), local_files_only=True)


def shrunk_blip_config(tokenizer: Any) -> Any:
    """BLIP ITM's architecture (ViT + BERT with cross-attention) at one layer each, 64 wide, 64 px:
    the vocabulary is the rehearsal's, so the special ids come from its tokenizer."""
    from transformers import BlipConfig

    w = SHRUNK_WIDTH
    vision = {"hidden_size": w, "intermediate_size": 2 * w, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": ARCHS["shrunk"]["blip_px"], "patch_size": 16, "projection_dim": w}
    text = {"vocab_size": len(tokenizer), "hidden_size": w, "encoder_hidden_size": w, "intermediate_size": 2 * w,
            "num_hidden_layers": 1, "num_attention_heads": 2, "projection_dim": w,
            "bos_token_id": tokenizer.cls_token_id, "eos_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id, "sep_token_id": tokenizer.sep_token_id}
    return BlipConfig(text_config=text, vision_config=vision, projection_dim=w, image_text_hidden_size=w)


def teacher_paths(folder: Path, arch: str) -> tuple[Path, Path]:
    """Where :func:`save_random_teachers` puts the open_clip checkpoint and the BLIP folder."""
    return folder / f"{ARCHS[arch]['clip']}-random.pt", folder / f"blip-itm-{arch}-random"


def save_random_teachers(folder: Path, words: list[str], seed: int = 0, arch: str = "real") -> tuple[Path, Path]:
    """An open_clip ViT checkpoint file and a BLIP ITM model folder of size ``arch``, randomly initialised."""
    import torch
    from transformers import BlipConfig, BlipForImageTextRetrieval, BlipImageProcessor, BlipProcessor

    from mcad_core.teachers.dual import open_clip_with_configs

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    clip_ckpt, blip = teacher_paths(folder, arch)
    torch.save(open_clip_with_configs().create_model(ARCHS[arch]["clip"]).state_dict(), clip_ckpt)
    tokenizer = _wordpiece_tokenizer(words, folder / "blip-vocab")
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})  # as BLIP's init_tokenizer: its ITM marker
    config = BlipConfig() if arch == "real" else shrunk_blip_config(tokenizer)
    BlipForImageTextRetrieval(config).save_pretrained(blip)
    px = ARCHS[arch]["blip_px"]
    BlipProcessor(BlipImageProcessor(size={"height": px, "width": px}), tokenizer).save_pretrained(blip)
    return clip_ckpt, blip


def shrink_student(cfg: dict) -> dict:
    """The pretrained student's towers (EfficientNet-Lite0, BERT) at 64 px and one narrow layer."""
    w = SHRUNK_WIDTH
    return cfg | {"embed_dim": w, "image": cfg["image"] | {"image_size": 64},
                  "text": cfg["text"] | {"width": w, "layers": 1, "heads": 2, "mlp_ratio": 2}}


def student_config(folder: Path, words: list[str], parts: str, seed: int = 0, arch: str = "real") -> Path:
    """The pretrained student's config, with its parts from the packages or random local ones
    (always random when shrunk: the packages' weights have the full size)."""
    import torch

    from mcad_core.student.config import CONFIG_DIR

    cfg = json.loads((CONFIG_DIR / "mcad-student-pretrained.json").read_text())
    if arch == "shrunk":
        cfg, parts = shrink_student(cfg), "random"
    if parts == "random":
        from transformers import BertConfig, BertModel

        text = cfg["text"]
        bert = folder / "minilm-shaped-random"
        tokenizer = _wordpiece_tokenizer(words, bert)
        torch.manual_seed(seed)
        BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=text["width"],
                             num_hidden_layers=text["layers"], num_attention_heads=text["heads"],
                             intermediate_size=text["width"] * text["mlp_ratio"])).save_pretrained(bert)
        tokenizer.save_pretrained(bert)
        cfg["image"]["pretrained"], cfg["text"]["pretrained"] = None, str(bert)
    cfg["name"] = f"mcad-student-pretrained-{parts}" + ("-shrunk" if arch == "shrunk" else "")
    path = folder / "student.json"
    path.write_text(json.dumps(cfg, indent=2))
    return path


def rehearsal_params(config: Path, annotations: Path, image_root: Path, clip_ckpt: Path, blip: Path, student: Path,
                     device: str, workers: int, hard_k: int, epochs: int, batch_size: int,
                     chunk_images: int = 256, arch: str = "real") -> dict:
    """``config`` (the checkout's ``configs/flickr30k.yaml``) pointed at the rehearsal's files, sized for a short run."""
    import yaml

    params = yaml.safe_load(config.read_text())
    params["device"] = device
    params["precision"] = "bf16" if device == "cuda" else "fp32"
    params["workers"] = workers
    params["data"]["karpathy"] |= {"annotations": str(annotations), "image_root": str(image_root)}
    params["teachers"]["dual"] |= {"pretrained": str(clip_ckpt), "epochs": 0}
    if arch == "shrunk":  # the config's preprocess_tag is one of ViT-B-16's, not this model's
        params["teachers"]["dual"] |= {"model": ARCHS[arch]["clip"], "preprocess_tag": None}
    params["teachers"]["single"] |= {"model": str(blip), "epochs": 0}
    params["teachers"]["rerank_k"] = 4
    params["cache"] |= {"hard_k": hard_k, "batch_size": batch_size, "chunk_images": chunk_images}
    params["fuse"]["fit_batch"] = batch_size  # P's fit draws a batch, not min(N, 1024): no step inside the sizes
    params["distill"] |= {"variants": ["mcad"], "student": str(student), "epochs": epochs,
                          "batch_size": batch_size, "images": "stream"}
    params["export"] |= {"formats": ["fp32", "dynamic_int8"], "calib_samples": 50}
    return params


def _memory(proc: Any) -> tuple[int, int]:
    """(RSS, PSS) of one process. DataLoader workers are forks that share the parent's pages, so a
    tree's memory is the sum of PSS (shared pages split between their users), not of RSS."""
    try:
        full = proc.memory_full_info()
        return full.rss, getattr(full, "pss", full.rss)
    except Exception:  # no smaps access: RSS over-counts shared pages, still an upper bound
        rss = proc.memory_info().rss
        return rss, rss


def _high_water_mark(pid: int) -> int:
    """The kernel's peak RSS of one process since its exec (``VmHWM``, bytes): exact, where polling
    RSS can miss a short peak. (``wait4``'s ``ru_maxrss`` is not: it keeps the forking parent's.)"""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def run_measured(cmd: list[str], cwd: Path, env: dict[str, str], log: Path, poll_s: float = 0.2) -> dict:
    """Run one stage; wall time, the peak memory of its process tree (summed PSS) and of its main
    process (RSS and its high-water mark), polled."""
    import psutil

    start = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        peak = {"tree": 0, "main": 0, "hwm": 0}
        done = threading.Event()

        def poll() -> None:
            while not done.is_set():
                try:
                    root = psutil.Process(proc.pid)
                    mem = [_memory(p) for p in (root, *root.children(recursive=True))]
                    peak["tree"] = max(peak["tree"], sum(pss for _, pss in mem))
                    peak["main"] = max(peak["main"], mem[0][0])
                    peak["hwm"] = max(peak["hwm"], _high_water_mark(proc.pid))
                except (psutil.Error, OSError, StopIteration):
                    pass
                done.wait(poll_s)

        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        code = proc.wait()
        done.set()
        watcher.join()
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:]
        raise RuntimeError(f"{' '.join(cmd[1:])} failed (exit {code}): {tail[0] if tail else ''} (log: {log})")
    return {"wall_s": round(time.perf_counter() - start, 2), "peak_rss_mb": round(peak["main"] / 2**20, 1),
            "peak_rss_hwm_mb": round(peak["hwm"] / 2**20, 1), "peak_tree_pss_mb": round(peak["tree"] / 2**20, 1)}


def _files_mb(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20, 2) if folder.exists() else 0.0


def stage_counts(work: Path, params: dict) -> dict[str, dict[str, int]]:
    """Images and pairs each stage processes (for images/s and pairs/s)."""
    from mcad_core.data.manifest import read_manifest

    splits = {s: read_manifest(work / PREPARED / f"{s}.jsonl") for s in ("train", "val", "test")}
    n_img = {s: len(r) for s, r in splits.items()}
    n_cap = {s: sum(len(x["captions"]) for x in r) for s, r in splits.items()}
    twinned = {s: sum(len(x["captions"]) for x in r if x.get("twin")) for s, r in splits.items()}
    k, rk = params["cache"]["hard_k"], params["teachers"]["rerank_k"]
    cache_pairs = sum(n_cap[s] + 2 * n_img[s] * k for s in ("train", "val"))
    return {
        "prepare": {"images": sum(n_img.values())},
        "teachers": {"images": n_img["test"],
                     "pairs": (n_cap["test"] + n_img["test"]) * rk + 2 * twinned["test"]},
        "cache": {"images": n_img["train"] + n_img["val"], "pairs": cache_pairs},
        "distill": {"images": n_img["train"] * params["distill"]["epochs"] + n_img["val"] * params["distill"]["epochs"]},
        "evaluate": {"images": n_img["test"]},
        "export": {"images": n_img["val"] + n_img["test"]},
    }


def _split_sizes_on_disk(work: Path) -> dict[str, tuple[int, int]]:
    """(images, captions) of each prepared split."""
    from mcad_core.data.manifest import read_manifest

    records = {s: read_manifest(work / PREPARED / f"{s}.jsonl") for s in ("train", "val", "test")}
    return {s: (len(r), sum(len(x["captions"]) for x in r)) for s, r in records.items()}


def _tensor_width(path: Path, name: str) -> int:
    """The second dimension of one tensor in a safetensors file, read from its header."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return int(f.get_slice(name).get_shape()[1])


def held_bytes(work: Path, params: dict) -> dict[str, int]:
    """The docs' memory formula per stage: bytes of the arrays a stage holds that grow with N,
    from what the run wrote (cache and fused files, manifests) and the split sizes. Embeddings
    are fp32; a re-rank pair is an image index, a text index and a logit (20 B)."""
    splits = _split_sizes_on_disk(work)
    files = {name: (work / folder / f"{split}.safetensors").stat().st_size
             for name, folder, split in (("cache_train", CACHE, "train"), ("cache_val", CACHE, "val"),
                                         ("fused", FUSED, "train"))}
    manifests = sum(p.stat().st_size for p in (work / PREPARED).glob("*.jsonl"))
    dual_dim = _tensor_width(work / CACHE / "train.safetensors", "v")
    student_dim = json.loads(Path(params["distill"]["student"]).read_text())["embed_dim"]
    n_test = sum(splits["test"])  # test images + captions: one embedding each
    rerank = (splits["test"][0] + splits["test"][1]) * params["teachers"]["rerank_k"] * 20
    test_dual, test_student = 4 * dual_dim * n_test, 4 * student_dim * n_test
    formats = len(params["export"]["formats"])
    return {
        "prepare": manifests,
        "teachers": test_dual + rerank,
        "cache": files["cache_train"] + files["cache_val"],
        "fuse": files["cache_train"] + files["cache_val"] + files["fused"],
        "distill": files["cache_train"] + files["fused"],
        "evaluate": files["cache_train"] + test_dual + rerank + test_student,
        "export": (1 + formats) * 4 * student_dim * (sum(splits["val"]) + n_test),
    }


def growth_fit(ns: list[int], values_mb: list[float]) -> dict[str, float | None]:
    """Least-squares line through (N, MB): the growth per image in kB, and its noise: the residuals'
    RMS (MB) and the slope's standard error (kB per image); both None with two sizes (no residual)."""
    x, y = np.asarray(ns, dtype=float), np.asarray(values_mb, dtype=float)
    slope, intercept = (float(c) for c in np.polyfit(x, y, 1))
    out: dict[str, float | None] = {"kb_per_image": round(slope * 1024, 2), "intercept_mb": round(intercept, 1),
                                    "residual_mb": None, "slope_se_kb": None}
    if len(x) > 2:
        resid = y - (slope * x + intercept)
        sigma = float(np.sqrt((resid ** 2).sum() / (len(x) - 2)))
        out["residual_mb"] = round(sigma, 1)
        out["slope_se_kb"] = round(sigma / float(np.sqrt(((x - x.mean()) ** 2).sum())) * 1024, 2)
    return out


def growth_table(report: dict, measure: str = "peak_rss_hwm_mb", allowance_kb: float = 50.0) -> dict[str, dict]:
    """Per stage over the report's sizes: the measured growth per image of ``measure`` and of the
    tree's PSS, the predicted growth (:func:`held_bytes`' slope) and whether the measured exceeds
    the predicted by at most ``allowance_kb`` per image."""
    sizes = sorted(int(k) for k, v in report.items() if k.isdigit() and isinstance(v, dict) and "held_mb" in v)
    table = {}
    for stage in STAGES:
        rows = [report[str(n)] for n in sizes if stage in report[str(n)]]
        if len(rows) < 2:
            continue
        ns = [r["n_images"] for r in rows]
        measured = growth_fit(ns, [r[stage][measure] for r in rows])
        predicted = growth_fit(ns, [r["held_mb"][stage] for r in rows])["kb_per_image"]
        excess = round(measured["kb_per_image"] - predicted, 2)
        table[stage] = {"sizes": ns, "peaks_mb": [r[stage][measure] for r in rows], "measured": measured,
                        "tree_pss": growth_fit(ns, [r[stage]["peak_tree_pss_mb"] for r in rows]),
                        "predicted_kb_per_image": predicted, "excess_kb_per_image": excess,
                        "within_allowance": excess <= allowance_kb}
    return table


def format_growth_table(table: dict[str, dict]) -> str:
    """The table as printed and as in docs/scale.md: prediction beside measurement, with the noise."""
    lines = ["| stage | peak RSS MB per N | measured kB/image | ± SE | fit residual MB | tree PSS kB/image "
             "| predicted kB/image | excess kB/image |", "|---|---|---|---|---|---|---|---|"]
    for stage, row in table.items():
        m = row["measured"]
        peaks = " / ".join(f"{p:.0f}" for p in row["peaks_mb"])
        lines.append(f"| {stage} | {peaks} | {m['kb_per_image']:+.1f} | {m['slope_se_kb'] if m['slope_se_kb'] is not None else '-'} "
                     f"| {m['residual_mb'] if m['residual_mb'] is not None else '-'} "
                     f"| {row['tree_pss']['kb_per_image']:+.1f} | {row['predicted_kb_per_image']:.1f} "
                     f"| {row['excess_kb_per_image']:+.1f} |")
    return "\n".join(lines)


def rehearse(n: int, root: Path, repo: Path, device: str = "cpu", workers: int = 2, hard_k: int = 2, epochs: int = 1,
             batch_size: int = 64, student_parts: str = "package", stages: tuple[str, ...] = STAGES,
             seed: int = 0, progress: bool = True, live: bool = True, chunk_images: int = 256,
             reuse: bool = False, arch: str = "real", threads: int = 0, held_out: int = 0) -> dict:
    """Build the rehearsal's files for N images under ``root`` (or ``reuse`` those of an earlier
    run there) and run ``stages`` of the checkout ``repo`` (its scripts and Flickr30K config); their figures.
    ``threads``: torch's CPU threads per stage (0: its default). 1 on a shared 2-core machine: two
    threads' barriers, with other jobs on the cores, made a shrunk BLIP pair batch 100x slower."""
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    if reuse:  # the dataset and models of an earlier rehearsal under ``root``: re-measure some stages
        annotations, image_root = root / "flickr30k/dataset_flickr30k.json", root / "flickr30k/flickr30k-images"
        clip_ckpt, blip = teacher_paths(root / "models", arch)
        student, setup_s = root / "models/student.json", {}
    else:
        t0 = time.perf_counter()
        annotations, image_root, words = write_flickr_like(root / "flickr30k", n, seed, max(1, os.cpu_count() or 1),
                                                           held_out)
        setup_s = {"write_dataset_s": round(time.perf_counter() - t0, 1)}
        t0 = time.perf_counter()
        clip_ckpt, blip = save_random_teachers(root / "models", words, seed, arch)
        student = student_config(root / "models", words, student_parts, seed, arch)
        setup_s["save_models_s"] = round(time.perf_counter() - t0, 1)
    params = rehearsal_params(repo / "configs/flickr30k.yaml", annotations, image_root, clip_ckpt, blip, student, device, workers, hard_k, epochs,
                              batch_size, chunk_images, arch)
    work = root / "work"
    work.mkdir(exist_ok=True)
    if "distill" in stages:  # a re-measured distillation starts from nothing (no resumable checkpoint)
        shutil.rmtree(work / CHECKPOINTS / "mcad", ignore_errors=True)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]),
                        "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "MCAD_LIVE": "1" if live else "0"}
    if threads:
        env |= {v: str(threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    out: dict[str, Any] = {"n_images": n, "splits": split_sizes(n, held_out), **({"setup": setup_s} if setup_s else {})}
    for stage in stages:
        args = ["--variant", "mcad"] if stage == "distill" else []
        cmd = [sys.executable, str(repo / "stages" / f"{stage}.py"), *args, "--params", "params.yaml"]
        if progress:
            print(f"[N={n}] {stage} ...", flush=True)
        out[stage] = run_measured(cmd, work, env, root / f"{stage}.log")
        if progress:
            print(f"[N={n}] {stage}: {out[stage]}", flush=True)
    counts = stage_counts(work, params)
    for stage in stages:
        for what, count in counts.get(stage, {}).items():
            out[stage][what] = count
            out[stage][f"{what}_per_s"] = round(count / max(out[stage]["wall_s"], 1e-9), 1)
    out["cached_arrays_mb"] = {"cache": _files_mb(work / CACHE), "fused": _files_mb(work / FUSED)}
    if (work / FUSED / "train.safetensors").is_file():  # the cache and fuse stages have run
        out["held_mb"] = {k: round(v / 2**20, 3) for k, v in held_bytes(work, params).items()}
    return out


def device_name(device: str) -> str:
    """What ran it: the GPU's name on cuda, the CPU model otherwise."""
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    from mcad_core.export.bench import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} cores"
