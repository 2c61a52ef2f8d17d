"""What a distillation epoch costs: cached MCAD targets vs contrastive-only vs an online teacher.

Measured side by side in one run (this machine is noisy, so compare the ratios): one epoch of
  - contrastive: the student alone (L_itc),
  - mcad (cached): L_itc + L_dist + L_feat from the cache/fuse stages, cached cross-encoder logits,
  - dual_kd (online): the dual teacher runs on every batch, as open_clip's --distill-model does.
Needs the pipeline's cache, fused targets and teachers (`dvc repro fuse`). Goal: cached MCAD
within 1.2x of contrastive-only.

    python scripts/bench_distill.py --repeats 2
"""

from pathlib import Path

import click

from mcad_core.cli import one_line_errors, params_option
from mcad_core.params import load_params
from mcad_core.paths import CACHE, FUSED, PREPARED, TEACHERS


@click.command()
@click.option("--repeats", default=2, show_default=True, help="epochs timed per setting (best is kept)")
@params_option
@one_line_errors
def main(repeats: int, params_path: str) -> None:
    import tempfile
    import time

    import torch

    from mcad_core.data.manifest import flatten_captions, load_image, read_manifest
    from mcad_core.mcad.train import distill_student, load_distill_inputs
    from mcad_core.teachers.dual import load_saved_dual_teacher

    params = load_params(params_path)
    one_epoch = params.distill.model_copy(update={"epochs": 1})
    train = read_manifest(PREPARED / "train.jsonl")
    captions = flatten_captions(train)[0]
    dual = load_saved_dual_teacher(TEACHERS / "dual")
    pil = [load_image(PREPARED, r) for r in train]  # decoded once, as a data loader would cache them

    def online(img: torch.Tensor, cap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return dual.encode_images([pil[i] for i in img.tolist()]), dual.encode_texts([captions[c] for c in cap.tolist()])

    settings = {"contrastive": ("contrastive", None), "mcad (cached)": ("mcad", None), "dual_kd (online teacher)": ("dual_kd", online)}
    times: dict[str, float] = {}
    for name, (variant, targets) in settings.items():
        data, tok = load_distill_inputs(params, variant, PREPARED, TEACHERS, CACHE, FUSED, progress=False)
        best = float("inf")
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as ckpt:
                start = time.perf_counter()
                distill_student(variant, one_epoch, data, tok.vocab_size, Path(ckpt), params.seed, progress=False,
                                online_targets=targets)
                best = min(best, time.perf_counter() - start)
        times[name] = best
        click.echo(f"{name:28s} {best:8.2f} s/epoch  {len(data.images) / best:8.1f} images/s")
    base = times["contrastive"]
    click.echo(f"\nthreads {torch.get_num_threads()}, {len(train)} train images, batch {params.distill.batch_size}")
    for name, t in times.items():
        click.echo(f"{name:28s} {t / base:5.2f}x contrastive-only")


if __name__ == "__main__":
    main()
