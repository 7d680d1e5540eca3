"""What the company's groups grant, applied to a user at each sign-in through the directory
(LDAP) or the identity provider (OIDC): ops, and a role in each team the mapping names.

The mapping (portal.signin.GroupMap, from the settings) manages the memberships of the teams it
names, for users who sign in through it: they are added, changed and removed to mirror the
groups. Memberships in other teams (given by ops in the admin) are left alone. A mapped team
that does not exist yet is made, with no quota, the first time someone is given a role in it.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from apps.accounts.models import Membership, Team
from apps.audit import services as audit
from portal.signin import GroupMap

log = logging.getLogger(__name__)

NO_ACCESS = (
    "Your account is in none of the groups that give access to Slipway. Ask ops to add you "
    "to your team's group."
)


def is_local_account(username: str) -> bool:
    """A user with a password of the portal's own (the demo users, a break-glass admin): the
    directory and the identity provider never take it over, whatever name they give."""
    user = get_user_model().objects.filter(username__iexact=username).first()
    return user is not None and user.has_usable_password()


@transaction.atomic
def grants_apply(*, user: Any, groups: set[str], mapping: GroupMap, via: str) -> bool:
    """Make the user's ops flag and memberships in the mapped teams mirror `groups`. Returns
    whether the user may see anything now: ops, or a member of a team (mapped, or given by ops
    by hand); a user who may not is refused at sign-in. The user is saved."""
    ops, roles = mapping.grants(groups)
    changes: list[str] = []
    if user.is_staff != ops:
        changes.append("ops" if ops else "no longer ops")
    # Ops from the directory are ops as the demo's are: staff and admin (all of the admin).
    user.is_staff = user.is_superuser = ops
    user.save()
    current = {
        m.team.slug: m
        for m in Membership.objects.select_related("team").filter(
            user=user, team__slug__in=mapping.team_slugs
        )
    }
    for slug, membership in current.items():
        if slug not in roles:
            membership.delete()
            changes.append(f"left {slug}")
    for slug, role in roles.items():
        if slug not in current:
            team, made = Team.objects.get_or_create(slug=slug, defaults={"name": slug})
            if made:
                log.info("team %s made for %s, who signs in through %s", slug, user.username, via)
            Membership.objects.create(team=team, user=user, role=role)
            changes.append(f"joined {slug} as {role}")
        elif (membership := current[slug]).role != role:
            membership.role = role
            membership.save(update_fields=["role"])
            changes.append(f"{role} of {slug}")
    if changes:
        log.info("%s (through %s): %s", user.username, via, ", ".join(changes))
        audit.record(
            "user.grants",
            f"{user.username} through {via}: {', '.join(changes)}",
            object_type="user",
            object_id=user.pk,
            object_repr=user.username,
            data={"via": via},
        )
    return bool(ops or roles or Membership.objects.filter(user=user).exists())
