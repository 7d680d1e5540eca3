"""Following an operation until it ends: the portal keeps its progress in the operation row
(`params.instances`: one row per instance with its state), so polling the row shows what the
app page shows."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from slipway_cli import output
from slipway_cli.client import Client
from slipway_cli.errors import FAILED, INTERRUPTED, UNREACHABLE, CliError

TERMINAL = ("succeeded", "failed")
EVERY = 0.5
# A portal restarted during a deploy (a new release of the portal itself) is back within this.
UNREACHABLE_FOR = 30.0


def describe(row: dict[str, Any]) -> str:
    name = str(row.get("name") or f"slot {row.get('slot', '?')}")
    host = f" on {row['host']}" if row.get("host") else ""
    # "recreating: on lab-h1" says the host twice.
    shown = row.get("detail") if row.get("detail") != host.strip() else ""
    detail = f": {shown}" if shown else ""
    return f"  {name}{host}: {row.get('state', '?')}{detail}"


def follow(
    client: Client, operation: dict[str, Any], show: Callable[[str], None], every: float = EVERY
) -> dict[str, Any]:
    """Poll the operation until it succeeds or fails, calling `show` once per change of its
    status and of each instance's state; returns its last state."""
    seen: dict[str, tuple[Any, Any]] = {}
    status = None
    lost_since: float | None = None
    while True:
        changed = operation.get("status") != status
        status = operation.get("status")
        said = f"operation {operation.get('id')} ({operation.get('kind', '?')}): {status}"
        if changed and status not in TERMINAL:
            show(said)
        params = operation.get("params")
        rows = params.get("instances") if isinstance(params, dict) else None
        for index, row in enumerate(rows if isinstance(rows, list) else []):
            if not isinstance(row, dict):
                continue
            key = str(row.get("name") or index)
            now = (row.get("state"), row.get("detail"))
            if seen.get(key) != now:
                seen[key] = now
                show(describe(row))
        # The end after the rows: the last instance's "done" reads before "succeeded".
        if changed and status in TERMINAL:
            show(said)
        if status in TERMINAL:
            return operation
        time.sleep(every)
        try:
            operation = client.get(f"operations/{operation['id']}/")
            lost_since = None
        except CliError as exc:
            if exc.code != UNREACHABLE:
                raise
            lost_since = lost_since or time.monotonic()
            if time.monotonic() - lost_since > UNREACHABLE_FOR:
                raise CliError(
                    f"{exc.message} (operation {operation['id']} may still be running; "
                    "its state is on the app page)",
                    UNREACHABLE,
                ) from None


def outcome(operation: dict[str, Any]) -> str:
    """The last line: what the operation did, or its error."""
    if operation.get("status") == "failed":
        return str(operation.get("error") or "the operation failed without saying why")
    return str(operation.get("summary") or "done")


def to_the_end(
    client: Client, operation: dict[str, Any], *, as_json: bool, answer: dict[str, Any] | None = None
) -> None:
    """Follow the operation, then print how it ended (with --json: the API's answer with the
    operation as it ended, progress going to stderr); a failed one exits 1 with its error."""
    try:
        done = follow(client, operation, lambda text: output.line(text, to_stderr=as_json))
    except KeyboardInterrupt:
        raise CliError(
            f"Stopped following; operation {operation.get('id')} goes on in the portal (`slipway info APP`).",
            INTERRUPTED,
        ) from None
    failed = done.get("status") == "failed"
    if as_json:
        output.print_json({**answer, "operation": done} if answer is not None else done)
    elif not failed:
        output.line(outcome(done), style="green")
    if failed:
        raise CliError(f"operation {done.get('id')} failed: {outcome(done)}", FAILED)
