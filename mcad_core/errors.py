"""The one error type a user should ever see from a stage: a one-line message."""


class McadError(Exception):
    """Bad input or configuration. The message names the file or param and what is wrong."""
