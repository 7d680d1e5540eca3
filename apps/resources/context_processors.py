"""The Approvals link and its badge in the nav, for leads and ops."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.http import HttpRequest

from apps.resources.services import pending_for
from apps.resources.views import decides_requests


class ApprovalsBadge:
    """Counted only when a template shows it (the nav of full pages), so the fragments that htmx
    polls every second cost no query for it."""

    def __init__(self, user: Any) -> None:
        self.user = user

    @cached_property
    def shown(self) -> bool:
        return decides_requests(self.user)

    @cached_property
    def pending(self) -> int:
        return pending_for(self.user).count() if self.shown else 0


def approvals(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"approvals": ApprovalsBadge(user)}
