"""User-facing errors: one line of text, and the CLI exits with code 2 without a traceback."""


class NextclickError(Exception):
    """An error caused by the user's input (a file, a flag, a parameter), not by a bug."""


class DataError(NextclickError):
    """An event file (or a directory of them) cannot be read or does not have the expected form."""


class ConfigError(NextclickError):
    """A model or run parameter is unknown or has a value of the wrong type or range."""
