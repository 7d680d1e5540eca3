"""Exit codes scripts can rely on, and the one exception that carries them to `main`."""

from __future__ import annotations

OK = 0
FAILED = 1  # the API refused, or the operation failed
USAGE = 2  # typer's own for a bad command line; also a bad URL or argument we check ourselves
AUTH = 3  # not logged in, or the token was refused
UNREACHABLE = 4  # the portal could not be reached (or did not answer as the Slipway API)
INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


class CliError(Exception):
    """An error to show as one message (no traceback) and exit with `code`."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
