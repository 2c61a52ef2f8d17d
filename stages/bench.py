"""Stage `bench`: the exported towers and text->image search, measured as a phone runs them (docs/DESIGN.md §6)."""

import click

from mcad_core.cli import one_line_errors, params_option
from mcad_core.params import load_params
from mcad_core.paths import LATENCY, PREPARED, SEARCH_LATENCY_PNG, SEARCH_LATENCY_ROWS, SEARCH_METRICS, TFLITE
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
    report = run_bench(TFLITE, list(b.threads), b.runs, b.warmup, list(b.gallery_sizes), b.topk, queries, params.seed,
                       b.recall_queries, PREPARED)
    write_json(LATENCY, report)
    write_json(SEARCH_METRICS, search_metrics(report["search"], report["search_recall"], report["real_query_recall"]))
    write_text(SEARCH_LATENCY_ROWS, search_rows_csv(report["search"]))
    plot_search_latency(report["search"], SEARCH_LATENCY_PNG)


if __name__ == "__main__":
    main()
