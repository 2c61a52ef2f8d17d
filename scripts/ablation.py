"""Seed ablation on test: every variant at its own val-chosen config (reports/tuning.json), on
seeds never used in tuning; mean ± std per test metric and per-seed paired differences to
dual_kd and contrastive (mcad_tools.ablation_report).

Reads the pipeline's cache and fused targets (run `dvc repro fuse` first) and trains in
process, leaving the pipeline's own students untouched. Writes reports/ablation.md and
reports/ablation.json with the tuning seeds beside the ablation seeds.

    python scripts/ablation.py --seeds 0,1,2,3,4 --tuning reports/tuning.json
"""

import json
from pathlib import Path

import click

from mcad_core.cli import one_line_errors, params_option
from mcad_core.params import load_params
from mcad_core.paths import CACHE, FUSED, PREPARED, TEACHERS


@click.command()
@click.option("--seeds", default="0,1,2,3,4", show_default=True, help="distill.seed values, comma-separated")
@click.option("--tuning", "tuning_path", default="reports/tuning.json", show_default=True,
              help="scripts/tune.py's output: each variant's chosen overrides and the tuning seeds")
@click.option("--variants", default="", help="comma-separated; default: those tuning chose a config for")
@click.option("--out", default="reports/ablation", show_default=True, help="writes <out>.md and <out>.json")
@params_option
@one_line_errors
def main(seeds: str, tuning_path: str, variants: str, out: str, params_path: str) -> None:
    import tempfile

    from mcad_tools.ablation_report import ablation_markdown, summarise
    from mcad_core.data.images import MemoryImages, load_images_uint8
    from mcad_core.data.manifest import read_manifest
    from mcad_core.errors import McadError
    from mcad_core.io import write_json, write_text
    from mcad_core.mcad.experiment import measure_run
    from mcad_core.student.config import load_config

    params = load_params(params_path)
    tuning = json.loads(Path(tuning_path).read_text())
    seed_list = [int(x) for x in seeds.split(",")]
    reused = sorted(set(seed_list) & set(tuning["seeds"]))
    if reused:
        raise McadError(f"--seeds: {reused} were used in tuning ({tuning_path}); the ablation needs fresh seeds")
    chosen = tuning["chosen"]
    variant_list = variants.split(",") if variants else list(chosen)
    test = read_manifest(PREPARED / "test.jsonl")
    images = MemoryImages(load_images_uint8(PREPARED, test, load_config(params.distill.student).image.image_size,
                                            progress=False))
    folders = {"prepared": PREPARED, "teachers": TEACHERS, "cache": CACHE, "fused": FUSED}
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for variant in variant_list:
            overrides = tuple(chosen[variant]["overrides"])
            for seed in seed_list:
                row = measure_run(params, variant, overrides, seed, test, images, folders, Path(scratch))
                row.pop("val_curve")
                runs.setdefault(variant, []).append(row)
                click.echo(f"{variant} seed {seed}: rsum {row['rsum']:.2f} twin_acc {row.get('twin_acc', float('nan')):.2f}")
    summary = summarise(runs)
    configs = {v: chosen[v]["overrides"] for v in variant_list}
    markdown = ablation_markdown(summary, seed_list, configs, tuning["seeds"])
    write_text(f"{out}.md", markdown)
    write_json(f"{out}.json", {"split": "test", "seeds": seed_list, "tuning_seeds": tuning["seeds"],
                               "configs": configs, "summary": summary, "runs": runs})
    click.echo(markdown)


if __name__ == "__main__":
    main()
