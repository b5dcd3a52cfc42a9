"""The one exception type a user sees as a message rather than a traceback."""


class StageError(Exception):
    """A problem the user can fix; the CLI prints it without a traceback and exits with status 1."""
