"""slipway resize / requests / approve / reject, and `slipway ops hosts`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from slipway_cli import output
from slipway_cli.cmd_apps import AppArgument
from slipway_cli.common import JsonOption, connect, wants_json

IdArgument = Annotated[
    int, typer.Argument(metavar="ID", help="The request's number (see `slipway requests`)")
]


def _request_line(request: dict[str, Any]) -> str:
    change = (
        f"{request.get('old_memory_mb')} → {request.get('memory_mb')} MiB, "
        f"{request.get('old_cpus')} → {request.get('cpus')} CPUs"
    )
    result = f": {request['result']}" if request.get("result") else ""
    return (
        f"Request {request.get('id')} for {request.get('app')} ({change}) is {request.get('state')}{result}"
    )


def resize(
    slug: AppArgument,
    memory: Annotated[
        int | None, typer.Option(metavar="MB", help="MiB per instance (default: as now)")
    ] = None,
    cpus: Annotated[
        str | None, typer.Option(metavar="N", help="Cores per instance, e.g. 0.5 (default: as now)")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why: the lead who decides reads it")] = "",
    as_json: JsonOption = False,
) -> None:
    """Ask for more (or less) memory and CPU per instance, applied live once approved.

    Some changes are approved at once (within the team's quota); others wait for a lead."""
    body: dict[str, Any] = {"reason": reason}
    if memory is not None:
        body["memory_mb"] = memory
    if cpus is not None:
        body["cpus"] = cpus
    with connect() as client:
        made = client.post(f"apps/{slug}/resource-requests/", body)
    if wants_json(as_json):
        output.print_json(made)
    else:
        output.line(_request_line(made))


def requests(
    state: Annotated[
        str, typer.Option(help="pending, approved, applied, partial, rejected, cancelled, or all")
    ] = "pending",
    as_json: JsonOption = False,
) -> None:
    """Resource requests of your teams (ops: all); by default the ones waiting for a decision."""
    params = {} if state == "all" else {"state": state}
    with connect() as client:
        listed = client.get_all("resource-requests/", **params)
    if wants_json(as_json):
        output.print_json(listed)
        return
    output.table(
        ["ID", "APP", "STATE", "MEMORY", "CPUS", "BY", "CREATED", "REASON"],
        (
            [
                r.get("id"),
                r.get("app"),
                r.get("state"),
                f"{r.get('old_memory_mb')} → {r.get('memory_mb')}",
                f"{r.get('old_cpus')} → {r.get('cpus')}",
                r.get("requested_by"),
                output.when(r.get("created_at")),
                r.get("reason"),
            ]
            for r in listed
        ),
        empty="No requests" + ("" if state == "all" else f" {state}") + ".",
    )


def approve(
    number: IdArgument,
    comment: Annotated[str, typer.Option(help="A word for the one who asked")] = "",
    as_json: JsonOption = False,
) -> None:
    """Approve a resource request (a lead of the app's team, or ops); it is applied live."""
    with connect() as client:
        decided = client.post(f"resource-requests/{number}/approve/", {"comment": comment})
    if wants_json(as_json):
        output.print_json(decided)
    else:
        output.line(_request_line(decided))


def reject(
    number: IdArgument,
    reason: Annotated[str, typer.Option(help="Why not: the one who asked reads it")],
    as_json: JsonOption = False,
) -> None:
    """Reject a resource request, saying why."""
    with connect() as client:
        decided = client.post(f"resource-requests/{number}/reject/", {"comment": reason})
    if wants_json(as_json):
        output.print_json(decided)
    else:
        output.line(_request_line(decided))


ops = typer.Typer(help="For ops: the fleet.", no_args_is_help=True)


@ops.command()
def hosts(as_json: JsonOption = False) -> None:
    """The fleet's hosts: state, size, checks, the last error."""
    with connect() as client:
        listed = client.get_all("hosts/")
    if wants_json(as_json):
        output.print_json(listed)
        return
    output.table(
        ["NAME", "ADDRESS", "STATE", "CPUS", "MEMORY", "CHECKS", "AGENT", "LAST SEEN", "ERROR"],
        (
            [
                h.get("name"),
                h.get("address"),
                h.get("state"),
                h.get("cpus"),
                f"{h.get('memory_mb')} MiB" if h.get("memory_mb") is not None else None,
                "ok" if h.get("checks_ok") else ("overridden" if h.get("checks_override") else "failing"),
                h.get("agent_version"),
                output.when(h.get("last_seen")),
                h.get("last_error") or "",
            ]
            for h in listed
        ),
        empty="No hosts registered.",
    )


def register(app: typer.Typer) -> None:
    for command in (resize, requests, approve, reject):
        app.command(rich_help_panel="Resources")(command)
    app.add_typer(ops, name="ops", rich_help_panel="Ops")
