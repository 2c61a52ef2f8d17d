"""``python -m mcad_core.album`` = the ``mcad`` command (for a checkout without ``pip install -e .``)."""

from mcad_core.album.cli import main

main()
