"""Shared fixtures. Three standing users (healthchecks style): an owner (developer of team
"alpha"), a member of the same team, an outsider in team "beta"; plus a lead and ops."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from apps.accounts.models import Membership, Team


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Markers follow the folders, so a test cannot forget to say what it needs.
    for item in items:
        path = str(item.path)
        if "/tests/docker/" in path:
            item.add_marker(pytest.mark.docker)
        elif "/tests/browser/" in path:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def django_db_modify_db_settings() -> None:
    # Worker processes started by tests must see the test database, so SQLite's test
    # database is a file, not the in-memory default.
    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3":
        db.setdefault("TEST", {})["NAME"] = str(settings.VAR_DIR / "test.sqlite3")


def _user(username: str, *, staff: bool = False) -> User:
    return User.objects.create_user(username, f"{username}@example.invalid", "pw-" + username, is_staff=staff)


@pytest.fixture
def alpha(db: None) -> Team:
    return Team.objects.create(slug="alpha", name="Alpha")


@pytest.fixture
def beta(db: None) -> Team:
    return Team.objects.create(slug="beta", name="Beta")


@pytest.fixture
def owner(alpha: Team) -> User:
    user = _user("owner")
    Membership.objects.create(team=alpha, user=user, role=Membership.Role.DEVELOPER)
    return user


@pytest.fixture
def lead(alpha: Team) -> User:
    user = _user("lead")
    Membership.objects.create(team=alpha, user=user, role=Membership.Role.LEAD)
    return user


@pytest.fixture
def outsider(beta: Team) -> User:
    user = _user("outsider")
    Membership.objects.create(team=beta, user=user, role=Membership.Role.DEVELOPER)
    return user


@pytest.fixture
def ops(db: None) -> User:
    return _user("ops", staff=True)
