"""Tuning on val: each variant's grid of overrides, trained on the tuning seeds, measured on the
val split only (the test split is never read here). Writes reports/tuning.json and .md with every
run and the chosen config per variant (the best mean val RSUM over the tuning seeds).

    python scripts/tune.py --grid configs/tuning/grid.yaml --seeds 100
"""

from pathlib import Path

import click

from mcad_core.cli import one_line_errors, params_option
from mcad_core.params import load_params
from mcad_core.paths import CACHE, FUSED, PREPARED, TEACHERS


@click.command()
@click.option("--grid", "grid_path", default="configs/tuning/grid.yaml", show_default=True,
              help="YAML: {variant: [[override, ...], ...]}; the same number of runs per variant")
@click.option("--seeds", default="100", show_default=True, help="tuning seeds (distill.seed), comma-separated")
@click.option("--out", default="reports/tuning", show_default=True, help="writes <out>.md and <out>.json")
@params_option
@one_line_errors
def main(grid_path: str, seeds: str, out: str, params_path: str) -> None:
    import tempfile

    import yaml

    from mcad_core.data.images import MemoryImages, load_images_uint8
    from mcad_core.data.manifest import read_manifest
    from mcad_core.io import write_json, write_text
    from mcad_core.mcad.experiment import measure_run
    from mcad_tools.tuning import choose, tuning_markdown
    from mcad_core.student.config import load_config

    params = load_params(params_path)
    grid = yaml.safe_load(Path(grid_path).read_text())
    seed_list = [int(s) for s in seeds.split(",")]
    val = read_manifest(PREPARED / "val.jsonl")
    images = MemoryImages(load_images_uint8(PREPARED, val, load_config(params.distill.student).image.image_size,
                                            progress=False))
    folders = {"prepared": PREPARED, "teachers": TEACHERS, "cache": CACHE, "fused": FUSED}
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch:
        for variant, configs in grid.items():
            for overrides in configs:
                for seed in seed_list:
                    row = measure_run(params, variant, tuple(overrides), seed, val, images, folders, Path(scratch))
                    runs.append({"variant": variant, "overrides": list(overrides), "seed": seed, "val": row})
                    click.echo(f"{variant} {' '.join(overrides) or '(defaults)'} seed {seed}: val rsum {row['rsum']:.2f} "
                               f"twin {row.get('twin_acc', float('nan')):.2f} ({row['train_s']:.0f} s)")
                    write_json(f"{out}.json", {"split": "val", "seeds": seed_list, "criterion": "mean val rsum",
                                               "runs": runs, "chosen": choose(runs)})
    chosen = choose(runs)
    write_json(f"{out}.json", {"split": "val", "seeds": seed_list, "criterion": "mean val rsum", "runs": runs,
                               "chosen": chosen})
    write_text(f"{out}.md", tuning_markdown(runs, chosen, seed_list))
    click.echo(tuning_markdown(runs, chosen, seed_list))


if __name__ == "__main__":
    main()
