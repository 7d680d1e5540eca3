"""Terminal sessions in the browser: who may open one, whether an open one may go on, the audit.

The websocket consumer (consumers.py) is the thin interface: it calls `terminal_start` on the
handshake, `terminal_attach` for the TTY, `terminal_check` every TERMINAL_RECHECK seconds and
`terminal_end` once, whatever ended the session. Refusals carry a websocket close code and a
message safe to show; an instance the user may not see and one that does not exist get the
same answer.
"""

from __future__ import annotations

import enum
import logging
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, get_user
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from apps.accounts import directory
from apps.applications.selectors import apps_visible_to
from apps.console.models import ExecSession
from apps.console.services import check_rate, check_running, session_open
from apps.hosts import gateway
from apps.instances.models import Instance

log = logging.getLogger(__name__)


class Close(enum.IntEnum):
    """Websocket close codes (4000-4999 are the application's), HTTP-like where one fits."""

    EXITED = 1000
    ERROR = 1011
    IDLE = 4000
    TOO_LONG = 4001
    BAD_REQUEST = 4400
    SIGNED_OUT = 4401
    FORBIDDEN = 4403
    NOT_FOUND = 4404
    NOT_RUNNING = 4409
    TOO_MANY = 4429
    HOST_ERROR = 4502
    DIRECTORY_UNREACHABLE = 4503


class Refused(Exception):
    def __init__(self, code: Close, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


NOT_FOUND = "There is no such instance."


def duration_text(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _instances_for(user: Any) -> QuerySet[Instance]:
    return Instance.objects.filter(app__in=apps_visible_to(user)).exclude(
        desired_state=Instance.Desired.REMOVED
    )


def terminal_start(*, user: Any, instance_pk: int) -> tuple[ExecSession, Instance]:
    """Check that the user may open a terminal in the instance now; open its audit row."""
    if not user.is_authenticated:
        raise Refused(Close.SIGNED_OUT, "Sign in to open a terminal.")
    instance = _instances_for(user).select_related("app", "host").filter(pk=instance_pk).first()
    if instance is None:
        raise Refused(Close.NOT_FOUND, NOT_FOUND)
    try:
        check_running(instance)
    except ValidationError as exc:
        raise Refused(Close.NOT_RUNNING, " ".join(exc.messages)) from None
    try:
        check_rate(user)
    except ValidationError as exc:
        raise Refused(Close.TOO_MANY, " ".join(exc.messages)) from None
    session = session_open(user=user, instance=instance, kind=ExecSession.Kind.TERMINAL, argv=[])
    return session, instance


def terminal_attach(instance: Instance) -> gateway.TtyExec:
    """Start the shell in the instance (no database access: it runs in a thread of its own).
    Raises HostError with a message safe to show."""
    return gateway.terminal_open(instance.host, instance.container_name)


def terminal_check(*, session_key: str | None, user_pk: int, instance_pk: int) -> Refused | None:
    """Whether an open terminal may go on: its user is still signed in with the same session
    (logout deletes it from the session store; a password change or a deactivated account
    makes it invalid), may still see the app, and the instance still exists. A user signed in
    through the company directory has their groups reread first (docs/sign-in.md)."""
    request = HttpRequest()
    # A fresh read of the store: the session object in the websocket's scope is the copy
    # loaded at the handshake and still says signed in after a logout.
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = get_user(request) if session_key else None
    if user is None or not user.is_authenticated or user.pk != user_pk:
        return Refused(Close.SIGNED_OUT, "You signed out, so the terminal was closed.")
    unreachable = directory.recheck(
        user, backend=request.session.get(BACKEND_SESSION_KEY), every=float(settings.TERMINAL_RECHECK)
    )
    if unreachable:
        return Refused(Close.DIRECTORY_UNREACHABLE, unreachable)
    if not _instances_for(user).filter(pk=instance_pk).exists():
        return Refused(
            Close.FORBIDDEN,
            "You may no longer use this instance (or it was removed), so the terminal was closed.",
        )
    return None


def terminal_end(
    session_pk: int, *, exit_code: int | None, bytes_out: int, why: str = "", timed_out: bool = False
) -> None:
    """Close the audit row once: when it ended, the shell's exit code, bytes sent to the
    browser, and why Slipway ended it (empty when the shell exited or the browser left)."""
    ExecSession.objects.filter(pk=session_pk, ended_at=None).update(
        ended_at=timezone.now(),
        exit_code=exit_code,
        bytes_out=bytes_out,
        timed_out=timed_out,
        error=why[:2000],
    )
    log.info(
        "terminal %s ended: exit %s, %s bytes out%s",
        session_pk,
        exit_code,
        bytes_out,
        f", {why}" if why else "",
    )
