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
from kombu import Queue

from apps.accounts.models import Membership, Team

DB_FIXTURES = {"db", "transactional_db", "django_db_reset_sequences", "django_db_serialized_rollback"}


def _uses_the_database(item: pytest.Item) -> bool:
    names = set(getattr(item, "fixturenames", ()))
    return bool(names & DB_FIXTURES) or item.get_closest_marker("django_db") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Markers follow the folders, so a test cannot forget to say what it needs.
    for item in items:
        path = str(item.path)
        if "/tests/docker/" in path:
            item.add_marker(pytest.mark.docker)
        elif "/tests/browser/" in path:
            item.add_marker(pytest.mark.browser)
    # `make test` runs everything on PostgreSQL, then again on SQLite only what can tell the two
    # databases apart: the plain tests that use one (the lab and browser tests exercise the
    # hosts and the browser, which do not change with the database).
    if os.environ.get("SLIPWAY_DB_TESTS_ONLY") == "1":
        keep = [i for i in items if _uses_the_database(i) and "/tests/plain/" in str(i.path)]
        kept = {id(i) for i in keep}
        dropped = [i for i in items if id(i) not in kept]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = keep


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
    # Purges below and in the fixtures empty the image builds' queue too (the workers take it).
    app.amqp.queues.select_add(Queue("builds"))
    # Messages a killed earlier run left behind name rows that do not exist. Without Redis,
    # the tests that need it fail with their own message.
    with contextlib.suppress(Exception):
        app.control.purge()


# The module's shared worker while one runs: a test that kills workers must not have one beside
# it (it would take the test's tasks), and tests.helpers.KillableWorker refuses to start then.
SHARED_WORKERS: list[subprocess.Popen[bytes]] = []


@pytest.fixture(scope="module")
def _worker_process(django_db_setup: None) -> Iterator[subprocess.Popen[bytes]]:
    """One real Celery worker process per test module (on the test broker and the test
    database): starting one takes a second or two, and no test here kills it (the fault tests
    start workers of their own for that)."""
    # Webhook retries after 1 s, then 2 s (not 10, 20): the retry test waits for two of them.
    env = dict(
        os.environ,
        DATABASE_URL=_database_url(),
        CELERY_BROKER_URL=TEST_BROKER_URL,
        ALERT_WEBHOOK_BACKOFF="1",
    )
    log = open(settings.VAR_DIR / "test-worker.log", "ab")  # noqa: SIM115 - closed below
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
            # Celery's default queue and the image builds' (apps/images/publish.py, BUILDS_QUEUE).
            "--queues",
            "celery,builds",
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
    SHARED_WORKERS.append(proc)
    try:
        yield proc
    finally:
        SHARED_WORKERS.remove(proc)
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def worker(transactional_db: None, _worker_process: subprocess.Popen[bytes]) -> None:
    """A real Celery worker process on the test broker and the test database (shared by the
    tests of a module; each test starts with an empty queue)."""
    from portal.celery import app

    assert _worker_process.poll() is None, "the module's worker died; see var/test-worker.log"
    # Tasks earlier tests queued name rows of their own (flushed) databases.
    with contextlib.suppress(Exception):
        app.control.purge()
