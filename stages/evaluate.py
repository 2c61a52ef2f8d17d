"""Stage `evaluate`: test-split retrieval for every student variant and both teachers (docs/DESIGN.md §5)."""

import click

from mcad_core.cli import one_line_errors, params_option
from mcad_core.params import load_params
from mcad_core.paths import (CACHE, METRICS, MINING, PREPARED, RECALL_PNG, RECALL_ROWS, RESULTS_JSON, RESULTS_MD, STUDENTS,
                             TEACHERS, TWINS_PNG)


@click.command()
@params_option
@one_line_errors
def main(params_path: str) -> None:
    """Write reports/results.json and .md (every number), reports/metrics.json (what experiments are
    compared on: rsum and twin accuracies), a recall plot (DVC), reports/recall.png, reports/twins.png
    and reports/mining.json (how often mining found each photo's twin and hidden caption)."""
    from mcad_core.data.manifest import read_manifest
    from mcad_core.evaluation.report import (compared_metrics, plot_recalls, plot_twins, recall_rows, results_markdown,
                                             student_metrics)
    from mcad_core.io import write_json, write_text
    from mcad_core.mcad.diagnostics import mining_report
    from mcad_core.precision import autocast
    from mcad_core.student.model import load_student
    from mcad_core.teachers.build import load_teachers
    from mcad_core.teachers.report import teacher_report

    params = load_params(params_path)
    test = read_manifest(PREPARED / "test.jsonl")
    results: dict[str, dict] = {}
    for variant in params.distill.variants:
        model, tokenizer = load_student(STUDENTS / variant)
        results[variant] = student_metrics(model, tokenizer, test, PREPARED, workers=params.workers)
    dual, cross = load_teachers(TEACHERS, params.device)
    with autocast(params.device, params.precision):
        results.update(teacher_report(dual, cross, test, PREPARED, params.teachers.rerank_k, params.workers,
                                      params.cache.chunk_images))
    # After the fact: how often honest mining found what the generator knows (never read in training).
    write_json(MINING, mining_report(PREPARED, CACHE, TEACHERS, params.cache))
    write_json(RESULTS_JSON, results)
    write_json(METRICS, compared_metrics(results))
    write_text(RESULTS_MD, "# Test-split retrieval\n\n" + results_markdown(results))
    write_json(RECALL_ROWS, recall_rows(results))
    plot_recalls(results, RECALL_PNG)
    plot_twins(results, TWINS_PNG)


if __name__ == "__main__":
    main()
