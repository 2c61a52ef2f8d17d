"""A rehearsal of the real-data path without the real data (``scripts/rehearse_scale.py``).

It builds what a user of the README's "Real teachers and data" section would have on disk:
- a Flickr30K-shaped Karpathy dataset: N JPEG photos of 500 x 375 (the generator's scenes drawn
  at 375 px on a 500 px wide canvas), five captions each, ``dataset_flickr30k.json``;
- real-size teachers with random weights, saved as a user saves downloaded ones: an open_clip
  ``ViT-B-16`` checkpoint file and a BLIP ITM folder (``BlipConfig()`` defaults: ViT-B/16 at
  384 px, BERT-base text encoder with cross-attention) with a WordPiece vocabulary;
- the student's pretrained parts from their packages, or (``student_parts="random"``, where the
  packages are absent) random ones of the same shape in a local Hugging Face folder;
and runs the pipeline's stage scripts on it, each in its own process, measuring wall time and
peak memory (of the main process, and of the whole process tree with its DataLoader workers).
The checkout whose stages and config it runs is an argument (``repo``), not this file's location.
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


def split_sizes(n: int) -> dict[str, int]:
    """Flickr30K's proportions at N = 31,000 (29k / 1k / 1k); at least 20 val and test images."""
    held = min(1000, max(20, n // 10))
    return {"train": n - 2 * held, "val": held, "test": held}


def _render_photo(args: tuple[Any, Path]) -> None:
    from PIL import Image

    from mcad_core.data.synthetic import render

    scene, path = args
    square = render(scene, PHOTO_H)
    pad = (PHOTO_W - PHOTO_H) // 2
    photo = np.pad(square, ((0, 0), (pad, PHOTO_W - PHOTO_H - pad), (0, 0)), mode="edge")
    Image.fromarray(photo).save(path, quality=90)


def write_flickr_like(root: Path, n: int, seed: int = 0, workers: int = 1) -> tuple[Path, Path, list[str]]:
    """The Karpathy annotations, the image folder, and the caption words (for the vocabularies)."""
    from multiprocessing import get_context

    from mcad_core.data.synthetic import generate_split

    image_root = root / "flickr30k-images"
    image_root.mkdir(parents=True, exist_ok=True)
    entries, jobs, words = [], [], set()
    for split, count in split_sizes(n).items():
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


def save_random_teachers(folder: Path, words: list[str], seed: int = 0) -> tuple[Path, Path]:
    """An open_clip ViT-B-16 checkpoint file and a BLIP ITM model folder, randomly initialised."""
    import open_clip
    import torch
    from transformers import BlipConfig, BlipForImageTextRetrieval, BlipImageProcessor, BlipProcessor

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    clip_ckpt = folder / "ViT-B-16-random.pt"
    torch.save(open_clip.create_model("ViT-B-16").state_dict(), clip_ckpt)
    blip = folder / "blip-itm-base-random"
    tokenizer = _wordpiece_tokenizer(words, folder / "blip-vocab")
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})  # as BLIP's init_tokenizer: its ITM marker
    BlipForImageTextRetrieval(BlipConfig()).save_pretrained(blip)
    BlipProcessor(BlipImageProcessor(size={"height": 384, "width": 384}), tokenizer).save_pretrained(blip)
    return clip_ckpt, blip


def student_config(folder: Path, words: list[str], parts: str, seed: int = 0) -> Path:
    """The pretrained student's config, with its parts from the packages or random local ones."""
    import torch

    from mcad_core.student.config import CONFIG_DIR

    cfg = json.loads((CONFIG_DIR / "mcad-student-pretrained.json").read_text())
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
    cfg["name"] = f"mcad-student-pretrained-{parts}"
    path = folder / "student.json"
    path.write_text(json.dumps(cfg, indent=2))
    return path


def rehearsal_params(config: Path, annotations: Path, image_root: Path, clip_ckpt: Path, blip: Path, student: Path,
                     device: str, workers: int, hard_k: int, epochs: int, batch_size: int,
                     chunk_images: int = 256) -> dict:
    """``config`` (the checkout's ``configs/flickr30k.yaml``) pointed at the rehearsal's files, sized for a short run."""
    import yaml

    params = yaml.safe_load(config.read_text())
    params["device"] = device
    params["precision"] = "bf16" if device == "cuda" else "fp32"
    params["workers"] = workers
    params["data"]["karpathy"] |= {"annotations": str(annotations), "image_root": str(image_root)}
    params["teachers"]["dual"] |= {"pretrained": str(clip_ckpt), "epochs": 0}
    params["teachers"]["single"] |= {"model": str(blip), "epochs": 0}
    params["teachers"]["rerank_k"] = 4
    params["cache"] |= {"hard_k": hard_k, "batch_size": batch_size, "chunk_images": chunk_images}
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


def run_measured(cmd: list[str], cwd: Path, env: dict[str, str], log: Path, poll_s: float = 0.2) -> dict:
    """Run one stage; wall time, the peak memory of its process tree (summed PSS) and of its main
    process (RSS), polled."""
    import psutil

    start = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        peak = {"tree": 0, "main": 0}
        done = threading.Event()

        def poll() -> None:
            root = psutil.Process(proc.pid)
            while not done.is_set():
                try:
                    mem = [_memory(p) for p in (root, *root.children(recursive=True))]
                    peak["tree"] = max(peak["tree"], sum(pss for _, pss in mem))
                    peak["main"] = max(peak["main"], mem[0][0])
                except psutil.Error:
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
            "peak_tree_pss_mb": round(peak["tree"] / 2**20, 1)}


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


def rehearse(n: int, root: Path, repo: Path, device: str = "cpu", workers: int = 2, hard_k: int = 2, epochs: int = 1,
             batch_size: int = 64, student_parts: str = "package", stages: tuple[str, ...] = STAGES,
             seed: int = 0, progress: bool = True, live: bool = True, chunk_images: int = 256,
             reuse: bool = False) -> dict:
    """Build the rehearsal's files for N images under ``root`` (or ``reuse`` those of an earlier
    run there) and run ``stages`` of the checkout ``repo`` (its scripts and Flickr30K config); their figures."""
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    if reuse:  # the dataset and models of an earlier rehearsal under ``root``: re-measure some stages
        annotations, image_root = root / "flickr30k/dataset_flickr30k.json", root / "flickr30k/flickr30k-images"
        clip_ckpt, blip = root / "models/ViT-B-16-random.pt", root / "models/blip-itm-base-random"
        student, setup_s = root / "models/student.json", {}
    else:
        t0 = time.perf_counter()
        annotations, image_root, words = write_flickr_like(root / "flickr30k", n, seed, max(1, os.cpu_count() or 1))
        setup_s = {"write_dataset_s": round(time.perf_counter() - t0, 1)}
        t0 = time.perf_counter()
        clip_ckpt, blip = save_random_teachers(root / "models", words, seed)
        student = student_config(root / "models", words, student_parts, seed)
        setup_s["save_models_s"] = round(time.perf_counter() - t0, 1)
    params = rehearsal_params(repo / "configs/flickr30k.yaml", annotations, image_root, clip_ckpt, blip, student, device, workers, hard_k, epochs,
                              batch_size, chunk_images)
    work = root / "work"
    work.mkdir(exist_ok=True)
    if "distill" in stages:  # a re-measured distillation starts from nothing (no resumable checkpoint)
        shutil.rmtree(work / CHECKPOINTS / "mcad", ignore_errors=True)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]),
                        "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "MCAD_LIVE": "1" if live else "0"}
    out: dict[str, Any] = {"n_images": n, "splits": split_sizes(n), **({"setup": setup_s} if setup_s else {})}
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
    return out


def device_name(device: str) -> str:
    """What ran it: the GPU's name on cuda, the CPU model otherwise."""
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    from mcad_core.export.bench import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} cores"
