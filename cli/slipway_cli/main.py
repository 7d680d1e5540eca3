"""The `slipway` command: the app, its global options, and the one place errors become a
message and an exit code (see errors.py; docs/cli.md lists them)."""

from __future__ import annotations

import os
import sys
import traceback
from typing import Annotated, Any, NoReturn

import typer

from slipway_cli import (
    __version__,
    cmd_account,
    cmd_apps,
    cmd_console,
    cmd_releases,
    cmd_resources,
    config,
    output,
)
from slipway_cli.common import Flags
from slipway_cli.errors import FAILED, CliError

DEBUG_VARIABLE = "SLIPWAY_DEBUG"


class SlipwayTyper(typer.Typer):
    """Typer that shows a CliError as its message (no traceback) and exits with its code; an
    unexpected error too, unless SLIPWAY_DEBUG asks for the traceback."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except CliError as exc:
            _fail(exc.message, exc.code)
        except Exception as exc:
            if os.environ.get(DEBUG_VARIABLE):
                traceback.print_exc()
            _fail(
                f"unexpected {type(exc).__name__}: {exc} (a bug in slipway; {DEBUG_VARIABLE}=1 shows where)",
                FAILED,
            )


def _fail(message: str, code: int) -> NoReturn:
    output.error(message)
    sys.exit(code)


app = SlipwayTyper(
    name="slipway",
    help="Slipway from a terminal: apps, releases, logs, commands, resources. "
    "Start with `slipway login URL`.",
    no_args_is_help=True,
    # Our errors are messages; a traceback with local variables could even show the token.
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        output.line(f"slipway {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the API's JSON instead of tables, for every command (for scripts)."
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    Flags.json = as_json
    loose = config.loosely_readable()
    if loose is not None:
        output.warning(f"{loose} holds your token and others may read it: chmod 600 {loose}")


cmd_account.register(app)
cmd_apps.register(app)
cmd_releases.register(app)
cmd_console.register(app)
cmd_resources.register(app)
