"""Shared fixtures. Three standing users (healthchecks style): an owner (developer of team
"alpha"), a member of the same team, an outsider in team "beta"; plus a lead and ops."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import User
from django.db import connection

from apps.accounts.models import Membership, Team


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Markers follow the folders, so a test cannot forget to say what it needs.
    for item in items:
        path = str(item.path)
        if "/tests/docker/" in path:
            item.add_marker(pytest.mark.docker)
        elif "/tests/browser/" in path:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session", autouse=True)
def _fast_password_hashing() -> None:
    # The production hasher takes ~0.3 s per password on purpose; tests make many users. The
    # same algorithm with few rounds keeps hashes that a portal under daphne (a separate process
    # with the real settings) still accepts: the rounds are stored in each hash.
    settings.PASSWORD_HASHERS = ["tests.conftest.FastPBKDF2PasswordHasher"]


class FastPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    iterations = 1000


@pytest.fixture(scope="session")
def django_db_modify_db_settings() -> None:
    # Worker processes started by tests must see the test database, so SQLite's test
    # database is a file, not the in-memory default.
    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3":
        # SLIPWAY_TEST_DB lets two pytest runs on one machine keep out of each other's way.
        name = os.environ.get("SLIPWAY_TEST_DB", "test.sqlite3")
        db.setdefault("TEST", {})["NAME"] = str(settings.VAR_DIR / name)


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


ROOT = Path(settings.BASE_DIR)


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


# Tests send tasks through their own Redis database, so a `make up` worker never takes a
# test's task (it would run it against the wrong database), and the reverse.
TEST_BROKER_URL = os.environ.get("TEST_BROKER_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session", autouse=True)
def _test_broker() -> None:
    from portal.celery import app

    settings.CELERY_BROKER_URL = TEST_BROKER_URL
    app.conf.update(broker_url=TEST_BROKER_URL)
    # Messages a killed earlier run left behind name rows that do not exist. Without Redis,
    # the tests that need it fail with their own message.
    with contextlib.suppress(Exception):
        app.control.purge()


@pytest.fixture
def worker(transactional_db: None) -> Iterator[None]:
    """A real Celery worker process on the test broker and the test database."""
    from portal.celery import app

    # Tasks earlier tests queued name rows of their own (rolled back) databases.
    with contextlib.suppress(Exception):
        app.control.purge()
    env = dict(os.environ, DATABASE_URL=_database_url(), CELERY_BROKER_URL=TEST_BROKER_URL)
    log = open(settings.VAR_DIR / "test-worker.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "portal",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            "2",
            "--without-mingle",
            "--without-gossip",
            "--loglevel",
            "INFO",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
