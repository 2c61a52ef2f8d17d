"""Rehearse the real-data path at scale without the real data (issues 10, 19; docs/scale.md).

    # CPU, 2 cores: shrunk teachers and student, three sizes far apart (~1 h on 2 busy cores)
    python scripts/rehearse_scale.py --arch shrunk --sizes 1000,8000,3000 --held-out 300 --threads 1
    # GPU: real-size teachers at Flickr30K's size (not run yet at 31,000 past the teachers stage)
    python scripts/rehearse_scale.py --arch real --sizes 31000 --held-out 1000 --device cuda --workers 14 --hard-k 8 \\
        --batch-size 256 --chunk-images 256 --student-parts random --no-live \\
        --stages prepare,teachers,cache,fuse,distill,evaluate --out reports/scale_cuda.json

Writes a Flickr30K-shaped dataset, random teachers (open_clip ViT checkpoint, BLIP ITM folder;
real size or shrunk) and runs the stage scripts on them, each in its own process; reports each
stage's wall time, peak memory and throughput per N into ``--out``, and with two or more sizes
the growth per image of each stage's peak beside the growth of the arrays it holds.
"""

from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]  # the checkout whose stages the rehearsal runs


@click.command()
@click.option("--arch", type=click.Choice(["real", "shrunk"]), default="shrunk", show_default=True,
              help="Real-size teachers and student (a GPU run), or the same architectures shrunk for a CPU.")
@click.option("--sizes", default="1000,8000,3000", show_default=True, help="Comma-separated numbers of images N.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--workers", default=2, show_default=True, help="DataLoader processes (params.workers).")
@click.option("--hard-k", default=2, show_default=True, help="cache.hard_k")
@click.option("--epochs", default=1, show_default=True, help="distill.epochs")
@click.option("--batch-size", default=32, show_default=True,
              help="cache and distill batch size and fuse.fit_batch (below the smallest split: a batch is fixed "
                   "cost at every N)")
@click.option("--chunk-images", default=32, show_default=True, help="cache.chunk_images (below the smallest split)")
@click.option("--student-parts", type=click.Choice(["package", "random"]), default="package", show_default=True,
              help="The pretrained student's weights from their pip packages, or random ones of the same shape "
                   "(always random with --arch shrunk).")
@click.option("--threads", default=0, show_default=True,
              help="torch CPU threads per stage (OMP_NUM_THREADS); 0: torch's default. 1 on a shared CPU.")
@click.option("--held-out", default=300, show_default=True,
              help="val and test images each, fixed at every N (0: Flickr30K's proportions, N/10 up to 1,000)")
@click.option("--stages", default="prepare,teachers,cache,fuse,distill,evaluate,export", show_default=True)
@click.option("--no-live", is_flag=True, help="No DVCLive curves (a machine without DVC installed).")
@click.option("--reuse", is_flag=True,
              help="Re-run --stages on the files of an earlier rehearsal under --root, updating --out's figures.")
@click.option("--root", default="/tmp/mcad-scale", show_default=True, type=click.Path(file_okay=False))
@click.option("--out", default="reports/scale.json", show_default=True, type=click.Path(dir_okay=False))
def main(arch: str, sizes: str, device: str, workers: int, hard_k: int, epochs: int, batch_size: int,
         chunk_images: int, student_parts: str, threads: int, held_out: int, stages: str, no_live: bool, reuse: bool, root: str, out: str) -> None:
    """Run the rehearsal at each size and write the figures (one JSON object per N, plus device and,
    from two sizes on, the growth table)."""
    import json
    import shutil

    from mcad_core.io import write_json
    from mcad_tools.scale_rehearsal import STAGES, device_name, format_growth_table, growth_table, rehearse, split_sizes

    stage_list = tuple(s for s in stages.split(",") if s)
    unknown = sorted(set(stage_list) - set(STAGES))
    if unknown:
        raise click.BadParameter(f"unknown stages {unknown}; choose from {', '.join(STAGES)}", param_hint="--stages")
    size_list = [int(x) for x in sizes.split(",")]
    for n in size_list:  # before any size runs: a bad one would otherwise stop the run half-way
        try:
            split_sizes(n, held_out)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--held-out") from None
    settings = {
        "arch": arch, "device": device, "workers": workers, "hard_k": hard_k, "epochs": epochs,
        "batch_size": batch_size, "chunk_images": chunk_images, "threads": threads,
        "student_parts": "random" if arch == "shrunk" else student_parts, "held_out": held_out,
        "stages": list(stage_list)}
    if reuse and Path(out).is_file():
        report = json.loads(Path(out).read_text())
        report.setdefault("reruns", []).append(settings)
    else:
        report = {"device": device_name(device), "settings": settings}
    for n in size_list:
        folder = Path(root) / str(n)
        if not reuse:
            shutil.rmtree(folder, ignore_errors=True)
        figures = rehearse(n, folder, REPO, device, workers, hard_k, epochs, batch_size, student_parts, stage_list,
                           live=not no_live, chunk_images=chunk_images, reuse=reuse, arch=arch, threads=threads,
                           held_out=held_out)
        report[str(n)] = {**report.get(str(n), {}), **figures} if reuse else figures
        table = growth_table(report)
        if table:
            report["growth"] = table
            click.echo(format_growth_table(table))
        write_json(out, report)
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
