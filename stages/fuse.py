"""Stage `fuse`: fused teacher targets from the cache (DESIGN §4.1-4.2)."""

from pathlib import Path

import click

from mcad_core.cli import one_line_errors, params_option
from mcad_core.params import load_params
from mcad_core.paths import CACHE, PREPARED, TEACHERS

OUT = Path("data/fused")
REPORT = Path("reports/fuse.json")


@click.command()
@params_option
@one_line_errors
def main(params_path: str) -> None:
    """Fit the projection P, write fused features and shifted logits, report ranking on val."""
    from mcad_core.io import atomic_path, write_json
    from mcad_core.mcad.cache import save_tensors
    from mcad_core.mcad.fusion import FuseSettings, run_fusion
    from mcad_core.mcad.targets import fused_fingerprint, load_cache

    params = load_params(params_path)
    train, val = (load_cache(CACHE, split, PREPARED, TEACHERS, params.cache.hard_k) for split in ("train", "val"))
    settings = FuseSettings(lam=params.fuse.lambda_, alpha=params.fuse.alpha, tau_m=params.fuse.tau_m,
                            projection=params.fuse.projection, shift=params.fuse.shift,
                            seed=params.seed)
    tensors, report = run_fusion(train, val, settings, params.distill.tau_t)
    with atomic_path(OUT) as tmp:
        tmp.mkdir()
        save_tensors(tmp / "train.safetensors", tensors, fused_fingerprint(CACHE, params.fuse.model_dump(by_alias=True)))
    write_json(REPORT, {"projection": params.fuse.projection, **report})


if __name__ == "__main__":
    main()
