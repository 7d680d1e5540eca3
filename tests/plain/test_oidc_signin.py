"""Sign-in through an OpenID Connect provider, against a small real one started here
(tests/oidc_provider.py: discovery, authorize, token with PKCE, userinfo, JWKS, RS256 ID
tokens): the button, the round trip, the groups claim mapped to ops and team roles, the
refusals with their messages, tokens and terminals that keep the last sign-in's access (the
provider is asked only at sign-in), deactivated users cut off, and the settings refused at
start-up."""

from __future__ import annotations

import runpy
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.auth import BACKEND_SESSION_KEY
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from apps.accounts import tokens
from apps.accounts.grants import NO_ACCESS
from apps.accounts.models import LastSignIn, Membership, Team
from apps.applications import services
from apps.applications.models import BaseImage
from apps.console.terminal import Close, terminal_check
from apps.instances.models import Instance
from portal import signin
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, Provider, running_provider

ROOT = Path(__file__).resolve().parents[2]
BACKEND = "apps.accounts.oidc.OIDCBackend"


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    with running_provider() as running:
        yield running


@pytest.fixture(autouse=True)
def oidc_on(provider: Provider, settings: Any, db: None) -> Provider:
    configured = signin.oidc_settings(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        **provider.endpoints(),
        sign_algo="RS256",
        scopes="openid email profile",
        username_claim="preferred_username",
        groups_claim="groups",
        ops_groups="platform-ops",
        team_groups="alpha-devs => alpha:developer; alpha-leads => alpha:lead",
    )
    for name, value in configured.items():
        setattr(settings, name, value)
    settings.OIDC_PROVIDER_NAME = "Test SSO"
    settings.AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend", BACKEND]
    provider.signing_key = None
    return provider


def _claims(username: str, groups: list[str]) -> dict[str, Any]:
    return {
        "sub": f"sub-{username}",
        "preferred_username": username,
        "email": f"{username}@example.test",
        "given_name": username.title(),
        "family_name": "Tester",
        "groups": groups,
    }


def _round_trip(client: Client, provider: Provider, claims: dict[str, Any], next_url: str = "") -> Any:
    """The browser's trip: the portal's button, the provider, back to the portal's callback."""
    provider.user = claims
    start = client.get(reverse("oidc-start") + (f"?next={next_url}" if next_url else ""))
    assert start.status_code == 302 and start["Location"].startswith(provider.url + "/authorize?")

    class Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    try:
        urllib.request.build_opener(Stay).open(start["Location"])
    except HTTPError as answer:
        back = answer.headers["Location"]
    callback = urlsplit(back)
    assert callback.path == reverse("oidc-callback")
    return client.get(f"{callback.path}?{callback.query}")


def _roles(username: str) -> dict[str, str]:
    return dict(Membership.objects.filter(user__username=username).values_list("team__slug", "role"))


def _message_after(client: Client, response: Any) -> str:
    assert response.status_code == 302 and response["Location"] == reverse("login"), response
    return client.get(response["Location"]).content.decode().replace("&#x27;", "'")


def test_the_sign_in_page_offers_the_provider_by_name() -> None:
    page = Client().get(reverse("login") + "?next=/apps/").content.decode()
    assert 'href="/login/oidc/?next=/apps/"' in page
    assert "Sign in with Test SSO" in page


def test_without_a_client_id_there_is_no_button_and_no_round_trip(settings: Any) -> None:
    settings.OIDC_RP_CLIENT_ID = ""
    assert "Sign in with" not in Client().get(reverse("login")).content.decode()
    assert Client().get(reverse("oidc-start")).status_code == 404
    assert Client().get(reverse("oidc-callback")).status_code == 404


def test_a_provider_user_signs_in_and_gets_the_roles_of_their_groups(oidc_on: Provider, alpha: Team) -> None:
    client = Client()
    response = _round_trip(
        client, oidc_on, _claims("olivia", ["alpha-devs", "alpha-leads", "other"]), "/apps/"
    )
    assert response.status_code == 302 and response["Location"] == "/apps/"
    olivia = User.objects.get(username="olivia")
    assert (olivia.first_name, olivia.last_name, olivia.email) == ("Olivia", "Tester", "olivia@example.test")
    assert not olivia.has_usable_password() and not olivia.is_staff
    assert _roles("olivia") == {"alpha": "lead"}
    assert client.session[BACKEND_SESSION_KEY] == BACKEND
    assert client.get(reverse("home")).status_code == 200


def test_the_ops_group_makes_ops_and_the_next_sign_in_follows_the_groups(oidc_on: Provider) -> None:
    _round_trip(Client(), oidc_on, _claims("oscar", ["platform-ops"]))
    oscar = User.objects.get(username="oscar")
    assert oscar.is_staff and oscar.is_superuser and _roles("oscar") == {}

    response = _round_trip(Client(), oidc_on, _claims("oscar", ["alpha-devs"]))
    assert response.status_code == 302 and response["Location"] == reverse("home")
    oscar.refresh_from_db()
    assert not oscar.is_staff and not oscar.is_superuser
    assert _roles("oscar") == {"alpha": "developer"}  # team alpha made for him


def test_a_lead_is_a_developer_from_the_next_sign_in_after_leaving_the_lead_group(
    oidc_on: Provider, alpha: Team
) -> None:
    _round_trip(Client(), oidc_on, _claims("olivia", ["alpha-devs", "alpha-leads"]))
    assert _roles("olivia") == {"alpha": "lead"}
    response = _round_trip(Client(), oidc_on, _claims("olivia", ["alpha-devs"]))
    assert response.status_code == 302 and response["Location"] == reverse("home")
    assert _roles("olivia") == {"alpha": "developer"}


def test_groups_that_give_nothing_are_refused_with_a_message_and_take_access_away(oidc_on: Provider) -> None:
    client = Client()
    assert NO_ACCESS in _message_after(client, _round_trip(client, oidc_on, _claims("nina", ["other"])))
    assert not User.objects.filter(username="nina").exists()

    _round_trip(Client(), oidc_on, _claims("nina", ["alpha-devs"]))
    client = Client()
    assert NO_ACCESS in _message_after(client, _round_trip(client, oidc_on, _claims("nina", [])))
    assert _roles("nina") == {}
    assert "_auth_user_id" not in client.session


def test_a_local_account_is_not_taken_over_by_the_provider(oidc_on: Provider, owner: User) -> None:
    client = Client()
    message = _message_after(client, _round_trip(client, oidc_on, _claims("owner", ["platform-ops"])))
    assert "owner is a local account here: sign in with its password, not with Test SSO." in message
    owner.refresh_from_db()
    assert not owner.is_staff and owner.email == "owner@example.invalid"


def test_an_id_token_signed_by_another_key_is_refused(oidc_on: Provider) -> None:
    oidc_on.signing_key = rsa.generate_private_key(65537, 2048)
    client = Client()
    message = _message_after(client, _round_trip(client, oidc_on, _claims("mallory", ["platform-ops"])))
    assert "Sign-in with Test SSO failed: its answer could not be verified." in message
    assert not User.objects.filter(username="mallory").exists()


def test_a_provider_that_cannot_be_reached_is_said_so(oidc_on: Provider, settings: Any) -> None:
    settings.OIDC_OP_TOKEN_ENDPOINT = "http://127.0.0.1:9/token"  # nothing listens on the discard port
    client = Client()
    message = _message_after(client, _round_trip(client, oidc_on, _claims("pat", ["alpha-devs"])))
    assert (
        "Sign-in with Test SSO failed: the provider could not be reached or refused the sign-in." in message
    )


def test_a_name_that_is_not_a_user_name_is_refused(oidc_on: Provider) -> None:
    client = Client()
    message = _message_after(
        client, _round_trip(client, oidc_on, _claims("no spaces please", ["alpha-devs"]))
    )
    assert "its 'preferred_username' claim is not a user name" in message


# --- after sign-in: tokens and terminals keep the last sign-in's access ------------------------


@pytest.fixture
def alpha_instance(owner: User, image: BaseImage) -> Instance:
    app = services.app_create(
        user=owner, team=owner.memberships.get().team, slug="web", base_image=image, instances=1
    )
    return Instance.objects.get(app=app)


def _signed_in_with_token(
    provider: Provider, username: str, groups: list[str]
) -> tuple[Client, User, APIClient]:
    client = Client()
    response = _round_trip(client, provider, _claims(username, groups))
    assert response.status_code == 302 and response["Location"] == reverse("home")
    user = User.objects.get(username=username)
    made = tokens.api_token_create(
        user=user, name="laptop", scope="write", expires_at=tokens.expires_after(30)
    )
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {made.key}")
    return client, user, api


def test_tokens_and_terminals_keep_the_access_of_the_last_sign_in(
    oidc_on: Provider, settings: Any, alpha_instance: Instance
) -> None:
    client, olivia, api = _signed_in_with_token(oidc_on, "olivia", ["alpha-devs"])
    assert LastSignIn.objects.get(user=olivia).backend == BACKEND
    # The provider drops her from the group, and cannot even be reached: nothing asks it after
    # sign-in, so her token and her terminal go on with what the sign-in gave.
    oidc_on.user = _claims("olivia", [])
    settings.OIDC_OP_USER_ENDPOINT = settings.OIDC_OP_TOKEN_ENDPOINT = "http://127.0.0.1:9/"
    response = api.get("/api/v1/apps/")
    assert response.status_code == 200 and [a["slug"] for a in response.json()["results"]] == ["web"]
    session_key = client.session.session_key
    assert terminal_check(session_key=session_key, user_pk=olivia.pk, instance_pk=alpha_instance.pk) is None
    assert _roles("olivia") == {"alpha": "developer"}


def test_a_deactivated_provider_user_is_refused_by_token_terminal_and_pages(
    oidc_on: Provider, alpha_instance: Instance
) -> None:
    client, olivia, api = _signed_in_with_token(oidc_on, "olivia", ["alpha-devs"])
    session_key = client.session.session_key
    assert terminal_check(session_key=session_key, user_pk=olivia.pk, instance_pk=alpha_instance.pk) is None

    olivia.is_active = False  # what ops do in the admin to cut someone off
    olivia.save()
    response = api.get("/api/v1/apps/")
    assert response.status_code == 401 and response.json()["detail"] == "User inactive or deleted."
    refusal = terminal_check(session_key=session_key, user_pk=olivia.pk, instance_pk=alpha_instance.pk)
    assert refusal is not None and refusal.code == Close.SIGNED_OUT
    assert client.get(reverse("home")).status_code == 302  # to the sign-in page


# --- the settings, at start-up ----------------------------------------------------------------

GOOD_ENV = {
    "OIDC_RP_CLIENT_ID": "slipway",
    "OIDC_RP_CLIENT_SECRET": "s3cret",
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "https://sso.example.com/auth",
    "OIDC_OP_TOKEN_ENDPOINT": "https://sso.example.com/token",
    "OIDC_OP_USER_ENDPOINT": "https://sso.example.com/userinfo",
    "OIDC_OP_JWKS_ENDPOINT": "https://sso.example.com/certs",
    "OIDC_TEAM_GROUPS": "alpha-devs => alpha:developer",
}


def _settings_with(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    monkeypatch.delenv("LDAP_SERVER_URI", raising=False)
    for name, value in (GOOD_ENV | env).items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "portal" / "settings.py"))


def test_a_client_id_turns_the_provider_on_beside_local_accounts(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = _settings_with(monkeypatch)
    assert loaded["AUTHENTICATION_BACKENDS"] == ["django.contrib.auth.backends.ModelBackend", BACKEND]
    assert loaded["SIGNIN_OIDC_GROUPS"].teams == (("alpha-devs", "alpha", "developer"),)
    assert loaded["OIDC_USE_PKCE"] is True


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OIDC_OP_TOKEN_ENDPOINT": ""}, "OIDC_OP_TOKEN_ENDPOINT='': required with OIDC_RP_CLIENT_ID"),
        ({"OIDC_RP_CLIENT_SECRET": ""}, "OIDC_RP_CLIENT_SECRET (or OIDC_RP_CLIENT_SECRET_FILE): required"),
        ({"OIDC_RP_SIGN_ALGO": "HS256"}, "OIDC_RP_SIGN_ALGO='HS256': RS256, RS384"),
        ({"OIDC_RP_SCOPES": "email"}, "must include openid"),
        ({"OIDC_GROUPS_CLAIM": "group list"}, "OIDC_GROUPS_CLAIM='group list': a claim name"),
        (
            {"OIDC_TEAM_GROUPS": "alpha-devs => alpha"},
            "OIDC_TEAM_GROUPS: entry 1 ('alpha-devs => alpha'): no ':ROLE'",
        ),
        ({"OIDC_TEAM_GROUPS": ""}, "neither OIDC_OPS_GROUPS nor OIDC_TEAM_GROUPS"),
    ],
)
def test_bad_provider_settings_are_refused_at_start_up_saying_what_is_allowed(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError) as refused:
        _settings_with(monkeypatch, **env)
    assert message in str(refused.value)
