"""What every stage script shares: params loading and one-line errors."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from mcad_core.errors import McadError


def one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn :class:`McadError` into click's ``Error: <message>`` and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except McadError as err:
            raise click.ClickException(str(err)) from None

    return wrapper


params_option = click.option(
    "--params", "params_path", default="params.yaml", show_default=True,
    type=click.Path(dir_okay=False), help="Params file (same keys as params.yaml).",
)
