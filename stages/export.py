"""Stage `export`: the trained student -> TFLite fp32 / dynamic int8 / full int8 (docs/DESIGN.md §6)."""

import click

from mcad_core.cli import one_line_errors, params_option
from mcad_core.params import load_params
from mcad_core.paths import EXPORT_METRICS, EXPORT_REPORT, PREPARED, STUDENTS, TFLITE


@click.command()
@params_option
@one_line_errors
def main(params_path: str) -> None:
    """Convert both towers of models/student/<export.variant>, calibrated on train; report parity
    (val) and the retrieval drop (test) per format, the RSUM drop also as a DVC metric."""
    from mcad_core.export.pipeline import export_metrics, run_export
    from mcad_core.io import atomic_path, write_json

    params = load_params(params_path)
    ex = params.export
    with atomic_path(TFLITE) as tmp:
        report, timings = run_export(STUDENTS / ex.variant, PREPARED, tmp, list(ex.formats), ex.calib_samples, params.seed)
    write_json(EXPORT_REPORT, {"variant": ex.variant, **report})
    click.echo("conversion seconds (not in the tracked report): "
               + ", ".join(f"{name} {seconds:.1f}" for name, seconds in timings.items()))
    write_json(EXPORT_METRICS, export_metrics(report))


if __name__ == "__main__":
    main()
