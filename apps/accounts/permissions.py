"""Who may do what: the one place that knows teams, roles and ops. Pages, the API, the admin,
websockets and services all ask here.

- Ops (staff) see and act on everything.
- A developer sees and acts on the apps of the teams they belong to.
- A lead does what a developer does for their teams, and decides their teams' resource
  requests and named commands.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet

from apps.accounts.models import Membership, Team

# request.user: a User or AnonymousUser (typed loosely: django-stubs narrows lookups to User).
User = Any


def is_ops(user: User) -> bool:
    return bool(getattr(user, "is_authenticated", False) and getattr(user, "is_staff", False))


def require_ops(user: User, doing: str) -> None:
    """PermissionDenied unless ops; `doing` says what, e.g. "drain hosts"."""
    if not is_ops(user):
        raise PermissionDenied(f"Only ops {doing}.")


def teams_of(user: User) -> QuerySet[Team]:
    """The teams whose apps the user sees: all for ops, their own for everyone else."""
    if not getattr(user, "is_authenticated", False):
        return Team.objects.none()
    if is_ops(user):
        return Team.objects.all()
    return Team.objects.filter(memberships__user=user)


def is_member(user: User, team_id: int) -> bool:
    return teams_of(user).filter(pk=team_id).exists()


def require_member(user: User, team: Team) -> None:
    if not is_member(user, team.pk):
        raise PermissionDenied(f"You are not a member of team {team.slug}.")


def teams_led_by(user: User) -> QuerySet[Membership, Any]:
    """Team ids the user leads, as a subquery (`team_id__in=`)."""
    if not getattr(user, "is_authenticated", False):
        return Membership.objects.none().values("team_id")
    return Membership.objects.filter(user=user, role=Membership.Role.LEAD).values("team_id")


def is_lead_of(user: User, team_id: int) -> bool:
    return bool(
        getattr(user, "is_authenticated", False)
        and Membership.objects.filter(user=user, team_id=team_id, role=Membership.Role.LEAD).exists()
    )


def leads_or_ops(user: User, team_id: int) -> bool:
    """Decides for the team: a lead of it, or ops."""
    return is_ops(user) or is_lead_of(user, team_id)


def leads_any_team(user: User) -> bool:
    return bool(getattr(user, "is_authenticated", False) and teams_led_by(user).exists())
