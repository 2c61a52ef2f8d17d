"""Stage `fuse`: fused teacher targets from the cache (docs/DESIGN.md §4.1-4.2)."""

import click

from mcad_core.cli import one_line_errors, params_option
from mcad_core.params import load_params
from mcad_core.paths import CACHE, FUSE_REPORT, FUSED, PREPARED, TEACHERS


@click.command()
@params_option
@one_line_errors
def main(params_path: str) -> None:
    """Fit the projection P, write fused features and shifted logits, report ranking on val."""
    from mcad_core.io import write_json
    from mcad_core.mcad.targets import write_fused_targets

    params = load_params(params_path)
    report = write_fused_targets(params, FUSED, PREPARED, TEACHERS, CACHE)
    write_json(FUSE_REPORT, {"projection": params.fuse.projection, "shift": params.fuse.shift, **report})


if __name__ == "__main__":
    main()
