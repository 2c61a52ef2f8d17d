"""Stage `evaluate`: test-split retrieval for every student variant and both teachers (DESIGN §5)."""

import json
from pathlib import Path

import click

from mcad_core.cli import one_line_errors, params_option
from mcad_core.params import load_params
from mcad_core.paths import PREPARED

TEACHERS_REPORT = Path("reports/teachers.json")


@click.command()
@params_option
@one_line_errors
def main(params_path: str) -> None:
    """Write reports/metrics.json, reports/results.md, a recall plot (DVC) and reports/recall.png."""
    from mcad_core.data.manifest import read_manifest
    from mcad_core.errors import McadError
    from mcad_core.evaluation import plot_recalls, recall_rows, results_markdown, student_metrics
    from mcad_core.io import write_json, write_text
    from mcad_core.models.student import load_student

    params = load_params(params_path)
    test = read_manifest(PREPARED / "test.jsonl")
    metrics: dict[str, dict] = {}
    for variant in params.distill.variants:
        model, tokenizer = load_student(Path("models/student") / variant)
        metrics[variant] = student_metrics(model, tokenizer, test, PREPARED)
    if not TEACHERS_REPORT.is_file():
        raise McadError(f"{TEACHERS_REPORT}: not found (run the teachers stage first)")
    metrics.update(json.loads(TEACHERS_REPORT.read_text()))
    write_json("reports/metrics.json", metrics)
    write_text("reports/results.md", "# Test-split retrieval\n\n" + results_markdown(metrics))
    write_json("reports/plots/recall.json", recall_rows(metrics))
    plot_recalls(metrics, "reports/recall.png")


if __name__ == "__main__":
    main()
