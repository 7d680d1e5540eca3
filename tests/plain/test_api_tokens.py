"""Named API tokens: several per user, each with a scope and an expiry, the key shown once and only
its hash kept; refused keys say why; read-only tokens only read, on every write path; last use
recorded without a write per request; the page, the API, the admin; old single tokens converted
by the migration and still working until they expire; the lifetimes' settings checked at start-up."""

from __future__ import annotations

import hashlib
import re
import runpy
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from apps.accounts import tokens
from apps.accounts.models import ApiToken
from tests.plain.test_migrations_keep_rows import _before, _latest, _migrate

HTMX = {"HX-Request": "true"}


def _keyed(key: str, keyword: str = "Token", **extra: Any) -> APIClient:
    client = APIClient(**extra)
    client.credentials(HTTP_AUTHORIZATION=f"{keyword} {key}")
    return client


def _make(user: User, name: str = "laptop", scope: str = "write", days: int = 30) -> tokens.Created:
    return tokens.api_token_create(user=user, name=name, scope=scope, expires_at=tokens.expires_after(days))


def _signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _post_token(client: APIClient, **body: Any) -> Any:
    return client.post("/api/v1/tokens/", body, format="json")


# --- making a token: the key once, its hash kept ---------------------------------------------------


def test_a_token_made_through_the_api_shows_its_key_once_and_keeps_only_its_hash(owner: User) -> None:
    api = _keyed(_make(owner, "bootstrap").key)
    made = _post_token(api, name="ci deploy", scope="read", expires_in_days=7)
    assert made.status_code == 201, made.content
    body = made.json()
    key = body["key"]
    assert re.fullmatch(r"slw_[A-Za-z0-9]{40}", key)
    assert (body["name"], body["scope"], body["state"], body["prefix"]) == (
        "ci deploy",
        "read",
        "active",
        key[:12],
    )
    row = ApiToken.objects.get(pk=body["id"])
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in str(ApiToken.objects.filter(pk=row.pk).values().get())
    # Never again: not in the list, not in the token's own answer.
    assert key not in api.get("/api/v1/tokens/").content.decode()
    assert key not in api.get(f"/api/v1/tokens/{row.pk}/").content.decode()
    assert [t["name"] for t in api.get("/api/v1/tokens/").json()["results"]] == ["ci deploy", "bootstrap"]
    # And it works.
    assert _keyed(key).get("/api/v1/apps/").status_code == 200


def test_the_page_shows_a_new_key_once_then_only_its_prefix(owner: User) -> None:
    browser = _signed_in(owner)
    made = browser.post(
        "/account/token/create/", {"name": "laptop", "scope": "write", "expires": "90"}, headers=HTMX
    )
    assert made.status_code == 201
    key = re.search(r'<code id="new-token">(slw_\w+)</code>', made.content.decode()).group(1)  # type: ignore[union-attr]
    assert 'data-copy="new-token"' in made.content.decode()
    token = ApiToken.objects.get(user=owner)
    assert (token.name, token.scope, token.prefix) == ("laptop", "write", key[:12])
    assert timedelta(days=89, hours=23) < token.expires_at - timezone.now() <= timedelta(days=90)
    page = browser.get("/account/token/").content.decode()
    assert key not in page and f"{key[:12]}…" in page and "laptop" in page
    assert _keyed(key, "Bearer").get("/api/v1/apps/").status_code == 200


def test_a_token_until_a_date_stops_at_midnight_starting_that_date(owner: User) -> None:
    day = timezone.localdate() + timedelta(days=10)
    made = _signed_in(owner).post(
        "/account/token/create/",
        {"name": "until", "scope": "read", "expires": "date", "expires_on": day.isoformat()},
        headers=HTMX,
    )
    assert made.status_code == 201, made.content
    expires = timezone.localtime(ApiToken.objects.get(user=owner).expires_at)
    assert (expires.date(), expires.hour, expires.minute) == (day, 0, 0)


def test_the_form_says_what_each_field_needs(owner: User) -> None:
    browser = _signed_in(owner)
    answer = browser.post(
        "/account/token/create/", {"name": "", "scope": "admin", "expires": "1000"}, headers=HTMX
    )
    assert answer.status_code == 422
    text = answer.content.decode()
    assert "admin is not a scope: choose read only or read and write." in text
    assert "1000 is not offered: choose a number of days or a date." in text
    answer = browser.post(
        "/account/token/create/", {"name": "", "scope": "read", "expires": "7"}, headers=HTMX
    )
    assert "Give the token a name" in answer.content.decode()
    answer = browser.post(
        "/account/token/create/", {"name": "x", "scope": "read", "expires": "date"}, headers=HTMX
    )
    assert "Give the date the token stops working." in answer.content.decode()
    past = (timezone.localdate() - timedelta(days=1)).isoformat()
    answer = browser.post(
        "/account/token/create/",
        {"name": "x", "scope": "read", "expires": "date", "expires_on": past},
        headers=HTMX,
    )
    assert "has passed: give a moment in the future." in answer.content.decode()
    far = (timezone.localdate() + timedelta(days=400)).isoformat()
    answer = browser.post(
        "/account/token/create/",
        {"name": "x", "scope": "read", "expires": "date", "expires_on": far},
        headers=HTMX,
    )
    assert "At most 365 days from now (API_TOKEN_MAX_DAYS)" in answer.content.decode()
    assert not ApiToken.objects.exists()


def test_names_are_required_short_and_unique_among_live_tokens(owner: User, outsider: User) -> None:
    api = _keyed(_make(owner, "Laptop").key)

    def refused(name: str) -> str:
        answer = _post_token(api, name=name, scope="read", expires_in_days=7)
        assert answer.status_code == 400, (name, answer.content)
        return " ".join(answer.json()["name"])

    assert "Give the token a name" in refused("   ")
    assert "At most 80 characters (this one has 81)." in refused("n" * 81)
    assert "no control characters" in refused("ci\ndeploy")
    assert "already have a live token named 'laptop'" in refused("laptop")
    # Another user's names are theirs; a revoked or expired token's name is free again.
    _make(outsider, "phone")
    phone = _make(owner, "phone").token
    tokens.api_token_revoke(user=owner, token=phone)
    assert _post_token(api, name="phone", scope="read", expires_in_days=7).status_code == 201
    old = _make(owner, "old").token
    ApiToken.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert _post_token(api, name="old", scope="read", expires_in_days=7).status_code == 201


def test_scope_and_expiry_are_checked_with_what_is_allowed(owner: User) -> None:
    api = _keyed(_make(owner, "bootstrap", days=365).key)
    cases: list[tuple[dict[str, Any], str, str]] = [
        (
            {"scope": "admin", "expires_in_days": 7},
            "scope",
            "'admin' is not a scope: give read (read only) or write",
        ),
        ({"scope": "", "expires_in_days": 7}, "scope", "'' is not a scope"),
        ({"scope": "read"}, "expires_in_days", "Required: expires_in_days (1 to 365) or expires_at"),
        ({"scope": "read", "expires_in_days": 0}, "expires_in_days", "0 days is not allowed: give 1 to 365"),
        (
            {"scope": "read", "expires_in_days": 366},
            "expires_in_days",
            "366 days is not allowed: give 1 to 365",
        ),
        ({"scope": "read", "expires_in_days": "ten"}, "expires_in_days", "A valid integer is required."),
        (
            {"scope": "read", "expires_at": "2001-01-01"},
            "expires_at",
            "has passed: give a moment in the future.",
        ),
        ({"scope": "read", "expires_at": "2999-01-01"}, "expires_at", "At most 365 days from now"),
        (
            {"scope": "read", "expires_in_days": 7, "expires_at": "2999-01-01"},
            "expires_at",
            "Give expires_in_days or expires_at, not both.",
        ),
    ]
    for body, field, said in cases:
        answer = _post_token(api, name="x", **body)
        assert answer.status_code == 400, (body, answer.content)
        assert said in " ".join(answer.json()[field]), (body, answer.json())
    with override_settings(API_TOKEN_MAX_DAYS=10):
        answer = _post_token(api, name="x", scope="read", expires_in_days=30)
        assert "30 days is not allowed: give 1 to 10" in answer.json()["expires_in_days"][0]
        assert tokens.expiry_choices() == [7, 10]
    assert ApiToken.objects.filter(user=owner).count() == 1


def test_a_token_cannot_make_a_token_that_outlives_it(owner: User) -> None:
    api = _keyed(_make(owner, "short", days=30).key)
    answer = _post_token(api, name="longer", scope="read", expires_in_days=31)
    assert answer.status_code == 400
    assert "A token cannot make a token that outlives it" in answer.json()["expires_at"][0]
    assert _post_token(api, name="shorter", scope="read", expires_in_days=29).status_code == 201
    # A session may (the person is there).
    session = APIClient()
    session.force_login(owner)
    assert _post_token(session, name="long", scope="read", expires_in_days=365).status_code == 201


# --- refused keys: 401 saying why and where to make one ------------------------------------------


def test_an_unknown_key_is_401_saying_where_to_make_one(owner: User) -> None:
    answer = _keyed("slw_" + "x" * 40).get("/api/v1/apps/")
    assert answer.status_code == 401
    assert answer.json()["detail"] == (
        "Invalid token: no token has this key (mistyped, or never made). "
        "Make one at http://testserver/account/token/"
    )
    assert answer["WWW-Authenticate"] == 'Token realm="api"'


def test_an_expired_token_is_401_saying_when_it_expired(owner: User) -> None:
    made = _make(owner, "old")
    when = timezone.now() - timedelta(days=2)
    ApiToken.objects.filter(pk=made.token.pk).update(expires_at=when)
    answer = _keyed(made.key).get("/api/v1/apps/")
    assert answer.status_code == 401
    assert (
        f"'old') expired on {tokens.moment(when)}. Make a new one at http://testserver/account/token/"
        in (answer.json()["detail"])
    )


def test_a_revoked_token_is_401_saying_it_was_revoked(owner: User) -> None:
    made = _make(owner)
    api = _keyed(made.key)
    assert api.get("/api/v1/apps/").status_code == 200
    assert api.delete(f"/api/v1/tokens/{made.token.pk}/").status_code == 204
    answer = api.get("/api/v1/apps/")
    assert answer.status_code == 401 and "'laptop') was revoked on " in answer.json()["detail"]
    session = APIClient()
    session.force_login(owner)
    again = session.delete(f"/api/v1/tokens/{made.token.pk}/")
    assert again.status_code == 400 and "was already revoked on" in again.json()["detail"][0]
    assert session.get(f"/api/v1/tokens/{made.token.pk}/").json()["state"] == "revoked"


def test_an_inactive_users_token_is_refused(owner: User) -> None:
    key = _make(owner).key
    User.objects.filter(pk=owner.pk).update(is_active=False)
    answer = _keyed(key).get("/api/v1/apps/")
    assert answer.status_code == 401 and answer.json()["detail"] == "User inactive or deleted."


@pytest.mark.parametrize(
    ("header", "said"),
    [
        ("Token", "no key given"),
        ("Bearer a b", "a key holds no spaces"),
        ("Token slw_\u00e9t\u00e9", "a key is letters, digits and '_' only"),
    ],
)
def test_a_malformed_header_is_401_saying_what_to_send(db: None, header: str, said: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    answer = client.get("/api/v1/apps/")
    assert answer.status_code == 401 and said in answer.json()["detail"]


# --- scopes ------------------------------------------------------------------------------------


def _unsafe_operations() -> list[tuple[str, str]]:
    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]
    found = [
        (method, path.replace("{id}", "1").replace("{slug}", "web"))
        for path, operations in paths.items()
        for method in operations
        if method in ("post", "put", "patch", "delete")
    ]
    assert len(found) > 30  # the whole API, not a few
    return found


def test_a_read_only_token_reads_but_every_write_of_the_api_is_403(owner: User, ops: User) -> None:
    # Ops' tokens follow the same scopes.
    for user in (owner, ops):
        api = _keyed(_make(user, "reader", scope="read").key)
        assert api.get("/api/v1/apps/").status_code == 200
        assert api.head("/api/v1/apps/").status_code == 200
        assert api.options("/api/v1/apps/").status_code == 200
        for method, path in _unsafe_operations():
            answer = getattr(api, method)(path, {}, format="json")
            assert answer.status_code == 403, (method, path, answer.status_code)
            said = answer.json()["detail"]
            assert "is read-only: it may read (GET, HEAD, OPTIONS) but not " in said, (method, path)
            assert f"{method.upper()} {path}" in said and "/account/token/" in said
    assert ApiToken.objects.filter(scope="read").count() == 2  # it made no token either


def test_a_read_and_write_token_writes(owner: User) -> None:
    api = _keyed(_make(owner, scope="write").key)
    answer = _post_token(api, name="made by a token", scope="read", expires_in_days=7)
    assert answer.status_code == 201


# --- last use ----------------------------------------------------------------------------------


def test_last_use_is_recorded_with_the_address_at_most_once_a_minute(owner: User) -> None:
    made = _make(owner)
    assert made.token.last_used_at is None
    api = _keyed(made.key, REMOTE_ADDR="10.0.0.7")
    assert api.get("/api/v1/apps/").status_code == 200
    token = ApiToken.objects.get(pk=made.token.pk)
    assert token.last_used_from == "10.0.0.7" and token.last_used_at is not None
    first = token.last_used_at
    # Again within the minute: nothing is written.
    with CaptureQueriesContext(connection) as queries:
        assert api.get("/api/v1/apps/").status_code == 200
    assert not [q for q in queries.captured_queries if "api_token" in q["sql"] and "UPDATE" in q["sql"]]
    assert ApiToken.objects.get(pk=made.token.pk).last_used_at == first
    # A minute later, from elsewhere: written again.
    ApiToken.objects.filter(pk=made.token.pk).update(last_used_at=first - timedelta(seconds=61))
    assert _keyed(made.key, REMOTE_ADDR="10.0.0.8").get("/api/v1/apps/").status_code == 200
    token = ApiToken.objects.get(pk=made.token.pk)
    assert token.last_used_from == "10.0.0.8"
    assert token.last_used_at is not None and token.last_used_at > first
    page = _signed_in(owner).get("/account/token/").content.decode()
    assert "<code>10.0.0.8</code>" in page


# --- whose tokens --------------------------------------------------------------------------------


def test_another_users_token_is_not_found_anywhere(owner: User, outsider: User, ops: User) -> None:
    theirs = _make(outsider, "theirs").token
    for user in (owner, ops):  # ops too: everyone's tokens are in the admin, not the API
        session = APIClient()
        session.force_login(user)
        assert session.get(f"/api/v1/tokens/{theirs.pk}/").status_code == 404
        assert session.delete(f"/api/v1/tokens/{theirs.pk}/").status_code == 404
        assert session.get("/api/v1/tokens/").json()["results"] == []
        assert _signed_in(user).post(f"/account/token/{theirs.pk}/revoke/", headers=HTMX).status_code == 404
        assert "theirs" not in _signed_in(user).get("/account/token/").content.decode()
    assert ApiToken.objects.get(pk=theirs.pk).revoked_at is None


def test_the_page_lists_and_revokes_tokens_in_place(owner: User, django_assert_max_num_queries: Any) -> None:
    laptop = _make(owner, "laptop", scope="read").token
    _make(owner, "ci", scope="write")
    for n in range(5):
        _make(owner, f"spare {n}")
    browser = _signed_in(owner)
    with django_assert_max_num_queries(8):  # not one query per token
        page = browser.get("/account/token/").content.decode()
    assert page.count('data-state="active"') == 7
    assert "Read only" in page and "Read and write" in page and "never" in page
    answer = browser.post(f"/account/token/{laptop.pk}/revoke/", headers=HTMX)
    assert answer.status_code == 200
    fragment = answer.content.decode()
    assert fragment.lstrip().startswith('<section class="card" id="token-list">')
    assert "Revoked &#x27;laptop&#x27;" in fragment and 'data-token="laptop" data-state="revoked"' in fragment
    again = browser.post(f"/account/token/{laptop.pk}/revoke/", headers=HTMX)
    assert again.status_code == 422 and "was already revoked on" in again.content.decode()


# --- the admin -----------------------------------------------------------------------------------


def test_ops_see_and_revoke_everyones_tokens_in_the_admin_but_never_a_key(owner: User, ops: User) -> None:
    User.objects.filter(pk=ops.pk).update(is_superuser=True)
    made = _make(owner, "laptop")
    admin = _signed_in(ops)
    listing = admin.get("/admin/accounts/apitoken/").content.decode()
    assert "laptop" in listing and made.token.prefix in listing and made.key not in listing
    detail = admin.get(f"/admin/accounts/apitoken/{made.token.pk}/change/").content.decode()
    assert made.token.prefix in detail and made.key not in detail and made.token.key_hash not in detail
    assert admin.get("/admin/accounts/apitoken/add/").status_code == 403
    assert admin.get("/admin/authtoken/tokenproxy/").status_code == 404  # DRF's old tokens: gone
    done = admin.post(
        "/admin/accounts/apitoken/", {"action": "revoke", "_selected_action": [made.token.pk]}, follow=True
    )
    assert "Revoked 1 token; they stopped working at once." in done.content.decode()
    token = ApiToken.objects.get(pk=made.token.pk)
    assert token.revoked_at is not None and token.revoked_by == ops
    assert f"by {ops.username}" in _signed_in(owner).get("/account/token/").content.decode()


# --- the API docs --------------------------------------------------------------------------------


def test_the_schema_describes_the_token_scheme(db: None) -> None:
    schema = APIClient().get("/api/schema/", {"format": "json"}).json()
    scheme = schema["components"]["securitySchemes"]["apiToken"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert "read-only token may use GET, HEAD and OPTIONS only" in scheme["description"]
    assert {"get", "post"} <= set(schema["paths"]["/api/v1/tokens/"])
    assert "delete" in schema["paths"]["/api/v1/tokens/{id}/"]


# --- tokens from before named tokens --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_single_tokens_from_before_named_tokens_keep_working_until_they_expire() -> None:
    before = _before({"accounts": "0002_team_quotas"})
    old = _migrate(before).loader.project_state([(a, n) for a, n in before if n]).apps
    OldUser = old.get_model("auth", "User")
    Token = old.get_model("authtoken", "Token")
    user = OldUser.objects.create(username="scripted", is_active=True)
    key = "0123456789abcdef0123456789abcdef01234567"
    Token.objects.create(user=user, key=key)

    _migrate(_latest())
    token = ApiToken.objects.get(user_id=user.pk)
    assert (token.name, token.scope, token.prefix) == ("token from before named tokens", "write", key[:8])
    assert token.key_hash == hashlib.sha256(key.encode()).hexdigest()
    left = token.expires_at - timezone.now()
    assert timedelta(days=89, hours=23) < left <= timedelta(days=90)  # LEGACY_TOKEN_DAYS
    with connection.cursor() as cursor:  # the plain-text keys are gone with their rows
        cursor.execute("SELECT COUNT(*) FROM authtoken_token")
        assert cursor.fetchone()[0] == 0
    api = _keyed(key)
    assert api.get("/api/v1/apps/").status_code == 200
    assert (
        api.post("/api/v1/tokens/", {"name": "new", "scope": "read", "expires_in_days": 7}).status_code == 201
    )
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now())
    assert "expired on" in api.get("/api/v1/apps/").json()["detail"]


def test_behind_our_proxy_last_use_is_the_address_the_proxy_saw(owner: User) -> None:
    made = _make(owner)
    headers = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "6.6.6.6, 10.0.0.9"}
    with override_settings(USE_X_FORWARDED_FOR=True):
        assert _keyed(made.key, **headers).get("/api/v1/apps/").status_code == 200
    assert ApiToken.objects.get(pk=made.token.pk).last_used_from == "10.0.0.9"


# --- the lifetimes' settings, at start-up ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("API_TOKEN_MAX_DAYS", "0"),
        ("API_TOKEN_MAX_DAYS", "-30"),
        ("API_TOKEN_MAX_DAYS", "3651"),
        ("API_TOKEN_MAX_DAYS", "99999999"),
        ("LEGACY_TOKEN_DAYS", "0"),
        ("LEGACY_TOKEN_DAYS", "10000"),
    ],
)
def test_token_lifetimes_out_of_range_are_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError) as refused:
        runpy.run_path(str(Path(settings.BASE_DIR) / "portal" / "settings.py"))
    assert str(refused.value) == f"{name}={int(value)}: a whole number of days from 1 to 3650 (ten years)"


def test_token_lifetimes_within_range_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKEN_MAX_DAYS", "3650")
    monkeypatch.setenv("LEGACY_TOKEN_DAYS", "1")
    loaded = runpy.run_path(str(Path(settings.BASE_DIR) / "portal" / "settings.py"))
    assert (loaded["API_TOKEN_MAX_DAYS"], loaded["LEGACY_TOKEN_DAYS"]) == (3650, 1)


def test_the_portal_does_not_start_with_a_token_life_of_no_days() -> None:
    env = {"PATH": "/usr/bin:/bin", "API_TOKEN_MAX_DAYS": "0"}
    started = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True
    )
    assert started.returncode != 0
    assert "API_TOKEN_MAX_DAYS=0: a whole number of days from 1 to 3650 (ten years)" in started.stderr
