"""slipway login / logout / tokens."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from slipway_cli import config, output
from slipway_cli.client import ApiError, Client
from slipway_cli.common import JsonOption, connect, wants_json
from slipway_cli.errors import AUTH, USAGE, CliError


def login(
    url: Annotated[str, typer.Argument(help="The portal's address, e.g. https://slipway.example.com")],
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="The API token (default: asked for without echo). Anything on a command line may "
            "land in the shell's history.",
        ),
    ] = None,
) -> None:
    """Check a token against the portal and keep it (with the URL) for the next commands."""
    base = config.normalize_url(url)
    if token is None:
        token = typer.prompt(f"API token (from {base}/account/token/)", hide_input=True)
    token = token.strip()
    if not token:
        raise CliError("No token given; make one at " + f"{base}/account/token/", USAGE)
    with Client(config.Credentials(url=base, token=token)) as client:
        try:
            page = client.get("apps/", limit=1)
        except ApiError as exc:
            if exc.code == AUTH:
                raise CliError(f"The portal at {base} refused the token: {exc.detail}", AUTH) from None
            raise
    path = config.save(base, token)
    count = page.get("count") if isinstance(page, dict) else None
    seen = f"; you see {count} app{'s' if count != 1 else ''}" if isinstance(count, int) else ""
    output.line(f"Logged in to {base}{seen}. The token is kept in {path} (readable by you only).")
    for variable in (config.URL_VARIABLE, config.TOKEN_VARIABLE):
        if os.environ.get(variable):
            output.warning(f"{variable} is set in this shell and wins over what was just saved.")


def logout() -> None:
    """Forget the saved token (it stays valid at the portal until revoked there)."""
    url = config.forget()
    if url is None:
        output.line("Not logged in: nothing to forget.")
    else:
        where = f"{url}/account/token/" if url else "the portal's API token page"
        output.line(
            f"Logged out: the token is removed from {config.config_path()}. "
            f"It keeps working for anyone who has a copy until you revoke it at {where}."
        )
    if os.environ.get(config.TOKEN_VARIABLE):
        output.warning(f"{config.TOKEN_VARIABLE} is still set in this shell.")


def tokens(as_json: JsonOption = False) -> None:
    """Your API tokens: name, scope, state, expiry and last use (never a key; make and revoke
    them on the portal's API tokens page)."""
    with connect() as client:
        listed = client.get_all("tokens/")
    if wants_json(as_json):
        output.print_json(listed)
        return
    output.table(
        ["ID", "NAME", "SCOPE", "KEY", "STATE", "EXPIRES", "LAST USED", "FROM"],
        (
            [
                t.get("id"),
                t.get("name"),
                t.get("scope"),
                f"{t.get('prefix')}…",
                t.get("state"),
                output.when(t.get("expires_at")),
                output.when(t.get("last_used_at")),
                t.get("last_used_from"),
            ]
            for t in listed
        ),
        empty="No tokens.",
    )


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Account")(login)
    app.command(rich_help_panel="Account")(logout)
    app.command(rich_help_panel="Account")(tokens)
