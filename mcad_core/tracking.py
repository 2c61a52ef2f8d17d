"""Training curves through DVCLive, so `dvc plots` and `dvc exp show` see them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

LogFn = Callable[[dict[str, float], bool], None]


@contextlib.contextmanager
def live_logger(folder: Path, resume: bool, enabled: bool = True) -> Iterator[LogFn | None]:
    """Yield ``log(metrics, epoch_end)``: per-step values advance the step; epoch-end values
    (val retrieval) are logged at the current step. DVCLive writes no dvc.yaml of its own here:
    the pipeline declares its metrics and plots.

    ``MCAD_LIVE=0`` turns the curves off, for machines that run a stage script without DVC
    installed (DVCLive imports DVC's whole stack), such as a bare GPU box in the scale rehearsal.
    """
    if not enabled or os.environ.get("MCAD_LIVE", "1") == "0":
        yield None
        return
    from dvclive import Live

    with Live(str(folder), resume=resume, dvcyaml=None, save_dvc_exp=False, report=None) as live:
        def log(metrics: dict[str, float], epoch_end: bool) -> None:
            for name, value in metrics.items():
                live.log_metric(name, value)
            if not epoch_end:
                live.next_step()

        yield log
