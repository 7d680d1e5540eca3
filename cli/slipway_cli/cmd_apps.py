"""slipway apps / create / info / scale."""

from __future__ import annotations

import shlex
from typing import Annotated, Any

import typer

from slipway_cli import output
from slipway_cli.common import JsonOption, connect, wants_json
from slipway_cli.follow import to_the_end

AppArgument = Annotated[str, typer.Argument(metavar="APP", help="The app's slug")]


def apps(as_json: JsonOption = False) -> None:
    """The apps you can see: your teams' (ops: all)."""
    with connect() as client:
        listed = client.get_all("apps/")
    if wants_json(as_json):
        output.print_json(listed)
        return
    output.table(
        ["APP", "TEAM", "IMAGE", "RUNNING", "MEMORY", "CPUS", "PORT"],
        (
            [
                a.get("slug"),
                a.get("team"),
                a.get("base_image_reference"),
                f"{a.get('running')}/{a.get('instances')}",
                f"{a.get('memory_mb')} MiB",
                a.get("cpus"),
                a.get("port"),
            ]
            for a in listed
        ),
        empty="No apps yet: make one with `slipway create APP --team TEAM --image NAME:TAG`.",
    )


def _environment(pairs: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name:
            raise typer.BadParameter(f"{pair!r}: give NAME=value.", param_hint="--env")
        if name in env:
            raise typer.BadParameter(f"{name} is given twice.", param_hint="--env")
        env[name] = value
    return env


def create(
    slug: AppArgument,
    team: Annotated[str, typer.Option(help="The team that owns it (its slug)")],
    image: Annotated[str, typer.Option(help="The base image, NAME:TAG (see the portal's image catalog)")],
    port: Annotated[int | None, typer.Option(help="The port the app listens on")] = None,
    command: Annotated[
        str | None, typer.Option(help="The command, as a shell line (split like a shell; run without one)")
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", "-e", help="NAME=value; repeat for more", show_default=False)
    ] = None,
    memory: Annotated[int | None, typer.Option(help="MiB per instance")] = None,
    cpus: Annotated[str | None, typer.Option(help="Cores per instance, e.g. 0.5")] = None,
    instances: Annotated[int | None, typer.Option(help="How many to start (default 0)")] = None,
    as_json: JsonOption = False,
) -> None:
    """Create an app."""
    body: dict[str, Any] = {"slug": slug, "team": team, "base_image": image}
    if command is not None:
        try:
            body["command"] = shlex.split(command)
        except ValueError as exc:
            raise typer.BadParameter(
                f"cannot split it into arguments: {exc}", param_hint="--command"
            ) from None
    if env:
        body["env"] = _environment(env)
    for name, value in (("port", port), ("memory_mb", memory), ("cpus", cpus), ("instances", instances)):
        if value is not None:
            body[name] = value
    with connect() as client:
        made = client.post("apps/", body)
    if wants_json(as_json):
        output.print_json(made)
        return
    starting = f"; {made.get('instances')} instance(s) starting" if made.get("instances") else ""
    output.line(
        f"Created {made.get('slug')} (team {made.get('team')}, {made.get('base_image_reference')}){starting}. "
        f"See it with `slipway info {made.get('slug')}`."
    )


def info(slug: AppArgument, as_json: JsonOption = False) -> None:
    """An app's settings, its instances and its last operations."""
    with connect() as client:
        detail = client.get(f"apps/{slug}/")
        instances = client.get(f"apps/{slug}/instances/")
        operations = client.get(f"apps/{slug}/operations/")
    if wants_json(as_json):
        output.print_json({"app": detail, "instances": instances, "operations": operations[:10]})
        return
    env = detail.get("env") or {}
    output.fields(
        [
            ("app", detail.get("slug")),
            ("team", detail.get("team")),
            ("image", detail.get("base_image_reference")),
            ("command", shlex.join(detail.get("command") or []) or "(the image's)"),
            ("port", detail.get("port")),
            ("environment", ", ".join(sorted(env)) or "-"),
            ("memory", f"{detail.get('memory_mb')} MiB per instance"),
            ("cpus", f"{detail.get('cpus')} per instance"),
            ("instances", f"{detail.get('running')} running of {detail.get('instances')}"),
            ("health check", detail.get("health_check")),
            ("volume", detail.get("volume_mount") or "(the image's default)"),
        ]
    )
    output.line("")
    output.table(
        ["SLOT", "NAME", "HOST", "STATE", "ADDRESS", "IMAGE", "ERROR"],
        (
            [
                i.get("slot"),
                i.get("name"),
                i.get("host"),
                i.get("state"),
                i.get("endpoint") or i.get("address"),
                i.get("image"),
                i.get("last_error") or "",
            ]
            for i in instances
        ),
        empty="No instances: start some with `slipway scale APP N`.",
        title="Instances",
    )
    if operations:
        output.line("")
        output.table(
            ["ID", "KIND", "STATUS", "BY", "CREATED", "SUMMARY"],
            (
                [
                    o.get("id"),
                    o.get("kind"),
                    o.get("status"),
                    o.get("requested_by"),
                    output.when(o.get("created_at")),
                    o.get("error") or o.get("summary"),
                ]
                for o in operations[:5]
            ),
            title="Last operations",
        )


def scale(
    slug: AppArgument,
    instances: Annotated[int, typer.Argument(metavar="N", help="How many instances to run")],
    wait: Annotated[bool, typer.Option("--wait", help="Follow the operation until it ends")] = False,
    as_json: JsonOption = False,
) -> None:
    """Run N instances of the app."""
    as_json = wants_json(as_json)
    with connect() as client:
        operation = client.post(f"apps/{slug}/scale/", {"instances": instances})
        if not wait:
            if as_json:
                output.print_json(operation)
            else:
                output.line(
                    f"Scaling {slug} to {instances} (operation {operation.get('id')}, {operation.get('status')}); "
                    f"follow it with --wait or `slipway info {slug}`."
                )
            return
        to_the_end(client, operation, as_json=as_json)


def register(app: typer.Typer) -> None:
    for command in (apps, create, info, scale):
        app.command(rich_help_panel="Apps")(command)
