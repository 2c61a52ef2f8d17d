"""Stage `bench`: the exported towers and text->image search, measured as a phone runs them (docs/DESIGN.md §6)."""

from pathlib import Path

import click

from mcad_core.cli import one_line_errors, params_option
from mcad_core.params import load_params
from mcad_core.paths import PREPARED

MODELS = Path("models/tflite")
REPORT = Path("reports/latency.json")
METRICS = Path("reports/search_metrics.json")
PLOT_ROWS = Path("reports/plots/search_latency.csv")
PLOT_PNG = Path("reports/search_latency.png")
N_QUERIES = 20


@click.command()
@params_option
@one_line_errors
def main(params_path: str) -> None:
    """Encoder latency and peak RSS per file and thread count; query and scan latency vs gallery size,
    with the memory floor and the scan's ratio to it, and the search's recall@k (headline p50s, floor
    ratios and recall also as DVC metrics)."""
    from mcad_core.data.manifest import flatten_captions, read_manifest
    from mcad_core.export.bench import plot_search_latency, run_bench, search_metrics, search_rows_csv
    from mcad_core.io import write_json, write_text

    params = load_params(params_path)
    b = params.bench
    queries = flatten_captions(read_manifest(PREPARED / "test.jsonl"))[0][:N_QUERIES]
    report = run_bench(MODELS, list(b.threads), b.runs, b.warmup, list(b.gallery_sizes), b.topk, queries, params.seed,
                       b.recall_queries, PREPARED)
    write_json(REPORT, report)
    write_json(METRICS, search_metrics(report["search"], report["search_recall"], report["real_query_recall"]))
    write_text(PLOT_ROWS, search_rows_csv(report["search"]))
    plot_search_latency(report["search"], PLOT_PNG)


if __name__ == "__main__":
    main()
