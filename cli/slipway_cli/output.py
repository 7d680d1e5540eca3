"""What the user sees: tables for people, the API's JSON for scripts, messages on stderr.

Values from the API go into tables as `Text`, never as markup: an app's note or a command's
output may well contain `[brackets]` that rich would otherwise take for styles."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

# soft_wrap: a message is one line however narrow the terminal, so logs and greps keep it whole.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def cell(value: Any) -> Text:
    if value is None:
        return Text("-", style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, Text):
        return value
    return Text(str(value))


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str = "", title: str = "") -> None:
    rows = list(rows)
    if not rows:
        if empty:
            err.print(Text(empty, style="dim"))
        return
    shown = Table(title=title or None, title_justify="left", box=None, pad_edge=False, header_style="bold")
    for name in columns:
        shown.add_column(name)
    for row in rows:
        shown.add_row(*(cell(value) for value in row))
    out.print(shown)


def fields(pairs: Iterable[tuple[str, Any]]) -> None:
    """A record as `name  value` lines."""
    shown = Table(box=None, show_header=False, pad_edge=False)
    shown.add_column(style="bold")
    shown.add_column()
    for name, value in pairs:
        shown.add_row(Text(name), cell(value))
    out.print(shown)


def line(text: str, *, style: str = "", to_stderr: bool = False) -> None:
    (err if to_stderr else out).print(Text(text, style=style))


def error(message: str) -> None:
    err.print(Text("error: ", style="bold red") + Text(message))


def warning(message: str) -> None:
    err.print(Text("warning: ", style="bold yellow") + Text(message))


def when(iso: str | None) -> str:
    """An API time as `2026-05-01 12:03:04` (UTC as the API gives it): short enough for a table."""
    if not iso:
        return "-"
    return iso.replace("T", " ")[:19]
