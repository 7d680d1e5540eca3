"""Sign-in through the company directory, against a real slapd (tests/ldap_server.py): directory
passwords, the group mapping to ops and team roles, group changes at the next sign-in, at a
terminal's recheck and at an API token's, a refused service account told from an unreachable
directory, deactivated users, local accounts beside it, and the settings refused at start-up."""

from __future__ import annotations

import logging
import runpy
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ldap
import pytest
from django.contrib.auth import BACKEND_SESSION_KEY
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from apps.accounts import directory as directory_signin
from apps.accounts import tokens
from apps.accounts.grants import NO_ACCESS
from apps.accounts.models import LastSignIn, Membership, Team
from apps.applications import services
from apps.applications.models import BaseImage
from apps.console.terminal import Close, terminal_check
from apps.instances.models import Instance
from tests.ldap_server import Directory, group_dn, running_slapd

ROOT = Path(__file__).resolve().parents[2]
WRONG = "Please enter a correct username and password"


@pytest.fixture(scope="module")
def directory() -> Iterator[Directory]:
    with running_slapd() as running:
        yield running


@pytest.fixture(autouse=True)
def ldap_on(directory: Directory, settings: Any, db: None) -> Directory:
    for name, value in directory.settings().items():
        setattr(settings, name, value)
    directory.reset()
    cache.clear()  # the recheck's per-user marks
    return directory


def _sign_in(username: str, password: str) -> tuple[Client, Any]:
    client = Client()
    response = client.post(reverse("login"), {"username": username, "password": password})
    return client, response


def _roles(username: str) -> dict[str, str]:
    return dict(Membership.objects.filter(user__username=username).values_list("team__slug", "role"))


def _refused_with(response: Any, message: str) -> None:
    assert response.status_code == 200, response
    assert message in response.content.decode().replace("&#x27;", "'")


def test_a_directory_user_signs_in_with_their_directory_password(alpha: Team) -> None:
    client, response = _sign_in("alice", "alice-pw")
    assert response.status_code == 302 and response["Location"] == reverse("home")
    user = User.objects.get(username="alice")
    assert (user.first_name, user.last_name, user.email) == ("Alice", "Tester", "alice@example.test")
    assert not user.has_usable_password()  # nothing to sign in with if the directory says no
    assert not user.is_staff
    assert _roles("alice") == {"alpha": "developer"}
    assert client.session[BACKEND_SESSION_KEY] == directory_signin.BACKEND
    assert client.get(reverse("home")).status_code == 200


def test_a_wrong_password_is_refused_like_any_wrong_password() -> None:
    _, response = _sign_in("alice", "not-alices")
    _refused_with(response, WRONG)
    assert not User.objects.filter(username="alice").exists()


def test_an_unknown_user_is_refused_and_nothing_is_made() -> None:
    _, response = _sign_in("mallory", "anything")
    _refused_with(response, WRONG)
    assert not User.objects.filter(username="mallory").exists()


def test_a_user_in_no_mapped_group_is_refused_and_told_why() -> None:
    _, response = _sign_in("dave", "dave-pw")
    _refused_with(response, NO_ACCESS)
    assert not User.objects.filter(username="dave").exists()


def test_the_ops_group_makes_ops_and_leaving_it_takes_ops_away(ldap_on: Directory, alpha: Team) -> None:
    client, response = _sign_in("carol", "carol-pw")
    assert response.status_code == 302
    carol = User.objects.get(username="carol")
    assert carol.is_staff and carol.is_superuser
    assert client.get(reverse("hosts:list")).status_code == 200

    ldap_on.remove_member("ops", "carol")
    ldap_on.add_member("alpha-devs", "carol")
    client, response = _sign_in("carol", "carol-pw")
    assert response.status_code == 302
    carol.refresh_from_db()
    assert not carol.is_staff and not carol.is_superuser
    assert _roles("carol") == {"alpha": "developer"}
    assert client.get(reverse("hosts:list")).status_code == 302  # to the admin's sign-in


def test_a_lead_group_makes_a_lead_and_wins_over_a_developer_group(alpha: Team) -> None:
    _, response = _sign_in("bob", "bob-pw")  # in alpha-devs and alpha-leads
    assert response.status_code == 302
    assert _roles("bob") == {"alpha": "lead"}


def test_a_mapped_team_that_does_not_exist_yet_is_made_without_a_quota() -> None:
    assert not Team.objects.filter(slug="beta").exists()
    _, response = _sign_in("erin", "erin-pw")
    assert response.status_code == 302
    beta = Team.objects.get(slug="beta")
    assert (beta.name, beta.quota_memory_mb, beta.quota_cpus) == ("beta", None, None)
    assert _roles("erin") == {"beta": "developer"}


def test_group_changes_take_effect_at_the_next_sign_in_and_teams_given_by_hand_stay(
    ldap_on: Directory, alpha: Team
) -> None:
    _sign_in("alice", "alice-pw")
    gamma = Team.objects.create(slug="gamma", name="Gamma")  # not in the mapping: ops gave it by hand
    Membership.objects.create(team=gamma, user=User.objects.get(username="alice"))

    ldap_on.remove_member("alpha-devs", "alice")
    ldap_on.add_member("beta-devs", "alice")
    assert _roles("alice") == {"alpha": "developer", "gamma": "developer"}  # until she signs in
    _, response = _sign_in("alice", "alice-pw")
    assert response.status_code == 302
    assert _roles("alice") == {"beta": "developer", "gamma": "developer"}

    ldap_on.remove_member("beta-devs", "alice")
    _, response = _sign_in("alice", "alice-pw")
    assert response.status_code == 302  # gamma still lets her see something
    assert _roles("alice") == {"gamma": "developer"}

    Membership.objects.filter(team=gamma).delete()
    _, response = _sign_in("alice", "alice-pw")
    _refused_with(response, NO_ACCESS)


def test_a_lead_dropped_from_the_lead_group_is_a_developer_from_the_next_sign_in(
    ldap_on: Directory, alpha: Team
) -> None:
    _, response = _sign_in("bob", "bob-pw")  # in alpha-devs and alpha-leads
    assert response.status_code == 302 and _roles("bob") == {"alpha": "lead"}
    ldap_on.remove_member("alpha-leads", "bob")
    assert _roles("bob") == {"alpha": "lead"}  # until he signs in
    _, response = _sign_in("bob", "bob-pw")
    assert response.status_code == 302
    assert _roles("bob") == {"alpha": "developer"}


def test_an_ex_ops_user_left_in_no_group_is_refused_and_is_ops_no_more(ldap_on: Directory) -> None:
    _, response = _sign_in("carol", "carol-pw")
    assert response.status_code == 302 and User.objects.get(username="carol").is_staff
    ldap_on.remove_member("ops", "carol")
    client, response = _sign_in("carol", "carol-pw")
    _refused_with(response, NO_ACCESS)
    assert "_auth_user_id" not in client.session
    carol = User.objects.get(username="carol")
    assert not carol.is_staff and not carol.is_superuser and _roles("carol") == {}


def test_a_local_account_keeps_its_own_password_when_the_directory_has_the_same_name(alpha: Team) -> None:
    # The demo's dev is local; the directory's dev (a lead of alpha there) must not take it over.
    dev = User.objects.create_user("dev", "dev@example.invalid", "local-dev-pw")
    Membership.objects.create(team=alpha, user=dev, role=Membership.Role.DEVELOPER)

    _, response = _sign_in("dev", "directory-dev-pw")
    _refused_with(response, WRONG)
    client, response = _sign_in("dev", "local-dev-pw")
    assert response.status_code == 302
    assert client.session[BACKEND_SESSION_KEY] == "django.contrib.auth.backends.ModelBackend"
    dev.refresh_from_db()
    assert dev.has_usable_password() and dev.email == "dev@example.invalid"
    assert _roles("dev") == {"alpha": "developer"}


def test_local_accounts_sign_in_while_the_directory_cannot_be_reached(settings: Any, ops: User) -> None:
    settings.AUTH_LDAP_SERVER_URI = "ldap://127.0.0.1:9/"  # nothing listens on the discard port
    _, response = _sign_in("ops", "pw-ops")  # a break-glass admin with a local password
    assert response.status_code == 302
    _, response = _sign_in("alice", "alice-pw")
    _refused_with(response, directory_signin.UNREACHABLE)


def test_start_tls_with_the_directorys_ca_signs_in_and_an_untrusted_certificate_does_not(
    ldap_on: Directory, settings: Any, alpha: Team
) -> None:
    for name, value in ldap_on.settings(start_tls=True, ca_file=ldap_on.ca_file).items():
        setattr(settings, name, value)
    _, response = _sign_in("alice", "alice-pw")
    assert response.status_code == 302

    # The system's CAs do not know the test CA: the connection is refused before any password.
    for name, value in ldap_on.settings(start_tls=True).items():
        setattr(settings, name, value)
    _, response = _sign_in("bob", "bob-pw")
    _refused_with(response, directory_signin.UNREACHABLE)


def test_a_refused_service_account_is_told_apart_from_an_unreachable_directory(
    settings: Any, alpha: Team, caplog: pytest.LogCaptureFixture
) -> None:
    settings.AUTH_LDAP_BIND_PASSWORD = "not-the-service-password"
    with caplog.at_level(logging.WARNING, logger="apps.accounts.directory"):
        _, response = _sign_in("alice", "alice-pw")
    _refused_with(response, directory_signin.BIND_REFUSED)
    assert directory_signin.UNREACHABLE not in response.content.decode().replace("&#x27;", "'")
    assert not User.objects.filter(username="alice").exists()
    # For ops, in the log: which bind was refused and what to check.
    [logged] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "refused the portal's bind as 'cn=slipway,ou=services,dc=slipway,dc=test'" in logged.getMessage()
    assert "check LDAP_BIND_DN and LDAP_BIND_PASSWORD" in logged.getMessage()


# --- the recheck an open terminal makes ------------------------------------------------------


def _directory_user(username: str, password: str) -> User:
    _, response = _sign_in(username, password)
    assert response.status_code == 302
    return User.objects.get(username=username)


def test_the_recheck_applies_a_group_change_without_a_new_sign_in(ldap_on: Directory, alpha: Team) -> None:
    bob = _directory_user("bob", "bob-pw")
    ldap_on.remove_member("alpha-leads", "bob")
    assert directory_signin.recheck(bob, backend=directory_signin.BACKEND, every=60) is None
    assert _roles("bob") == {"alpha": "developer"}

    ldap_on.remove_member("alpha-devs", "bob")
    cache.clear()  # as if the interval had passed
    assert directory_signin.recheck(bob, backend=directory_signin.BACKEND, every=60) is None
    assert _roles("bob") == {}


def test_the_recheck_asks_the_directory_at_most_once_per_interval(ldap_on: Directory, alpha: Team) -> None:
    alice = _directory_user("alice", "alice-pw")
    assert directory_signin.recheck(alice, backend=directory_signin.BACKEND, every=60) is None
    ldap_on.remove_member("alpha-devs", "alice")
    # A second terminal's check within the interval: the access just read stands.
    assert directory_signin.recheck(alice, backend=directory_signin.BACKEND, every=60) is None
    assert _roles("alice") == {"alpha": "developer"}
    cache.clear()
    directory_signin.recheck(alice, backend=directory_signin.BACKEND, every=60)
    assert _roles("alice") == {}


def test_the_recheck_takes_ops_away_from_someone_gone_from_the_ops_group(ldap_on: Directory) -> None:
    carol = _directory_user("carol", "carol-pw")
    ldap_on.remove_member("ops", "carol")
    directory_signin.recheck(carol, backend=directory_signin.BACKEND, every=60)
    assert not carol.is_staff  # the caller's user object is brought up to date
    assert not User.objects.get(username="carol").is_staff


def test_an_unreachable_directory_keeps_the_access_last_read_until_the_grace_ends(
    settings: Any, alpha: Team
) -> None:
    alice = _directory_user("alice", "alice-pw")
    settings.AUTH_LDAP_SERVER_URI = "ldap://127.0.0.1:9/"
    settings.LDAP_OUTAGE_GRACE = 300
    assert directory_signin.recheck(alice, backend=directory_signin.BACKEND, every=60) is None
    assert _roles("alice") == {"alpha": "developer"}

    # Move the clock: the directory has been down since just over the grace ago.
    cache.set(directory_signin._down_key(alice.pk), (time.time() - 301, False), timeout=None)
    cache.delete(directory_signin._read_key(alice.pk))  # and the interval between reads has passed
    refusal = directory_signin.recheck(alice, backend=directory_signin.BACKEND, every=60)
    assert refusal == "The company directory could not be reached for 5 min, so the terminal was closed."
    assert _roles("alice") == {"alpha": "developer"}  # pages keep what the last sign-in gave


def test_the_directory_answering_again_ends_the_outage(
    ldap_on: Directory, settings: Any, alpha: Team
) -> None:
    alice = _directory_user("alice", "alice-pw")
    good_uri = settings.AUTH_LDAP_SERVER_URI
    settings.AUTH_LDAP_SERVER_URI = "ldap://127.0.0.1:9/"
    directory_signin.recheck(alice, backend=directory_signin.BACKEND, every=60)
    assert cache.get(directory_signin._down_key(alice.pk)) is not None
    settings.AUTH_LDAP_SERVER_URI = good_uri
    cache.delete(directory_signin._read_key(alice.pk))
    assert directory_signin.recheck(alice, backend=directory_signin.BACKEND, every=60) is None
    assert cache.get(directory_signin._down_key(alice.pk)) is None


def test_a_recheck_the_directory_refuses_the_service_account_says_so_once_the_grace_ends(
    settings: Any, alpha: Team
) -> None:
    alice = _directory_user("alice", "alice-pw")
    settings.AUTH_LDAP_BIND_PASSWORD = "not-the-service-password"
    settings.LDAP_OUTAGE_GRACE = 0
    refusal = directory_signin.recheck(alice, backend=directory_signin.BACKEND, every=60)
    assert refusal == (
        "The company directory refused the portal's service account for 0 s, so the terminal was closed."
    )
    assert _roles("alice") == {"alpha": "developer"}


def test_a_user_signed_in_with_a_local_password_is_not_rechecked(settings: Any, owner: User) -> None:
    settings.AUTH_LDAP_SERVER_URI = "ldap://127.0.0.1:9/"
    settings.LDAP_OUTAGE_GRACE = 0
    for backend in ("django.contrib.auth.backends.ModelBackend", directory_signin.BACKEND):
        # Even a session that says "directory": an account with a local password is local.
        assert directory_signin.recheck(owner, backend=backend, every=60) is None
    assert _roles("owner") == {"alpha": "developer"}


@pytest.fixture
def alpha_instance(owner: User, image: BaseImage) -> Instance:
    app = services.app_create(
        user=owner, team=owner.memberships.get().team, slug="web", base_image=image, instances=1
    )
    return Instance.objects.get(app=app)


def _terminal_check_of(username: str, password: str, instance: Instance) -> Callable[[], Any]:
    client, response = _sign_in(username, password)
    assert response.status_code == 302
    user = User.objects.get(username=username)
    return lambda: terminal_check(
        session_key=client.session.session_key, user_pk=user.pk, instance_pk=instance.pk
    )


def test_an_open_terminal_is_closed_when_the_directory_takes_the_team_away(
    ldap_on: Directory, alpha_instance: Instance
) -> None:
    check = _terminal_check_of("alice", "alice-pw", alpha_instance)
    assert check() is None
    ldap_on.remove_member("alpha-devs", "alice")
    cache.clear()  # the next recheck's interval
    refusal = check()
    assert refusal is not None and refusal.code == Close.FORBIDDEN


def test_an_open_terminal_is_closed_with_its_own_message_once_an_outage_outlasts_the_grace(
    settings: Any, alpha_instance: Instance
) -> None:
    check = _terminal_check_of("alice", "alice-pw", alpha_instance)
    settings.AUTH_LDAP_SERVER_URI = "ldap://127.0.0.1:9/"
    settings.LDAP_OUTAGE_GRACE = 0
    refusal = check()
    assert refusal is not None and refusal.code == Close.DIRECTORY_UNREACHABLE == 4503
    assert (
        refusal.message == "The company directory could not be reached for 0 s, so the terminal was closed."
    )


# --- API tokens of directory users: reread as an open terminal is ------------------------------

APPS = "/api/v1/apps/"


def _token_of(username: str, password: str) -> APIClient:
    """A read-and-write token of a user who signed in through the directory."""
    user = _directory_user(username, password)
    made = tokens.api_token_create(
        user=user, name="laptop", scope="write", expires_at=tokens.expires_after(30)
    )
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {made.key}")
    return api


def _interval_passes(username: str) -> None:
    """The clock moved past TERMINAL_RECHECK: the mark that the directory was just read goes."""
    cache.delete(directory_signin._read_key(User.objects.get(username=username).pk))


def _apps_seen(api: APIClient) -> list[str]:
    response = api.get(APPS)
    assert response.status_code == 200, response.content
    return [app["slug"] for app in response.json()["results"]]


@pytest.fixture
def recheck_every_minute(settings: Any) -> None:
    settings.TERMINAL_RECHECK = 60


@pytest.mark.usefixtures("recheck_every_minute")
def test_a_token_is_refused_at_the_first_call_after_the_interval_once_the_team_group_is_left(
    ldap_on: Directory, alpha_instance: Instance
) -> None:
    api = _token_of("alice", "alice-pw")
    assert LastSignIn.objects.get(user__username="alice").backend == directory_signin.BACKEND
    assert _apps_seen(api) == ["web"]
    ldap_on.remove_member("alpha-devs", "alice")
    # Within the interval the access last read stands, as for a terminal.
    assert _apps_seen(api) == ["web"]
    _interval_passes("alice")
    for response in (api.get(APPS), api.post(APPS, {"slug": "other"}, format="json")):
        assert response.status_code == 403, response.content
        assert response.json()["detail"] == directory_signin.NO_ACCESS_NOW
    assert _roles("alice") == {}


@pytest.mark.usefixtures("recheck_every_minute")
def test_a_token_follows_narrowed_groups_ops_dropped_and_lead_downgraded(
    ldap_on: Directory, alpha_instance: Instance
) -> None:
    ldap_on.add_member("alpha-devs", "carol")  # ops, and a developer of alpha
    carol_api, bob_api = _token_of("carol", "carol-pw"), _token_of("bob", "bob-pw")
    ops_only = f"/api/v1/hosts/{alpha_instance.host_id}/metrics/"
    assert carol_api.get(ops_only).status_code == 200
    assert _apps_seen(bob_api) == ["web"] and _roles("bob") == {"alpha": "lead"}

    ldap_on.remove_member("ops", "carol")
    ldap_on.remove_member("alpha-leads", "bob")
    _interval_passes("carol")
    _interval_passes("bob")
    assert carol_api.get(ops_only).status_code == 403  # ops no more
    assert _apps_seen(carol_api) == ["web"]  # still a developer of alpha
    carol = User.objects.get(username="carol")
    assert not carol.is_staff and not carol.is_superuser
    assert _apps_seen(bob_api) == ["web"] and _roles("bob") == {"alpha": "developer"}


@pytest.mark.usefixtures("recheck_every_minute")
def test_a_token_of_someone_deleted_from_the_directory_is_refused(ldap_on: Directory, alpha: Team) -> None:
    api = _token_of("alice", "alice-pw")
    assert api.get(APPS).status_code == 200
    ldap_on.delete_user("alice")
    _interval_passes("alice")
    response = api.get(APPS)
    assert response.status_code == 403 and response.json()["detail"] == directory_signin.NO_ACCESS_NOW
    assert _roles("alice") == {}


@pytest.mark.usefixtures("recheck_every_minute")
def test_the_directory_is_asked_once_per_interval_not_at_every_call(
    ldap_on: Directory, alpha: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = _token_of("alice", "alice-pw")
    binds: list[str] = []
    real_bind = ldap.ldapobject.SimpleLDAPObject.simple_bind_s

    def counted(self: Any, who: str | None = None, cred: str | None = None, *args: Any, **kwargs: Any) -> Any:
        binds.append(str(who))
        return real_bind(self, who, cred, *args, **kwargs)

    monkeypatch.setattr(ldap.ldapobject.SimpleLDAPObject, "simple_bind_s", counted)
    assert api.get(APPS).status_code == 200  # the first call since sign-in rereads the groups
    read = len(binds)
    assert read >= 1 and set(binds) == {ldap_on.settings()["AUTH_LDAP_BIND_DN"]}
    for _ in range(20):
        assert api.get(APPS).status_code == 200
    assert len(binds) == read
    _interval_passes("alice")
    assert api.get(APPS).status_code == 200
    assert len(binds) == 2 * read


@pytest.mark.usefixtures("recheck_every_minute")
def test_an_unreachable_directory_keeps_a_tokens_access_until_the_grace_ends(
    settings: Any, alpha_instance: Instance
) -> None:
    api = _token_of("alice", "alice-pw")
    settings.AUTH_LDAP_SERVER_URI = "ldap://127.0.0.1:9/"
    settings.LDAP_OUTAGE_GRACE = 300
    assert _apps_seen(api) == ["web"]  # the first failure: the access last read stands

    alice = User.objects.get(username="alice")
    cache.set(directory_signin._down_key(alice.pk), (time.time() - 301, False), timeout=None)
    _interval_passes("alice")
    response = api.get(APPS)
    assert response.status_code == 403
    assert response.json()["detail"] == (
        "The company directory could not be reached for 5 min, so tokens of directory accounts are "
        "refused until it answers. Try again later, or tell ops."
    )
    assert _roles("alice") == {"alpha": "developer"}


def test_a_local_accounts_token_never_asks_the_directory(settings: Any, owner: User) -> None:
    _, response = _sign_in("owner", "pw-owner")
    assert response.status_code == 302
    assert LastSignIn.objects.get(user=owner).backend == "django.contrib.auth.backends.ModelBackend"
    settings.AUTH_LDAP_SERVER_URI = "ldap://127.0.0.1:9/"
    settings.LDAP_OUTAGE_GRACE = 0
    made = tokens.api_token_create(
        user=owner, name="laptop", scope="write", expires_at=tokens.expires_after(30)
    )
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {made.key}")
    assert api.get(APPS).status_code == 200
    assert cache.get(directory_signin._down_key(owner.pk)) is None


def test_a_deactivated_directory_user_is_refused_by_token_terminal_and_pages(
    alpha_instance: Instance,
) -> None:
    client, response = _sign_in("alice", "alice-pw")
    assert response.status_code == 302
    alice = User.objects.get(username="alice")
    made = tokens.api_token_create(
        user=alice, name="laptop", scope="read", expires_at=tokens.expires_after(30)
    )
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {made.key}")
    session_key = client.session.session_key
    assert terminal_check(session_key=session_key, user_pk=alice.pk, instance_pk=alpha_instance.pk) is None

    alice.is_active = False  # what ops do in the admin to cut someone off
    alice.save()
    response = api.get(APPS)
    assert response.status_code == 401 and response.json()["detail"] == "User inactive or deleted."
    refusal = terminal_check(session_key=session_key, user_pk=alice.pk, instance_pk=alpha_instance.pk)
    assert refusal is not None and refusal.code == Close.SIGNED_OUT
    assert client.get(reverse("home")).status_code == 302  # to the sign-in page


# --- the settings, at start-up ----------------------------------------------------------------

GOOD_ENV = {
    "LDAP_SERVER_URI": "ldaps://ldap.example.com",
    "LDAP_BIND_DN": "cn=slipway,ou=services,dc=example,dc=com",
    "LDAP_USER_SEARCH_BASE": "ou=people,dc=example,dc=com",
    "LDAP_GROUP_SEARCH_BASE": "ou=groups,dc=example,dc=com",
    "LDAP_OPS_GROUPS": "cn=ops,ou=groups,dc=example,dc=com",
    "LDAP_TEAM_GROUPS": "cn=alpha-devs,ou=groups,dc=example,dc=com => alpha:developer",
}


def _settings_with(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    """portal/settings.py run afresh with this environment, as the portal starts."""
    for name, value in (GOOD_ENV | env).items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "portal" / "settings.py"))


def test_the_directory_is_asked_first_and_local_accounts_after_it(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = _settings_with(
        monkeypatch,
        LDAP_TEAM_GROUPS="CN=Alpha-Devs, OU=Groups,DC=example,DC=com => alpha:developer;\n"
        "cn=alpha-leads,ou=groups,dc=example,dc=com=>alpha:lead",
    )
    assert loaded["AUTHENTICATION_BACKENDS"] == [
        "apps.accounts.directory.DirectoryBackend",
        "django.contrib.auth.backends.ModelBackend",
    ]
    groups = loaded["SIGNIN_LDAP_GROUPS"]
    # Case and spaces in a DN do not matter; the directory's spelling is compared the same way.
    assert groups.teams == (
        ("cn=alpha-devs,ou=groups,dc=example,dc=com", "alpha", "developer"),
        ("cn=alpha-leads,ou=groups,dc=example,dc=com", "alpha", "lead"),
    )
    assert groups.grants({group_dn("x")}) == (False, {})


def test_without_ldap_server_uri_only_local_accounts_sign_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LDAP_SERVER_URI", raising=False)
    loaded = runpy.run_path(str(ROOT / "portal" / "settings.py"))
    assert loaded["AUTHENTICATION_BACKENDS"] == ["django.contrib.auth.backends.ModelBackend"]
    assert "AUTH_LDAP_SERVER_URI" not in loaded


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"LDAP_TEAM_GROUPS": "cn=a,dc=x => alpha"},
            "entry 1 ('cn=a,dc=x => alpha'): no ':ROLE' after team 'alpha'",
        ),
        ({"LDAP_TEAM_GROUPS": "cn=a,dc=x => alpha:admin"}, "'admin' is not a role"),
        ({"LDAP_TEAM_GROUPS": "cn=a,dc=x => Alpha Team:lead"}, "'Alpha Team' is not a team slug"),
        (
            {"LDAP_TEAM_GROUPS": "cn=a,dc=x => alpha:lead; alpha:developer"},
            "entry 2 ('alpha:developer'): no 'GROUP =>'",
        ),
        ({"LDAP_TEAM_GROUPS": "alpha devs => alpha:lead"}, "'alpha devs' is not a distinguished name"),
        (
            {"LDAP_TEAM_GROUPS": "cn=a,dc=x => alpha:lead; CN=A, DC=X => beta:lead"},
            "the group is already mapped to alpha:lead",
        ),
        ({"LDAP_OPS_GROUPS": "ops team"}, "LDAP_OPS_GROUPS: 'ops team' is not a distinguished name"),
        ({"LDAP_OPS_GROUPS": "", "LDAP_TEAM_GROUPS": ""}, "neither LDAP_OPS_GROUPS nor LDAP_TEAM_GROUPS"),
        ({"LDAP_SERVER_URI": "ldap.example.com"}, "an ldap:// or ldaps:// URI"),
        ({"LDAP_USER_SEARCH_BASE": ""}, "LDAP_USER_SEARCH_BASE='': required with LDAP_SERVER_URI"),
        ({"LDAP_USER_FILTER": "(uid=alice)"}, "an LDAP filter with %(user)s"),
        ({"LDAP_GROUP_TYPE": "groups"}, "LDAP_GROUP_TYPE='groups': one of groupOfNames, groupOfUniqueNames"),
        ({"LDAP_TIMEOUT": "0"}, "LDAP_TIMEOUT=0.0: from above 0 to 60 seconds"),
        ({"LDAP_OUTAGE_GRACE": "-1"}, "LDAP_OUTAGE_GRACE=-1.0: 0 or more seconds"),
    ],
)
def test_bad_directory_settings_are_refused_at_start_up_saying_what_is_allowed(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError) as refused:
        _settings_with(monkeypatch, **env)
    assert message in str(refused.value)
    if "LDAP_TEAM_GROUPS:" in str(refused.value) and "already mapped" not in str(refused.value):
        assert "GROUP => TEAM:ROLE" in str(refused.value) and "developer or lead" in str(refused.value)


def test_the_portal_does_not_start_with_a_bad_mapping() -> None:
    env = {**GOOD_ENV, "LDAP_TEAM_GROUPS": "cn=a,dc=x => alpha:owner", "PATH": "/usr/bin:/bin"}
    started = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert started.returncode != 0
    assert "LDAP_TEAM_GROUPS: entry 1 ('cn=a,dc=x => alpha:owner'): 'owner' is not a role" in started.stderr
