"""`slipway` against the real portal over HTTP: login and where the token is kept, exit codes
scripts rely on, the API's own messages, --json."""

from __future__ import annotations

import json
import socket
import stat
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from apps.accounts import tokens
from apps.accounts.models import ApiToken, Team
from apps.applications import services
from apps.applications.models import App, BaseImage
from apps.hosts.models import Host
from apps.resources.models import ResourceRequest
from tests.cli.conftest import Slipway, token_of

pytestmark = pytest.mark.usefixtures("transactional_db")


@pytest.fixture
def image(transactional_db: None) -> BaseImage:
    return BaseImage.objects.create(
        name="slipway/busybox", tag="1", runtime="busybox", default_command=["sh"]
    )


def _app(user: User, team: Team, image: BaseImage, slug: str) -> App:
    return services.app_create(user=user, team=team, slug=slug, base_image=image, memory_mb=32, cpus="0.1")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_login_keeps_a_good_token_readable_only_by_the_user(
    slipway: Slipway, portal: str, owner: User, config_file: Path
) -> None:
    token = token_of(owner)
    ran = slipway("login", portal + "/", "--token", token)
    assert ran.code == 0, ran.err
    assert f"Logged in to {portal}" in ran.out and str(config_file) in ran.out
    assert json.loads(config_file.read_text()) == {"url": portal, "token": token}
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(config_file.parent.stat().st_mode) == 0o700
    assert [p.name for p in config_file.parent.iterdir()] == ["config.json"]  # no temporary file left

    ran = slipway("logout")
    assert ran.code == 0 and "revoke" in ran.out
    assert not config_file.exists()
    assert slipway("apps").code == 3


def test_login_asks_for_the_token_without_echo(
    slipway: Slipway, portal: str, owner: User, config_file: Path
) -> None:
    token = token_of(owner)
    ran = slipway("login", portal, input=token + "\n")
    assert ran.code == 0, ran.err
    assert token not in ran.out + ran.err
    assert json.loads(config_file.read_text())["token"] == token


def test_login_refuses_a_bad_token_with_the_apis_message(
    slipway: Slipway, portal: str, owner: User, config_file: Path
) -> None:
    ran = slipway("login", portal, "--token", "0" * 40)
    assert ran.code == 3
    assert "refused the token: Invalid token: no token has this key" in ran.err
    assert f"Make one at {portal}/account/token/" in ran.err
    assert not config_file.exists()


def test_an_unreachable_portal_exits_4_naming_the_url(slipway: Slipway) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    ran = slipway("login", url, "--token", "x" * 40)
    assert ran.code == 4 and f"Cannot reach the portal at {url}" in ran.err
    ran = slipway("apps", env={"SLIPWAY_URL": url, "SLIPWAY_TOKEN": "x"})
    assert ran.code == 4 and url in ran.err


def test_an_address_that_is_not_the_api_is_said_so(slipway: Slipway, portal: str, owner: User) -> None:
    ran = slipway("login", f"{portal}/not-the-portal", "--token", token_of(owner))
    assert ran.code == 4 and "not the Slipway API" in ran.err


def test_a_url_that_is_no_url_is_a_usage_error(slipway: Slipway) -> None:
    ran = slipway("login", "portal.example.com", "--token", "x")
    assert ran.code == 2 and "https://" in ran.err


def test_without_login_every_command_exits_3(slipway: Slipway) -> None:
    for args in (["apps"], ["info", "web"], ["requests"], ["ops", "hosts"], ["exec", "web", "--", "true"]):
        ran = slipway(*args)
        assert ran.code == 3, (args, ran.err)
        assert "slipway login URL" in ran.err


def test_the_environment_wins_over_the_file(
    slipway: Slipway,
    portal: str,
    as_user: Callable[[User], str],
    owner: User,
    outsider: User,
    alpha: Team,
    image: BaseImage,
) -> None:
    _app(owner, alpha, image, "cli-mine")
    as_user(outsider)  # the file holds the outsider's token, who sees no app
    assert json.loads(slipway("apps", "--json").out) == []
    ran = slipway("apps", "--json", env={"SLIPWAY_TOKEN": token_of(owner)})
    assert [a["slug"] for a in json.loads(ran.out)] == ["cli-mine"]
    ran = slipway("apps", env={"SLIPWAY_URL": portal, "SLIPWAY_TOKEN": "0" * 40})
    assert ran.code == 3 and "fix SLIPWAY_TOKEN" in ran.err


def test_a_token_revoked_after_login_exits_3(
    slipway: Slipway, portal: str, as_user: Callable[[User], str], owner: User
) -> None:
    as_user(owner)
    for token in ApiToken.objects.filter(user=owner):
        tokens.api_token_revoke(user=owner, token=token)
    ran = slipway("apps")
    assert ran.code == 3
    assert "was revoked on" in ran.err and f"slipway login {portal}" in ran.err


def test_an_expired_token_exits_3_saying_it_expired(
    slipway: Slipway, portal: str, as_user: Callable[[User], str], owner: User
) -> None:
    as_user(owner)
    ApiToken.objects.filter(user=owner).update(expires_at=timezone.now() - timedelta(hours=1))
    ran = slipway("apps")
    assert ran.code == 3
    assert "expired on" in ran.err and f"Make a new one at {portal}/account/token/" in ran.err
    assert f"slipway login {portal}" in ran.err


def test_a_read_only_token_lists_but_a_write_exits_1_with_the_apis_message(
    slipway: Slipway, portal: str, owner: User, alpha: Team, image: BaseImage
) -> None:
    before = _app(owner, alpha, image, "cli-read").instances
    ran = slipway("login", portal, "--token", token_of(owner, scope="read"))
    assert ran.code == 0, ran.err
    assert [a["slug"] for a in json.loads(slipway("apps", "--json").out)] == ["cli-read"]
    ran = slipway("scale", "cli-read", "2")
    assert ran.code == 1
    assert (
        "is read-only: it may read (GET, HEAD, OPTIONS) but not POST /api/v1/apps/cli-read/scale/" in ran.err
    )
    assert App.objects.get(slug="cli-read").instances == before


def test_tokens_lists_the_users_tokens_and_never_a_key(
    slipway: Slipway, as_user: Callable[[User], str], owner: User, outsider: User
) -> None:
    key = as_user(owner)
    tokens.api_token_create(user=outsider, name="theirs", scope="read", expires_at=tokens.expires_after(7))
    ran = slipway("tokens", "--json")
    assert ran.code == 0, ran.err
    (listed,) = json.loads(ran.out)
    assert (listed["scope"], listed["state"], listed["prefix"]) == ("write", "active", key[:12])
    assert listed["last_used_at"] is not None and listed["last_used_from"] == "127.0.0.1"
    table = slipway("tokens").out
    assert f"{key[:12]}…" in table and "active" in table and "theirs" not in table
    assert key not in ran.out + table


def test_apps_lists_the_teams_apps_as_json_and_as_a_table(
    slipway: Slipway,
    as_user: Callable[[User], str],
    owner: User,
    outsider: User,
    alpha: Team,
    beta: Team,
    image: BaseImage,
) -> None:
    _app(owner, alpha, image, "cli-web")
    _app(owner, alpha, image, "cli-worker")
    _app(outsider, beta, image, "cli-theirs")
    as_user(owner)
    ran = slipway("apps", "--json")
    assert ran.code == 0, ran.err
    listed = json.loads(ran.out)
    assert [(a["slug"], a["team"], a["base_image_reference"]) for a in listed] == [
        ("cli-web", "alpha", "slipway/busybox:1"),
        ("cli-worker", "alpha", "slipway/busybox:1"),
    ]
    assert json.loads(slipway("--json", "apps").out) == listed  # the global option does the same
    table = slipway("apps").out
    assert "cli-web" in table and "cli-worker" in table and "cli-theirs" not in table


def test_create_with_a_bad_image_exits_1_with_the_field_message(
    slipway: Slipway, as_user: Callable[[User], str], owner: User, alpha: Team, image: BaseImage
) -> None:
    as_user(owner)
    ran = slipway("create", "cli-new", "--team", "alpha", "--image", "nope:1")
    assert ran.code == 1
    assert "base_image: No base image 'nope:1'" in ran.err
    ran = slipway("create", "cli-new", "--team", "beta", "--image", "slipway/busybox:1")
    assert ran.code == 1 and ran.err.startswith("error: team: ")
    assert not App.objects.filter(slug="cli-new").exists()


def test_create_then_info_show_the_app(
    slipway: Slipway, as_user: Callable[[User], str], owner: User, alpha: Team, image: BaseImage
) -> None:
    as_user(owner)
    ran = slipway(
        "create", "cli-made", "--team", "alpha", "--image", "slipway/busybox:1",
        "--command", "sh -c 'echo [bold]hi'", "--env", "GREETING=a=b", "-e", "EMPTY=",
        "--memory", "48", "--cpus", "0.5", "--port", "8080",
    )  # fmt: skip
    assert ran.code == 0, ran.err
    app = App.objects.get(slug="cli-made")
    assert app.command == ["sh", "-c", "echo [bold]hi"] and app.env == {"GREETING": "a=b", "EMPTY": ""}
    assert (app.memory_mb, str(app.cpus), app.port) == (48, "0.50", 8080)
    ran = slipway("info", "cli-made")
    assert ran.code == 0 and "sh -c 'echo [bold]hi'" in ran.out and "48 MiB" in ran.out
    detail = json.loads(slipway("info", "cli-made", "--json").out)
    assert detail["app"]["slug"] == "cli-made" and detail["instances"] == []
    ran = slipway("create", "cli-bad", "--team", "alpha", "--image", "x:1", "--env", "NOVALUE")
    assert ran.code == 2 and "NAME=value" in ran.err


def test_an_app_of_another_team_is_not_found(
    slipway: Slipway,
    as_user: Callable[[User], str],
    outsider: User,
    owner: User,
    alpha: Team,
    image: BaseImage,
) -> None:
    _app(owner, alpha, image, "cli-private")
    as_user(outsider)
    for args in (["info", "cli-private"], ["scale", "cli-private", "1"], ["logs", "cli-private"]):
        ran = slipway(*args)
        assert ran.code == 1 and "No App matches" in ran.err, (args, ran.err)


def test_scale_and_exec_refusals_are_the_apis_words(
    slipway: Slipway, as_user: Callable[[User], str], owner: User, alpha: Team, image: BaseImage
) -> None:
    _app(owner, alpha, image, "cli-idle")
    as_user(owner)
    ran = slipway("scale", "cli-idle", "--", "-1")
    assert ran.code == 1 and ran.err.startswith("error: ")
    ran = slipway("exec", "cli-idle", "--", "true")
    assert ran.code == 1 and "cli-idle has no running instance" in ran.err
    ran = slipway("exec", "cli-idle/x", "--", "true")
    assert ran.code == 2


def test_resize_then_a_lead_rejects_and_approves(
    slipway: Slipway,
    as_user: Callable[[User], str],
    owner: User,
    lead: User,
    alpha: Team,
    image: BaseImage,
) -> None:
    _app(owner, alpha, image, "cli-grow")
    as_user(owner)
    ran = slipway("resize", "cli-grow", "--memory", "1", "--cpus", "lots")
    assert ran.code == 1
    assert "memory_mb: Memory must be at least" in ran.err and "cpus: CPU must be a number" in ran.err
    assert "reason: Say why" in ran.err
    ran = slipway("resize", "cli-grow", "--memory", "64", "--cpus", "0.2", "--reason", "busier", "--json")
    assert ran.code == 0, ran.err
    first = json.loads(ran.out)
    assert (first["app"], first["memory_mb"]) == ("cli-grow", 64)
    if first["state"] != ResourceRequest.State.PENDING:
        pytest.skip(f"the team's quota approved it at once ({first['state']})")
    assert slipway("approve", str(first["id"])).code == 1  # a developer does not decide

    as_user(lead)
    ran = slipway("requests")
    assert ran.code == 0 and "cli-grow" in ran.out and "busier" in ran.out
    assert slipway("reject", str(first["id"])).code == 2  # a reason is required
    ran = slipway("reject", str(first["id"]), "--reason", "not now")
    assert ran.code == 0 and "rejected" in ran.out
    assert ResourceRequest.objects.get(pk=first["id"]).comment == "not now"
    assert slipway("requests", "--json").out.strip() == "[]"

    as_user(owner)
    second = json.loads(slipway("resize", "cli-grow", "--memory", "64", "--reason", "now?", "--json").out)
    as_user(lead)
    ran = slipway("approve", str(second["id"]))
    assert ran.code == 0, ran.err
    assert ResourceRequest.objects.get(pk=second["id"]).state != ResourceRequest.State.PENDING
    assert App.objects.get(slug="cli-grow").memory_mb == 64
    listed = json.loads(slipway("requests", "--state", "all", "--json").out)
    assert {r["id"] for r in listed} == {first["id"], second["id"]}


def test_ops_hosts(slipway: Slipway, as_user: Callable[[User], str], ops: User) -> None:
    Host.objects.create(
        name="cli-h1", address="127.0.0.1", ssh_port=1, state=Host.State.ACTIVE, cpus=2, memory_mb=1024
    )
    as_user(ops)
    listed = json.loads(slipway("ops", "hosts", "--json").out)
    assert [(h["name"], h["state"]) for h in listed] == [("cli-h1", "active")]
    ran = slipway("ops", "hosts")
    assert ran.code == 0 and "cli-h1" in ran.out and "1024 MiB" in ran.out
