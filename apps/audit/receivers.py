"""Changes made outside the services: the Django admin (its own log of each save and delete),
and sign-ins (who signed in or out, and attempts that failed)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry, LogEntryManager
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.http import HttpRequest

from apps.audit.models import AuditEntry, Source
from apps.audit.services import entry, record_many

VERBS = {ADDITION: "add", CHANGE: "change", DELETION: "delete"}


def _admin_entry(log: LogEntry) -> AuditEntry:
    verb = VERBS.get(log.action_flag, "change")
    kind = log.content_type.model if log.content_type is not None else "object"
    message = log.get_change_message() or ""
    return entry(
        f"admin.{verb}",
        f"{verb} {kind} {log.object_repr}" + (f": {message}" if message else ""),
        actor=log.user,
        object_type=str(log.content_type.name if log.content_type is not None else kind),
        object_id=log.object_id or "",
        object_repr=log.object_repr,
        source=Source.ADMIN,
    )


@receiver(post_save, sender=LogEntry, dispatch_uid="audit_admin_log")
def admin_change(sender: type[LogEntry], instance: LogEntry, created: bool, **kwargs: Any) -> None:
    """One save or delete in the admin (its form, or an action that logs what it did)."""
    if created:
        _admin_entry(instance).save(force_insert=True)


def _hear_bulk_logs(log_actions: Callable[..., Any]) -> Callable[..., Any]:
    """The admin logs the objects of "Delete selected" (ModelAdmin.log_deletions) with one
    bulk_create when there are several (LogEntryManager.log_actions, Django 5.1+), which sends no
    post_save: those rows are heard here, in the same transaction, one audit row per object."""

    @functools.wraps(log_actions)
    def logged(self: LogEntryManager, *args: Any, **kwargs: Any) -> Any:
        made = log_actions(self, *args, **kwargs)
        # One entry is saved on its own (post_save above hears it); a manager that still
        # implements the deprecated log_action saves each on its own too.
        own = getattr(type(self), "log_action", None) is getattr(LogEntryManager, "log_action", None)
        if isinstance(made, list) and len(made) > 1 and own:
            record_many(_admin_entry(log) for log in made)
        return made

    logged.audit_hears_bulk = True  # type: ignore[attr-defined]
    return logged


def connect_bulk_logs() -> None:
    """Called once from AuditConfig.ready; a second call (a test reloading apps) does nothing."""
    if not getattr(LogEntryManager.log_actions, "audit_hears_bulk", False):
        LogEntryManager.log_actions = _hear_bulk_logs(LogEntryManager.log_actions)  # type: ignore[method-assign]


# --- sign-ins ---------------------------------------------------------------------------------------


def _backend(user: Any) -> str:
    backend = str(getattr(user, "backend", "") or "")
    return backend.rsplit(".", 1)[-1]


@receiver(user_logged_in, dispatch_uid="audit_signed_in")
def signed_in(sender: type, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    backend = _backend(user)
    entry(
        "user.sign-in",
        f"{user.get_username()} signed in" + (f" ({backend})" if backend else ""),
        actor=user,
        obj=user,
        object_type="user",
        data={"backend": backend} if backend else None,
    ).save(force_insert=True)


@receiver(user_logged_out, dispatch_uid="audit_signed_out")
def signed_out(sender: type, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if user is None or not getattr(user, "is_authenticated", False):
        return  # signing out while signed out changes nothing
    entry(
        "user.sign-out", f"{user.get_username()} signed out", actor=user, obj=user, object_type="user"
    ).save(force_insert=True)


@receiver(user_login_failed, dispatch_uid="audit_sign_in_failed")
def sign_in_failed(
    sender: str, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    # Only the name typed: Django masks the password in `credentials`, and it is never kept.
    name = str(credentials.get("username") or "")[:150]
    entry(
        "user.sign-in-failed",
        f"sign-in failed for {name!r}" if name else "sign-in failed without a username",
        object_type="user",
        object_repr=name,
        data={"username": name},
    ).save(force_insert=True)
