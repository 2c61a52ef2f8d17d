"""The one error type a user should ever see from a stage: a one-line message."""


class McadError(Exception):
    """Bad input or configuration. The message names the file or param and what is wrong."""


def one_line(err: BaseException) -> str:
    """An exception as its type and first non-blank line (at most 300 characters): a converter's,
    an interpreter's or an image decoder's message, fit for a one-line report."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:300]
