"""Stage `cache`: run both teachers once over the train and val splits (DESIGN §4)."""

from pathlib import Path

import click

from mcad_core.cli import one_line_errors, params_option
from mcad_core.params import load_params
from mcad_core.paths import PREPARED, TEACHERS

OUT = Path("data/cache")


@click.command()
@params_option
@one_line_errors
def main(params_path: str) -> None:
    """Cache dual embeddings, cross-encoder fused vectors and hard-pair logits, fingerprinted."""
    from mcad_core.data.manifest import read_manifest
    from mcad_core.io import atomic_path
    from mcad_core.mcad.cache import build_cache, cache_fingerprint, save_tensors
    from mcad_core.models.teachers import load_teachers
    from mcad_core.precision import autocast

    params = load_params(params_path)
    dual, cross = load_teachers(TEACHERS, params.device)
    with atomic_path(OUT) as tmp:
        tmp.mkdir()
        for split in ("train", "val"):
            manifest = PREPARED / f"{split}.jsonl"
            with autocast(params.device, params.precision):
                tensors = build_cache(read_manifest(manifest), PREPARED, dual, cross, params.cache.hard_k,
                                      params.cache.batch_size, chunk_images=params.cache.chunk_images,
                                      workers=params.workers)
            fingerprint = cache_fingerprint(dual.fingerprint(), cross.fingerprint(), manifest, params.cache.hard_k)
            save_tensors(tmp / f"{split}.safetensors", tensors, fingerprint)


if __name__ == "__main__":
    main()
