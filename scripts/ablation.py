"""Seed ablation: every distillation variant with several seeds, mean ± std per test metric and
per-seed paired differences to dual_kd and contrastive (mcad_core.ablation_report).

Reads the pipeline's cache and fused targets (run `dvc repro fuse` first) and trains in
process, leaving the pipeline's own students untouched. Writes reports/ablation.md and
reports/ablation.json, so a reader can tell a gain from seed noise. ``-S group.key=value``
overrides params as ``dvc exp run -S`` does; a ``fuse.*`` override re-fits the fused targets
in a temporary folder first.

    python scripts/ablation.py --seeds 0,1,2 --variants contrastive,dual_kd,mcad
    python scripts/ablation.py --seeds 0 --variants mcad_dist -S fuse.shift=centred --out reports/tuning/centred
"""

from pathlib import Path

import click

from mcad_core.cli import one_line_errors, params_option
from mcad_core.params import load_params, with_overrides
from mcad_core.paths import CACHE, FUSED, PREPARED, TEACHERS


@click.command()
@click.option("--seeds", default="0,1,2", show_default=True, help="comma-separated")
@click.option("--variants", default="", help="comma-separated; default: distill.variants")
@click.option("--out", default="reports/ablation", show_default=True, help="writes <out>.md and <out>.json")
@click.option("-S", "--set", "overrides", multiple=True, help="group.key=value, as dvc exp run -S")
@params_option
@one_line_errors
def main(seeds: str, variants: str, out: str, overrides: tuple[str, ...],
         params_path: str) -> None:
    import tempfile
    import time

    from mcad_core.ablation_report import ablation_markdown, summarise
    from mcad_core.data.images import MemoryImages, load_images_uint8
    from mcad_core.data.manifest import read_manifest
    from mcad_core.evaluation import student_metrics
    from mcad_core.io import write_json, write_text
    from mcad_core.mcad.targets import write_fused_targets
    from mcad_core.mcad.train import distill_student, load_distill_inputs
    from mcad_core.models.student import load_config

    params = with_overrides(load_params(params_path), overrides)
    try:
        seed_list = [int(x) for x in seeds.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got '{seeds}'", param_hint="--seeds") from None
    variant_list = with_overrides(params, [f"distill.variants=[{variants}]"]).distill.variants if variants \
        else params.distill.variants
    test = read_manifest(PREPARED / "test.jsonl")
    runs: dict[str, list[dict]] = {}
    scratch = tempfile.TemporaryDirectory()
    fused_dir = FUSED
    if any(o.startswith("fuse.") for o in overrides):
        fused_dir = Path(scratch.name) / "fused"
        write_fused_targets(params, fused_dir, PREPARED, TEACHERS, CACHE)
    for variant in variant_list:
        data, tok = load_distill_inputs(params, variant, PREPARED, TEACHERS, CACHE, fused_dir)
        size = load_config(params.distill.student).image.image_size
        images = MemoryImages(load_images_uint8(PREPARED, test, size, progress=False))
        for seed in seed_list:
            start = time.time()
            with tempfile.TemporaryDirectory() as ckpt:
                model = distill_student(variant, params.distill, data, tok.vocab_size, Path(ckpt), seed)
            row = {**student_metrics(model, tok, test, PREPARED, images), "train_s": round(time.time() - start, 1)}
            runs.setdefault(variant, []).append(row)
            click.echo(f"{variant} seed {seed}: rsum {row['rsum']:.2f} twin_acc {row.get('twin_acc', float('nan')):.2f}")
    scratch.cleanup()
    summary = summarise(runs)
    markdown = ablation_markdown(summary, seed_list, overrides)
    write_text(f"{out}.md", markdown)
    write_json(f"{out}.json", {"seeds": seed_list, "overrides": list(overrides), "summary": summary, "runs": runs})
    click.echo(markdown)


if __name__ == "__main__":
    main()
