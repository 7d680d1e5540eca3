"""slipway deploy / releases / rollback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from slipway_cli import output, pack
from slipway_cli.client import ApiError, Client
from slipway_cli.cmd_apps import AppArgument
from slipway_cli.common import JsonOption, connect, wants_json
from slipway_cli.errors import FAILED, CliError
from slipway_cli.follow import follow, to_the_end

# An upload may take long on a slow link, and the portal reads the whole archive before it answers.
UPLOAD_TIMEOUT = httpx.Timeout(30.0, read=300.0, write=None)

NoteOption = Annotated[str, typer.Option(help="Why: shown in the release list and the app's timeline")]
BatchOption = Annotated[
    int | None, typer.Option(min=1, help="Instances replaced at a time (default: the portal's, one)")
]
WaitOption = Annotated[
    bool,
    typer.Option(
        "--wait", help="If another deploy of the app is running, wait for it to end, then start this one"
    ),
]


def size(count: Any) -> str:
    if not isinstance(count, int):
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


def _started(
    client: Client, send: Callable[[], dict[str, Any]], wait: bool, show: Callable[[str], None]
) -> dict[str, Any]:
    """The answer of `send`; on 409 (a deploy of the app is running) with --wait, once that
    deploy ended, sent again, as often as another one got in first."""
    while True:
        try:
            return send()
        except ApiError as exc:
            data = exc.data if isinstance(exc.data, dict) else {}
            running = data.get("operation")
            if exc.status != 409 or not isinstance(running, int):
                raise
            detail = str(data.get("detail") or exc.message)
            if not wait:
                raise CliError(f"{detail} (operation {running}; --wait waits for it)", FAILED) from None
            show(f"{detail}: waiting for operation {running} to end")
            follow(client, client.get(f"operations/{running}/"), lambda _: None)


def _announce(slug: str, answer: dict[str, Any], verb: str, show: Callable[[str], None]) -> None:
    release = answer.get("release") or {}
    archive = release.get("archive") or {}
    facts = []
    if archive:
        facts.append(f"{archive.get('files')} files, {size(archive.get('size'))}")
        facts.append(f"sha256 {str(archive.get('sha256', ''))[:12]}")
    if release.get("restored_from"):
        facts.append(f"as release {release['restored_from']} was")
    facts.append(f"on {release.get('base_image')}")
    operation = answer.get("operation")
    said = f"release {release.get('number')} ({', '.join(facts)})"
    if isinstance(operation, dict):
        show(f"{verb} {said}: operation {operation.get('id')}")
    else:
        show(f"Made {said}; {slug} has no instances: those `slipway scale` starts run it.")


def _to_the_end(client: Client, answer: dict[str, Any], as_json: bool) -> None:
    if isinstance(answer.get("operation"), dict):
        to_the_end(client, answer["operation"], as_json=as_json, answer=answer)
    elif as_json:
        output.print_json(answer)


def deploy(
    slug: AppArgument,
    source: Annotated[
        Path | None,
        typer.Argument(
            metavar="DIR|ARCHIVE",
            exists=True,
            help="A directory (packed whole: nothing left out) or a tar archive; "
            "none: deploy the running release's files again",
            show_default=False,
        ),
    ] = None,
    note: NoteOption = "",
    batch: BatchOption = None,
    wait: WaitOption = False,
    as_json: JsonOption = False,
) -> None:
    """Upload the app's files as a new release and roll it out, following each instance."""
    as_json = wants_json(as_json)

    def show(text: str) -> None:
        output.line(text, to_stderr=as_json)

    packed = pack.prepare(source) if source is not None else None
    if packed is not None and packed.files >= 0:
        show(f"Packed {source}: {packed.files} files, {size(packed.size)} compressed")
    form: dict[str, str] = {"note": note}
    if batch is not None:
        form["batch"] = str(batch)
    try:
        with connect() as client:

            def send() -> dict[str, Any]:
                files = None
                if packed is not None:
                    packed.fileobj.seek(0)  # again after a 409
                    files = {"file": (packed.name, packed.fileobj, "application/octet-stream")}
                response = client.request(
                    "POST", f"apps/{slug}/releases/", files=files, data=form, timeout=UPLOAD_TIMEOUT
                )
                answer: dict[str, Any] = response.json()
                return answer

            answer = _started(client, send, wait, show)
            _announce(slug, answer, "Deploying", show)
            _to_the_end(client, answer, as_json)
    finally:
        if packed is not None:
            packed.fileobj.close()


def releases(slug: AppArgument, as_json: JsonOption = False) -> None:
    """The app's releases, newest first; the current one is marked *."""
    with connect() as client:
        listed = client.get_all(f"apps/{slug}/releases/")
    if wants_json(as_json):
        output.print_json(listed)
        return

    def origin(release: dict[str, Any]) -> str:
        if release.get("restored_from"):
            return f"rollback to {release['restored_from']}"
        if release.get("code_from") not in (None, release.get("number")):
            return f"files of {release['code_from']}"
        return "upload" if release.get("archive") else "-"

    output.table(
        ["", "#", "CREATED", "BY", "IMAGE", "FILES", "SIZE", "FROM", "RUNNING", "KEPT", "NOTE"],
        (
            [
                "*" if r.get("current") else "",
                r.get("number"),
                output.when(r.get("created_at")),
                r.get("created_by"),
                r.get("base_image"),
                (r.get("archive") or {}).get("files"),
                size((r.get("archive") or {}).get("size")),
                origin(r),
                r.get("instances"),
                r.get("kept"),
                "; ".join([r.get("note") or "", *(r.get("changes") or [])]).strip("; "),
            ]
            for r in listed
        ),
        empty=f"{slug} has no releases yet: `slipway deploy {slug} DIR`.",
    )


def rollback(
    slug: AppArgument,
    number: Annotated[
        int | None,
        typer.Argument(metavar="N", help="The release to go back to (default: the one before the current)"),
    ] = None,
    note: NoteOption = "",
    batch: BatchOption = None,
    wait: WaitOption = False,
    as_json: JsonOption = False,
) -> None:
    """Roll the app back to an earlier release, following each instance."""
    as_json = wants_json(as_json)

    def show(text: str) -> None:
        output.line(text, to_stderr=as_json)

    body: dict[str, Any] = {"note": note}
    if number is not None:
        body["release"] = number
    if batch is not None:
        body["batch"] = batch
    with connect() as client:
        answer = _started(client, lambda: client.post(f"apps/{slug}/rollback/", body), wait, show)
        _announce(slug, answer, "Rolling back with", show)
        _to_the_end(client, answer, as_json)


def register(app: typer.Typer) -> None:
    for command in (deploy, releases, rollback):
        app.command(rich_help_panel="Releases")(command)
