"""The `slipway` command run as a user runs it: a separate process, a home directory of its own,
talking HTTP to the real portal under daphne on the test database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from tests.conftest import TEST_BROKER_URL, _database_url
from tests.docker.conftest import (  # noqa: F401 - fixtures for the lab tests of this folder
    busybox,
    deploy,
    lab,
    lab_hosts,
    lab_images,
    lab_pool,
    one_instance,
    remove_apps,
)
from tests.helpers import api_token, serve_asgi

# The tree's own package, whether or not `pip install -e ./cli` ran: the tests are of this code.
CLI_SOURCE = Path(settings.BASE_DIR) / "cli"
if str(CLI_SOURCE) not in sys.path:
    sys.path.insert(0, str(CLI_SOURCE))


@dataclass
class Ran:
    code: int
    out: str
    err: str


Slipway = Callable[..., Ran]


@pytest.fixture(scope="module")
def portal(django_db_setup: None) -> Iterator[str]:
    """The portal's base URL: daphne on the test database (rows a test makes must be
    committed for it to see them: `transactional_db`)."""
    with serve_asgi(_database_url(), TEST_BROKER_URL) as base:
        yield base


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path


@pytest.fixture
def cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIPWAY_") and k != "XDG_CONFIG_HOME"}
    env.update(
        HOME=str(home / "home"),
        XDG_CONFIG_HOME=str(home / "config"),
        PYTHONPATH=os.pathsep.join([str(CLI_SOURCE), *filter(None, [os.environ.get("PYTHONPATH")])]),
        # A narrow terminal would wrap the tables the tests read.
        COLUMNS="200",
    )
    return env


@pytest.fixture
def slipway(cli_env: dict[str, str]) -> Slipway:
    """Runs `slipway ARGS...`; never a traceback, whatever happens."""

    def run(
        *args: str, input: str | None = None, env: dict[str, str] | None = None, timeout: float = 120
    ) -> Ran:
        done = subprocess.run(
            [sys.executable, "-m", "slipway_cli", *args],
            input=input,
            capture_output=True,
            text=True,
            env={**cli_env, **(env or {})},
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        assert "Traceback" not in done.stderr, done.stderr
        return Ran(done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture
def config_file(cli_env: dict[str, str]) -> Path:
    return Path(cli_env["XDG_CONFIG_HOME"]) / "slipway" / "config.json"


def token_of(user: User, scope: str = "write") -> str:
    """The key of a new API token of the user."""
    return api_token(user, scope=scope)


@pytest.fixture
def as_user(slipway: Slipway, portal: str, transactional_db: None) -> Callable[[User], str]:
    """Logs the CLI in as the user (through `slipway login`); gives the token."""

    def login(user: User) -> str:
        token = token_of(user)
        ran = slipway("login", portal, "--token", token)
        assert ran.code == 0, ran.err
        return token

    return login
