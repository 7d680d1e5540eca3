"""What the command modules share: the --json option, the signed-in client, finding an
instance by its slot."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from slipway_cli import config
from slipway_cli.client import Client
from slipway_cli.errors import FAILED, CliError

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the API's JSON instead of a table (for scripts).")
]


class Flags:
    # Set by the global `slipway --json`; each command's own --json does the same.
    json = False


def wants_json(local: bool) -> bool:
    return local or Flags.json


def connect() -> Client:
    return Client(config.credentials())


def parse_target(target: str) -> tuple[str, int | None]:
    """APP or APP/SLOT."""
    slug, slash, slot = target.partition("/")
    if not slash:
        return slug, None
    if not (slot.isascii() and slot.isdigit()):
        raise typer.BadParameter(f"{target!r}: give APP or APP/SLOT, the slot a whole number (e.g. web/0).")
    return slug, int(slot)


def instance_of(client: Client, slug: str, slot: int | None) -> dict[str, Any]:
    """The app's instance in `slot`, or (no slot given) its first running one."""
    instances: list[dict[str, Any]] = client.get(f"apps/{slug}/instances/")
    if slot is not None:
        for instance in instances:
            if instance.get("slot") == slot:
                return instance
        slots = ", ".join(str(i.get("slot")) for i in instances) or "none"
        raise CliError(f"{slug} has no instance in slot {slot} (its slots: {slots}).", FAILED)
    running = [i for i in instances if i.get("state") == "running"]
    if not running:
        states = ", ".join(f"{i.get('name')} {i.get('state')}" for i in instances) or "no instances"
        raise CliError(f"{slug} has no running instance ({states}).", FAILED)
    return min(running, key=lambda i: int(i.get("slot") or 0))
