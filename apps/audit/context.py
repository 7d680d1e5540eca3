"""Where a change comes from: set once per request (the middleware), per websocket (the
terminal's consumer), per task (the worker) or around the reconcile, and read by `record`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from apps.audit.models import Source


@dataclass(frozen=True)
class Origin:
    source: str = Source.SYSTEM
    address: str | None = None


NOWHERE = Origin()
_origin: ContextVar[Origin | None] = ContextVar("audit_origin", default=None)


def current() -> Origin:
    return _origin.get() or NOWHERE


@contextlib.contextmanager
def acting(source: str, address: str | None = None) -> Iterator[Origin]:
    """Changes made inside come from `source` (e.g. the reconcile)."""
    origin = Origin(source, address)
    token = _origin.set(origin)
    try:
        yield origin
    finally:
        _origin.reset(token)


def set_origin(origin: Origin) -> None:
    """For a task's whole run (the worker's prerun signal); the next task sets its own."""
    _origin.set(origin)


def client_address(meta: Mapping[str, object]) -> str | None:
    """The client's address: the peer, or behind our own proxy (USE_X_FORWARDED_FOR) the address
    it appended last to X-Forwarded-For (earlier ones are whatever the client sent)."""
    if settings.USE_X_FORWARDED_FOR:
        forwarded = str(meta.get("HTTP_X_FORWARDED_FOR") or "")
        if forwarded:
            return forwarded.split(",")[-1].strip() or None
    peer = meta.get("REMOTE_ADDR")
    return str(peer) if peer else None


def socket_address(scope: Mapping[str, Any]) -> str | None:
    """The client's address of a websocket (a channels scope), by the same rule as a request's:
    the peer, or behind our own proxy the last X-Forwarded-For hop."""
    meta: dict[str, object] = {}
    client = scope.get("client")
    if client:
        meta["REMOTE_ADDR"] = client[0]
    for name, value in scope.get("headers") or ():
        if name.lower() == b"x-forwarded-for":
            # Several headers of the name are one list, in order (RFC 9110 5.3).
            previous = meta.get("HTTP_X_FORWARDED_FOR")
            text = value.decode("latin-1")
            meta["HTTP_X_FORWARDED_FOR"] = f"{previous}, {text}" if previous else text
    return client_address(meta)


def request_source(path: str, user_agent: str) -> str:
    if path.startswith("/admin/"):
        return Source.ADMIN
    if path.startswith("/api/"):
        # The slipway CLI says so in its User-Agent ("slipway-cli/<version>").
        return Source.CLI if user_agent.startswith("slipway-cli/") else Source.API
    return Source.PAGE


class AuditOriginMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        origin = Origin(
            request_source(request.path, request.META.get("HTTP_USER_AGENT", "")),
            client_address(request.META),
        )
        token = _origin.set(origin)
        try:
            return self.get_response(request)
        finally:
            _origin.reset(token)
