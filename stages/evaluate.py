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
    """Write reports/results.json and .md (every number), reports/metrics.json (what experiments are
    compared on: rsum and twin accuracies), a recall plot (DVC), reports/recall.png and reports/twins.png."""
    from mcad_core.data.manifest import read_manifest
    from mcad_core.errors import McadError
    from mcad_core.evaluation import (compared_metrics, plot_recalls, plot_twins, recall_rows, results_markdown,
                                      student_metrics)
    from mcad_core.io import write_json, write_text
    from mcad_core.models.student import load_student

    params = load_params(params_path)
    test = read_manifest(PREPARED / "test.jsonl")
    results: dict[str, dict] = {}
    for variant in params.distill.variants:
        model, tokenizer = load_student(Path("models/student") / variant)
        results[variant] = student_metrics(model, tokenizer, test, PREPARED, workers=params.workers)
    if not TEACHERS_REPORT.is_file():
        raise McadError(f"{TEACHERS_REPORT}: not found (run the teachers stage first)")
    results.update(json.loads(TEACHERS_REPORT.read_text()))
    write_json("reports/results.json", results)
    write_json("reports/metrics.json", compared_metrics(results))
    write_text("reports/results.md", "# Test-split retrieval\n\n" + results_markdown(results))
    write_json("reports/plots/recall.json", recall_rows(results))
    plot_recalls(results, "reports/recall.png")
    plot_twins(results, "reports/twins.png")


if __name__ == "__main__":
    main()
