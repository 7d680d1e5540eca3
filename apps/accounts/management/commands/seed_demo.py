"""Demo users for `make up`: a developer, a team lead and an ops admin, in team "demo".

Passwords are generated once and kept in var/demo-users.json (outside git), so running
`make up` again prints the same ones.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from apps.accounts.models import Membership, Team

DEMO_USERS = [
    # username, role in team "demo" (None: not a member), staff
    ("dev", Membership.Role.DEVELOPER, False),
    ("lead", Membership.Role.LEAD, False),
    ("ops", None, True),
]


class Command(BaseCommand):
    help = "Create (or keep) the demo team and users, and print their passwords."

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        path = settings.VAR_DIR / "demo-users.json"
        passwords: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        team, _ = Team.objects.get_or_create(slug="demo", defaults={"name": "Demo team"})
        User = get_user_model()
        for username, role, staff in DEMO_USERS:
            password = passwords.setdefault(username, secrets.token_urlsafe(12))
            user, _ = User.objects.get_or_create(
                username=username, defaults={"email": f"{username}@example.invalid"}
            )
            user.is_staff = staff
            user.is_superuser = staff
            user.set_password(password)
            user.save()
            if role is not None:
                Membership.objects.update_or_create(team=team, user=user, defaults={"role": role})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(passwords, indent=2))
        path.chmod(0o600)
        self.stdout.write("Demo users (team 'demo'):")
        for username, role, staff in DEMO_USERS:
            what = "ops (staff, admin)" if staff else f"{role}"
            self.stdout.write(f"  {username:5} password {passwords[username]:18} {what}")
