"""slipway logs / exec."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import httpx
import typer

from slipway_cli import output
from slipway_cli.cmd_apps import AppArgument
from slipway_cli.common import JsonOption, connect, instance_of, parse_target, wants_json

# Exit code of a command the portal killed at its timeout, as timeout(1) reports one.
TIMED_OUT = 124
# The portal's own bound on a command's timeout (EXEC_MAX_TIMEOUT): the longest we wait.
LONGEST_EXEC = 600


def logs(
    slug: AppArgument,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C")
    ] = False,
    instance: Annotated[
        int | None,
        typer.Option("--instance", metavar="SLOT", help="Only this instance (default: all, merged)"),
    ] = None,
    tail: Annotated[
        str | None, typer.Option(metavar="N", help="The last N lines (default 200; `all` for one instance)")
    ] = None,
    timestamps: Annotated[
        bool, typer.Option("--timestamps", "-t", help="Docker's time before each line")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """What the app's instances print, merged by time and marked with the instance (or one's)."""
    params: dict[str, str] = {}
    if tail is not None:
        params["tail"] = tail
    if follow:
        params["follow"] = "1"
    if timestamps:
        params["timestamps"] = "1"
    if wants_json(as_json):
        params["json"] = "1"  # JSON lines: one object per line
    # Following, a quiet app may write nothing for hours: no read timeout then.
    timeout = httpx.Timeout(30.0, read=None if follow else 120.0)
    with connect() as client:
        path = f"apps/{slug}/logs/"
        if instance is not None:
            path = f"instances/{instance_of(client, slug, instance)['id']}/logs/"
        with client.stream(path, params, timeout) as response:
            for chunk in response.iter_bytes():
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()


def exec_(
    target: Annotated[
        str,
        typer.Argument(
            metavar="APP[/SLOT]", help="The app, and the instance's slot (default: the first running)"
        ),
    ],
    command: Annotated[
        list[str], typer.Argument(metavar="CMD", help="The program and its arguments, after --")
    ],
    timeout: Annotated[
        int | None, typer.Option(help="Seconds before it is killed (default: the portal's, 30)")
    ] = None,
    user: Annotated[str | None, typer.Option(help="Run as this user (default: the image's)")] = None,
    workdir: Annotated[str | None, typer.Option(help="Run in this directory")] = None,
    as_json: JsonOption = False,
) -> None:
    """Run a command in a running instance and exit with its exit code.

    No shell unless you ask for one: slipway exec web -- sh -c 'ls | wc -l'."""
    slug, slot = parse_target(target)
    body: dict[str, Any] = {"argv": command}
    if timeout is not None:
        body["timeout"] = timeout
    if user is not None:
        body["user"] = user
    if workdir is not None:
        body["workdir"] = workdir
    waiting = httpx.Timeout(30.0, read=(timeout or LONGEST_EXEC) + 30.0)
    with connect() as client:
        found = instance_of(client, slug, slot)
        result = client.post(f"instances/{found['id']}/exec/", body, timeout=waiting)
    if wants_json(as_json):
        output.print_json(result)
    else:
        sys.stdout.write(result.get("output") or "")
        sys.stdout.flush()
    if result.get("error"):
        output.error(str(result["error"]))
    if result.get("timed_out"):
        raise typer.Exit(TIMED_OUT)
    code = result.get("exit_code")
    raise typer.Exit(code if isinstance(code, int) else 1)


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Running apps")(logs)
    app.command("exec", rich_help_panel="Running apps")(exec_)
