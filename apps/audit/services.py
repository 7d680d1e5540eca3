"""`record`: one audit row per change, in the caller's transaction (a change rolled back leaves
no row; a row never claims a change that did not happen)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import models

from apps.audit.context import current
from apps.audit.models import AuditEntry

# Keys whose values could be secret: a caller that passes one gets an error at once (tests), never
# a row holding it. Names of secrets are given under other keys (e.g. "secret_names").
FORBIDDEN_KEYS = {"secrets", "secret", "password", "passwd", "token", "key"}
MAX_SUMMARY = AuditEntry._meta.get_field("summary").max_length or 500


def _check(data: Any, path: str = "data") -> None:
    if isinstance(data, dict):
        for key, value in data.items():
            if str(key).lower() in FORBIDDEN_KEYS:
                raise ValueError(f"{path}.{key}: an audit row never holds a value that may be secret")
            _check(value, f"{path}.{key}")
    elif isinstance(data, list | tuple):
        for item in data:
            _check(item, path)


def _team_of(obj: models.Model | None) -> Any:
    if obj is None:
        return None
    team = getattr(obj, "team", None)
    if team is None and getattr(obj, "app", None) is not None:
        team = getattr(obj.app, "team", None)  # type: ignore[attr-defined]
    return team if isinstance(team, models.Model) else None


def entry(
    action: str,
    summary: str,
    *,
    actor: Any = None,
    obj: models.Model | None = None,
    object_type: str = "",
    object_id: Any = "",
    object_repr: str = "",
    team: Any = None,
    data: dict[str, Any] | None = None,
    source: str | None = None,
) -> AuditEntry:
    """One row, not saved yet (`record_many` writes several in one statement)."""
    _check(data or {})
    origin = current()
    person = actor if getattr(actor, "is_authenticated", False) else None
    if obj is not None:
        object_type = object_type or str(obj._meta.verbose_name)
        object_id = object_id or obj.pk
        object_repr = object_repr or str(obj)
    team = team if team is not None else _team_of(obj)
    return AuditEntry(
        actor=person,
        actor_name=person.get_username() if person is not None else "",
        source=source or origin.source,
        address=origin.address,
        action=action,
        object_type=object_type[:40],
        object_id=str(object_id or "")[:64],
        object_repr=object_repr[:200],
        team=team,
        team_slug=getattr(team, "slug", "") or "",
        summary=summary if len(summary) <= MAX_SUMMARY else summary[: MAX_SUMMARY - 1] + "…",
        data=data or {},
    )


def record(
    action: str,
    summary: str,
    *,
    actor: Any = None,
    obj: models.Model | None = None,
    object_type: str = "",
    object_id: Any = "",
    object_repr: str = "",
    team: Any = None,
    data: dict[str, Any] | None = None,
    source: str | None = None,
) -> AuditEntry:
    """One row: `actor` (a user, or None for the portal itself) did `action` on `obj` (or the
    object named by type/id/repr). Where from comes from the request, task or reconcile."""
    row = entry(
        action,
        summary,
        actor=actor,
        obj=obj,
        object_type=object_type,
        object_id=object_id,
        object_repr=object_repr,
        team=team,
        data=data,
        source=source,
    )
    row.save(force_insert=True)
    return row


def record_many(rows: Iterable[AuditEntry]) -> list[AuditEntry]:
    """Several rows (made with `entry`) in one statement: a change to many objects at once (a
    bulk delete in the admin, addresses freed together) is still one row per object."""
    return AuditEntry.objects.bulk_create(list(rows))
