"""Stage `prepare`: image/caption manifests for train/val/test from params.data (docs/DESIGN.md §2).

Writes data/prepared/ (manifests, source.json, synthetic images), reports/data.json
(the dataset card) and reports/contact_sheet.png, all relative to the working directory.
"""

import click

from mcad_core.cli import one_line_errors, params_option
from mcad_core.data.prepare import prepare_dataset
from mcad_core.params import load_params
from mcad_core.paths import CONTACT_SHEET, DATA_CARD, PREPARED


@click.command()
@params_option
@one_line_errors
def main(params_path: str) -> None:
    """Build data/prepared/ from the embedded generator or a Karpathy-split dataset on disk."""
    params = load_params(params_path)
    prepare_dataset(params.data, PREPARED, DATA_CARD, CONTACT_SHEET)


if __name__ == "__main__":
    main()
