"""The Alerts link's badge in the nav: the user's unread notifications."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.http import HttpRequest

from apps.alerts.services import unread


class AlertsBadge:
    """Counted only when a template shows it (full pages), like the approvals badge."""

    def __init__(self, user: Any) -> None:
        self.user = user

    @cached_property
    def unread(self) -> int:
        return unread(self.user).count()


def alerts(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"alerts_badge": AlertsBadge(user)}
