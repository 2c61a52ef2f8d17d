"""Stage `cache`: run both teachers once over the train and val splits (docs/DESIGN.md §4)."""

import click

from mcad_core.cli import one_line_errors, params_option
from mcad_core.params import load_params
from mcad_core.paths import CACHE, PREPARED, TEACHERS


@click.command()
@params_option
@one_line_errors
def main(params_path: str) -> None:
    """Cache dual embeddings, the photos' text slots and teacher-mined pair logits, fingerprinted.

    train: the user's album (captioned and uncaptioned photos, the unpaired pool); val: its
    captions only (for the fuse stage's ranking report).
    """
    from mcad_core.data.manifest import TEXTS_FILE, read_manifest, read_texts
    from mcad_core.io import atomic_path
    from mcad_core.mcad.cache import build_cache, cache_fingerprint, save_tensors
    from mcad_core.teachers.build import load_teachers

    params = load_params(params_path)
    dual, cross = load_teachers(TEACHERS, params.device)
    with atomic_path(CACHE) as tmp:
        tmp.mkdir()
        for split in ("train", "val"):
            manifest = PREPARED / f"{split}.jsonl"
            pool = PREPARED / TEXTS_FILE if split == "train" else None
            cfg = params.cache
            # fp32 even where precision is bf16: the cache runs once and every target comes from it.
            tensors = build_cache(read_manifest(manifest), PREPARED, dual, cross, cfg.hard_k, cfg.text_k,
                                  cfg.batch_size, texts=read_texts(pool) if pool else [],
                                  chunk_images=cfg.chunk_images, workers=params.workers)
            fingerprint = cache_fingerprint(dual.fingerprint(), cross.fingerprint(), manifest, cfg.hard_k, cfg.text_k,
                                            pool)
            save_tensors(tmp / f"{split}.safetensors", tensors, fingerprint)


if __name__ == "__main__":
    main()
