"""Rehearse the real-data path at scale without the real data (issue 10; README "Scale").

    python scripts/rehearse_scale.py --sizes 60,120 --chunk-images 16   # CPU, ~20 min on 2 cores
    python scripts/rehearse_scale.py --sizes 31000 --device cuda --workers 12 --hard-k 8 \\
        --student-parts random --no-live --stages prepare,teachers,cache,fuse,distill,evaluate \
        --out reports/scale_cuda.json

Writes a Flickr30K-shaped dataset, random real-size teachers (open_clip ViT-B-16 checkpoint,
BLIP ITM folder) and runs the stage scripts on them, each in its own process; reports each
stage's wall time, peak RSS (process tree) and throughput per N into ``--out``.
"""

from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]  # the checkout whose stages the rehearsal runs


@click.command()
@click.option("--sizes", default="200,800", show_default=True, help="Comma-separated numbers of images N.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--workers", default=2, show_default=True, help="DataLoader processes (params.workers).")
@click.option("--hard-k", default=2, show_default=True, help="cache.hard_k")
@click.option("--epochs", default=1, show_default=True, help="distill.epochs")
@click.option("--batch-size", default=64, show_default=True, help="cache and distill batch size")
@click.option("--chunk-images", default=256, show_default=True, help="cache.chunk_images")
@click.option("--student-parts", type=click.Choice(["package", "random"]), default="package", show_default=True,
              help="The pretrained student's weights from their pip packages, or random ones of the same shape.")
@click.option("--stages", default="prepare,teachers,cache,fuse,distill,evaluate,export", show_default=True)
@click.option("--no-live", is_flag=True, help="No DVCLive curves (a machine without DVC installed).")
@click.option("--reuse", is_flag=True,
              help="Re-run --stages on the files of an earlier rehearsal under --root, updating --out's figures.")
@click.option("--root", default="/tmp/mcad-scale", show_default=True, type=click.Path(file_okay=False))
@click.option("--out", default="reports/scale.json", show_default=True, type=click.Path(dir_okay=False))
def main(sizes: str, device: str, workers: int, hard_k: int, epochs: int, batch_size: int, chunk_images: int,
         student_parts: str,
         stages: str, no_live: bool, reuse: bool, root: str, out: str) -> None:
    """Run the rehearsal at each size and write the figures (one JSON object per N, plus device)."""
    import json
    import shutil

    from mcad_core.io import write_json
    from mcad_tools.scale_rehearsal import STAGES, device_name, rehearse

    stage_list = tuple(s for s in stages.split(",") if s)
    unknown = sorted(set(stage_list) - set(STAGES))
    if unknown:
        raise click.BadParameter(f"unknown stages {unknown}; choose from {', '.join(STAGES)}", param_hint="--stages")
    settings = {
        "device": device, "workers": workers, "hard_k": hard_k, "epochs": epochs, "batch_size": batch_size,
        "chunk_images": chunk_images,
        "student_parts": student_parts, "stages": list(stage_list)}
    if reuse and Path(out).is_file():
        report = json.loads(Path(out).read_text())
        report.setdefault("reruns", []).append(settings)
    else:
        report = {"device": device_name(device), "settings": settings}
    for n in (int(x) for x in sizes.split(",")):
        folder = Path(root) / str(n)
        if not reuse:
            shutil.rmtree(folder, ignore_errors=True)
        figures = rehearse(n, folder, REPO, device, workers, hard_k, epochs, batch_size, student_parts, stage_list,
                           live=not no_live, chunk_images=chunk_images, reuse=reuse)
        report[str(n)] = {**report.get(str(n), {}), **figures} if reuse else figures
        write_json(out, report)
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
