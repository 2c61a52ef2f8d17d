"""Stage `teachers`: the dual-stream and single-stream teachers (docs/DESIGN.md §3).

They stand for models pretrained elsewhere: they train on their own corpus
(data/prepared/teacher*.jsonl) and never see the student's train, val or test split.
"""

import click

from mcad_core.cli import one_line_errors, params_option
from mcad_core.params import load_params
from mcad_core.paths import CHECKPOINTS, PREPARED, TEACHERS, TEACHERS_REPORT
TIMINGS = ("train_time_s", "train_s")


@click.command()
@params_option
@one_line_errors
def main(params_path: str) -> None:
    """Train (or load) both teachers on their own corpus, save them, and report their training in
    reports/teachers.json (test figures come from the evaluate stage)."""
    import json

    from mcad_core.checkpoint import checkpoint_dir, run_key
    from mcad_core.data.manifest import read_manifest
    from mcad_core.io import file_sha256, write_json
    from mcad_core.teachers.build import build_cross, build_dual, write_fingerprints

    params = load_params(params_path)
    train, val = (read_manifest(PREPARED / f"{s}.jsonl") for s in ("teacher", "teacher_val"))
    key = run_key(params.seed, params.teachers.model_dump(), file_sha256(PREPARED / "teacher.jsonl"))
    ckpt = checkpoint_dir(CHECKPOINTS / "teachers", key)
    dual, dual_summary = build_dual(params.teachers, train, val, PREPARED, TEACHERS / "dual", ckpt / "dual",
                                    params.seed, params.device, params.workers, params.precision)
    cross, cross_summary = build_cross(params.teachers, train, val, PREPARED, TEACHERS / "single", ckpt / "single",
                                         params.seed, params.device)
    write_fingerprints(TEACHERS, dual, cross)
    report = json.loads(json.dumps({"dual": dual_summary, "single": cross_summary}, default=str))
    click.echo(json.dumps(report, indent=2))
    # Timings change run to run: printed above, kept out of the tracked report (a clean tree after repro).
    write_json(TEACHERS_REPORT, {name: {k: v for k, v in part.items() if k not in TIMINGS}
                                         for name, part in report.items()})


if __name__ == "__main__":
    main()
