"""From-scratch tiny student vs the student from pretrained parts, at equal training time.

Distills one variant (default ``mcad``) from the pipeline's cache and fused targets (run
``dvc repro fuse`` first), in process, leaving the pipeline's students untouched:
1. the tiny student (``distill.student`` of the params) for ``distill.epochs``, timed;
2. a short probe of the pretrained student (EfficientNet-Lite0 ImageNet + all-MiniLM-L6-v2,
   ``mcad-student-pretrained`` at ``--image-size`` px and ``--context-length`` tokens) for its
   seconds per step;
3. the pretrained student for the whole number of epochs that fits the tiny student's time.
Test RSUM / twin accuracy of both go to ``<out>.md`` and ``<out>.json``.

    nice python scripts/compare_students.py --image-size 64 --pretrained-lr 0.001

On a shared machine the wall time of step 1 says little about compute; ``--tiny-results
reports/results.json --tiny-seconds 170`` takes the tiny row from the pipeline's own run
instead (seed 0 of this script trains exactly that student) and its time from an idle run.
"""

import json
from pathlib import Path

import click

from mcad_core.cli import one_line_errors, params_option
from mcad_core.params import load_params, with_overrides
from mcad_core.paths import CACHE, FUSED, PREPARED, TEACHERS

COLUMNS = ["t2i_r1", "i2t_r1", "rsum", "twin_acc", "twin_colour", "twin_size", "twin_relation", "params_m"]


class _Clock:
    """A distill_student ``log`` callback that records when each step and epoch ended."""

    def __init__(self) -> None:
        import time

        self.now = time.perf_counter
        self.steps: list[float] = []
        self.epochs: list[float] = []

    def __call__(self, metrics: dict, epoch_end: bool) -> None:
        (self.epochs if epoch_end else self.steps).append(self.now())


def _markdown(rows: dict[str, dict]) -> str:
    head = ["student", "epochs", "train_s", "s_per_step", *COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in rows.items():
        cells = [name] + [f"{row[k]:.2f}" if isinstance(row.get(k), float) else str(row.get(k, "")) for k in head[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--variant", default="mcad", show_default=True)
@click.option("--image-size", default=64, show_default=True, help="input size of the pretrained image tower")
@click.option("--context-length", default=24, show_default=True, help="tokens of the pretrained text tower")
@click.option("--pretrained-lr", default=1e-3, show_default=True, help="peak lr of the pretrained student")
@click.option("--pretrained-epochs", default=0, help="skip the probe and train this many epochs (0: equal time)")
@click.option("--probe-steps", default=6, show_default=True)
@click.option("--tiny-results", default="", help="take the tiny row from this results.json (the pipeline's run)")
@click.option("--tiny-seconds", default=0.0, help="with --tiny-results: the tiny student's training time")
@click.option("--out", default="reports/compare_students", show_default=True, help="writes <out>.md and <out>.json")
@params_option
@one_line_errors
def main(variant: str, image_size: int, context_length: int, pretrained_lr: float, pretrained_epochs: int,
         probe_steps: int, tiny_results: str, tiny_seconds: float, out: str, params_path: str) -> None:
    import os
    import platform
    import tempfile
    import time

    from mcad_core.data.manifest import read_manifest
    from mcad_core.evaluation.report import student_metrics
    from mcad_core.io import write_json, write_text
    from mcad_core.mcad.train import distill_student, load_distill_inputs
    from mcad_core.student.config import CONFIG_DIR

    params = load_params(params_path)
    test = read_manifest(PREPARED / "test.jsonl")
    scratch = tempfile.TemporaryDirectory()
    config = json.loads((CONFIG_DIR / "mcad-student-pretrained.json").read_text())
    config["image"]["image_size"] = image_size
    config["text"]["context_length"] = context_length
    config_path = Path(scratch.name) / "mcad-student-pretrained.json"
    config_path.write_text(json.dumps(config))
    pre_params = with_overrides(params, [f"distill.student={config_path}", f"distill.lr={pretrained_lr}"])

    def train(p, label: str, clock: _Clock | None = None, max_steps: int | None = None):
        data, tok = load_distill_inputs(p, variant, PREPARED, TEACHERS, CACHE, FUSED, progress=False)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as ckpt:
            model = distill_student(variant, p.distill, data, tok.vocab_size, Path(ckpt), params.seed,
                                    log=clock, max_steps=max_steps, progress=False)
        seconds = time.perf_counter() - start
        click.echo(f"{label}: {seconds:.1f} s")
        return model, tok, seconds

    rows: dict[str, dict] = {}
    if tiny_results:
        if tiny_seconds <= 0:
            raise click.BadParameter("needs --tiny-seconds", param_hint="--tiny-results")
        tiny_s, steps_per_epoch = tiny_seconds, 0
        rows[params.distill.student] = {"epochs": params.distill.epochs, "train_s": tiny_s,
                                        **json.loads(Path(tiny_results).read_text())[variant]}
    else:
        tiny_clock = _Clock()
        model, tok, tiny_s = train(params, "tiny", tiny_clock)
        steps_per_epoch = len(tiny_clock.steps) // params.distill.epochs
        rows[params.distill.student] = {"epochs": params.distill.epochs, "train_s": round(tiny_s, 1),
                                        "s_per_step": round(tiny_s / len(tiny_clock.steps), 2),
                                        **student_metrics(model, tok, test, PREPARED)}
    s_per_step = None
    if not pretrained_epochs:
        if not steps_per_epoch:
            raise click.BadParameter("with --tiny-results give --pretrained-epochs", param_hint="--tiny-results")
        probe = _Clock()
        train(with_overrides(pre_params, ["distill.epochs=1"]), "pretrained probe", probe, max_steps=probe_steps)
        s_per_step = (probe.steps[-1] - probe.steps[0]) / (len(probe.steps) - 1)
        # the tiny run's time includes its per-epoch val passes; the pretrained epoch is dominated by steps
        pretrained_epochs = max(1, round(tiny_s / (steps_per_epoch * s_per_step)))
        click.echo(f"pretrained: {s_per_step:.2f} s/step, {steps_per_epoch} steps/epoch -> {pretrained_epochs} epochs")
    pre_params = with_overrides(pre_params, [f"distill.epochs={pretrained_epochs}"])
    clock = _Clock()
    model, tok, pre_s = train(pre_params, "pretrained", clock)
    name = f"mcad-student-pretrained@{image_size}px, {pretrained_epochs} ep"
    rows[name] = {"epochs": pretrained_epochs, "train_s": round(pre_s, 1),
                  "s_per_step": round(pre_s / len(clock.steps), 2), **student_metrics(model, tok, test, PREPARED)}
    scratch.cleanup()
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads default"
    header = (f"# Tiny vs pretrained student, variant `{variant}`, equal training time\n\n"
              f"Machine: {machine}. Pretrained student: lr {pretrained_lr}, image {image_size} px, "
              f"context {context_length}; test split.\n\n")
    markdown = header + _markdown(rows)
    write_text(f"{out}.md", markdown)
    write_json(f"{out}.json", {"variant": variant, "image_size": image_size, "context_length": context_length,
                               "pretrained_lr": pretrained_lr, "probe_s_per_step": s_per_step,
                               "steps_per_epoch": steps_per_epoch, "machine": machine, "rows": rows})
    click.echo(markdown)


if __name__ == "__main__":
    main()
