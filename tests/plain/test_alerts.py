"""Alerts without hosts: a webhook URL checked with the reason for each refusal, the signature a
receiver checks, the signing secret sealed at rest (shown once, a delivery signed with it, a key
rotation), rules (who sets what, what is allowed), an alert said once, repeated at most as its
rule says and said again when resolved."""

from __future__ import annotations

import hashlib
import hmac
import io
import re
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import call_command
from django.db import connection
from django.test import Client, override_settings
from django.utils import timezone

from apps.accounts.models import Team
from apps.alerts import delivery, services, urlcheck
from apps.alerts.models import Alert, Delivery, Kind, Notification, Rule, Webhook
from apps.applications.models import App, BaseImage
from apps.hosts.models import Host
from apps.instances.models import Instance
from tests.helpers import Received, WebhookReceiver, api_client


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://10.1.2.3/hook", "Only http:// and https:// URLs are allowed, not ftp://."),
        ("http://user:secret@10.1.2.3/hook", "Credentials in the URL (user:password@) are not allowed"),
        ("http://127.0.0.1:8000/hook", "127.0.0.1, a loopback address (this machine): refused"),
        ("http://[::1]/hook", "::1, a loopback address (this machine): refused"),
        (
            "http://169.254.169.254/latest/meta-data",
            "a link-local address (cloud metadata services live there)",
        ),
        ("http://100.100.100.200/", "a cloud metadata service"),
        ("http://0.0.0.0/", "not an address a webhook can have"),
        ("https:///no-host", "names no host"),
        ("http://10.1.2.3:99999/", "is not a URL"),
    ],
)
def test_a_webhook_url_is_refused_with_the_reason(url: str, why: str) -> None:
    with pytest.raises(ValidationError) as caught:
        urlcheck.check(url)
    assert why in caught.value.messages[0], caught.value.messages


def test_private_networks_are_allowed_and_ops_may_allow_more() -> None:
    target = urlcheck.check("https://10.20.30.40:8443/slipway?x=1")
    assert (str(target.address), target.port, target.host) == ("10.20.30.40", 8443, "10.20.30.40")
    with override_settings(ALERT_WEBHOOK_ALLOW=["127.0.0.0/8"]):
        assert str(urlcheck.check("http://127.0.0.1:8000/hook").address) == "127.0.0.1"


def test_the_signature_is_hmac_sha256_of_time_dot_body() -> None:
    body = b'{"event": "alert.firing"}'
    header = delivery.signature("s3cret", body, 1_800_000_000)
    expected = hmac.new(b"s3cret", b"1800000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1800000000,v1={expected}"


def test_back_off_doubles() -> None:
    with override_settings(ALERT_WEBHOOK_BACKOFF=10):
        assert [delivery.backoff(n) for n in (1, 2, 3, 4)] == [10, 20, 40, 80]


# --- the signing secret, sealed at rest ----------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A real HTTP receiver on this machine, which ops allow for the test."""
    server = WebhookReceiver("127.0.0.1")
    with override_settings(ALERT_WEBHOOK_ALLOW=["127.0.0.0/8"]):
        yield server
    server.close()


def _webhook_rows() -> str:
    """Everything the database holds for webhooks, as text."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM alerts_webhook")
        return repr(cursor.fetchall())


def _signed(received: Received, secret: str) -> bool:
    fields = dict(part.split("=", 1) for part in received.headers["X-Slipway-Signature"].split(","))
    expected = hmac.new(secret.encode(), f"{fields['t']}.".encode() + received.body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), fields["v1"])


def _add(lead: User, url: str = "https://10.20.30.40/hook") -> dict[str, Any]:
    answer = api_client(lead).post(
        "/api/v1/webhooks/", {"team": "alpha", "name": "lb", "url": url, "topics": ["alerts"]}, format="json"
    )
    assert answer.status_code == 201, answer.content
    body: dict[str, Any] = answer.json()
    return body


def _deliver(hook: Webhook) -> Delivery:
    sent = delivery.queue(hook, "alert.firing", {"alert": {"kind": "oom_kill"}})
    delivery.deliver(sent.pk)
    sent.refresh_from_db()
    return sent


def test_the_api_shows_a_new_webhooks_secret_once_and_the_row_keeps_it_sealed(lead: User) -> None:
    body = _add(lead)
    secret = body["secret"]
    assert re.fullmatch("[0-9a-f]{64}", secret), secret
    assert secret not in _webhook_rows()
    hook = Webhook.objects.get(pk=body["id"])
    assert hook.secret_sealed.startswith("gAAAAA") and hook.secret_opened() == secret
    # Shown once: neither the webhook nor the list shows it again.
    assert api_client(lead).get(f"/api/v1/webhooks/{hook.pk}/").json()["secret"] is None
    listed = api_client(lead).get("/api/v1/webhooks/").json()
    assert [item["secret"] for item in listed.get("results", listed)] == [None]
    # Another webhook gets a secret of its own.
    assert _add(lead)["secret"] != secret


def test_the_page_shows_a_new_webhooks_secret_once_and_the_row_keeps_it_sealed(lead: User) -> None:
    client = Client()
    client.force_login(lead)
    form = {"name": "lb", "url": "https://10.20.30.40/hook", "team": "alpha", "topics": ["alerts"]}
    answer = client.post("/alerts/webhooks/", form)
    assert answer.status_code == 302, answer.content.decode()
    page = client.get("/alerts/webhooks/").content.decode()
    shown = re.search(r"<pre [^>]*data-secret>([0-9a-f]{64})</pre>", page)
    assert shown is not None, page
    assert shown[1] not in _webhook_rows()
    assert Webhook.objects.get().secret_opened() == shown[1]
    assert "data-secret" not in client.get("/alerts/webhooks/").content.decode()  # a reload: gone


def test_the_model_refuses_a_secret_in_clear(lead: User) -> None:
    hook = Webhook.objects.get(pk=_add(lead)["id"])
    hook.full_clean()
    hook.secret_sealed = "ab" * 32
    with pytest.raises(ValidationError, match="keeps its signing secret sealed"):
        hook.full_clean()


def test_a_delivery_is_signed_with_the_secret_shown_once(lead: User, receiver: WebhookReceiver) -> None:
    secret = _add(lead, receiver.url)["secret"]
    sent = _deliver(Webhook.objects.get())
    assert (sent.status, sent.response_status, sent.error) == (Delivery.Status.DELIVERED, 200, "")
    (got,) = receiver.received
    assert _signed(got, secret)
    assert not _signed(got, Webhook.objects.get().secret_sealed)  # not with the sealed token


def test_after_a_rotation_without_the_old_key_deliveries_are_signed_with_the_same_secret(
    lead: User, receiver: WebhookReceiver
) -> None:
    secret = _add(lead, receiver.url)["secret"]
    before = Webhook.objects.get().secret_sealed
    old, new = settings.SECRETS_KEYS[0], Fernet.generate_key().decode()
    with override_settings(SECRETS_KEYS=[new, old]):
        out = io.StringIO()
        call_command("rotate_secrets", stdout=out)
        assert ", 1 of webhooks' signing secrets." in out.getvalue()
    with override_settings(SECRETS_KEYS=[new]):
        hook = Webhook.objects.get()
        assert hook.secret_sealed != before and secret not in _webhook_rows()
        sent = _deliver(hook)
    assert sent.status == Delivery.Status.DELIVERED, sent.error
    (got,) = receiver.received
    assert _signed(got, secret)


def test_a_secret_no_key_opens_fails_the_attempt_with_why_and_sends_nothing(
    lead: User, receiver: WebhookReceiver
) -> None:
    _add(lead, receiver.url)
    lost = Fernet(Fernet.generate_key()).encrypt(b"a" * 64).decode()
    Webhook.objects.update(secret_sealed=lost)
    sent = _deliver(Webhook.objects.get())
    assert sent.status == Delivery.Status.PENDING and sent.attempts == 1
    assert sent.error.startswith("The secret of the webhook lb (id ")
    assert "cannot be opened with any key in SECRETS_KEYS" in sent.error
    assert receiver.received == []


@pytest.fixture
def instance(owner: User, image: BaseImage, hosts: list[Host]) -> Instance:
    app = App.objects.create(slug="web", team=owner.memberships.get().team, base_image=image, instances=1)
    return Instance.objects.create(app=app, slot=0, host=hosts[0], memory_mb=64, cpus=Decimal("0.25"))


def test_rules_ops_set_defaults_a_lead_the_teams_own(
    alpha: Team, owner: User, lead: User, ops: User, outsider: User
) -> None:
    with pytest.raises(PermissionDenied, match="Only ops change the default alert rules"):
        services.rule_save(user=lead, kind=Kind.MEMORY_HIGH, team=None, threshold_pct=80)
    services.rule_save(user=ops, kind=Kind.MEMORY_HIGH, team=None, threshold_pct=85)
    assert services.rule_for(Kind.MEMORY_HIGH, alpha).threshold_pct == 85  # the default, for now

    with pytest.raises(PermissionDenied, match="Only a lead of alpha"):
        services.rule_save(user=owner, kind=Kind.MEMORY_HIGH, team=alpha, threshold_pct=70)
    own = services.rule_save(user=lead, kind=Kind.MEMORY_HIGH, team=alpha, threshold_pct=70)
    assert own.team == alpha and own.for_seconds == 300  # the rest from the default
    assert services.rule_for(Kind.MEMORY_HIGH, alpha).threshold_pct == 70
    assert services.rule_for(Kind.MEMORY_HIGH, None).threshold_pct == 85

    with pytest.raises(ValidationError) as caught:
        services.rule_save(user=lead, kind=Kind.HOST_UNREACHABLE, team=alpha, enabled=False)
    assert "about the fleet: ops set them" in str(caught.value)
    with pytest.raises(ValidationError) as caught:
        services.rule_save(user=lead, kind=Kind.OOM_KILL, team=alpha, threshold_pct=50, repeat_minutes=99999)
    assert caught.value.message_dict == {
        "threshold_pct": ["OOM kill has no threshold; leave it empty."],
        "repeat_minutes": ["From 0 (say it once) to 7 days (10080 minutes)."],
    }
    services.rule_reset(user=lead, kind=Kind.MEMORY_HIGH, team=alpha)
    assert services.rule_for(Kind.MEMORY_HIGH, alpha).threshold_pct == 85


def test_an_alert_is_said_once_repeated_at_most_as_its_rule_says_and_resolved(
    instance: Instance, owner: User, lead: User, outsider: User, ops: User
) -> None:
    rule = services.default_rule(Kind.INSTANCE_DOWN)
    Rule.objects.filter(pk=rule.pk).update(repeat_minutes=30)
    subject = services.Subject.of_instance(Kind.INSTANCE_DOWN, instance)
    t0 = timezone.now()
    alert = services.fire(Kind.INSTANCE_DOWN, subject, "slw-web-0 is down", now=t0)
    assert alert is not None
    for minutes in (1, 10, 29):
        services.fire(Kind.INSTANCE_DOWN, subject, "slw-web-0 is down", now=t0 + timedelta(minutes=minutes))
    assert Alert.objects.get(pk=alert.pk).notified == 1
    services.fire(Kind.INSTANCE_DOWN, subject, "slw-web-0 is down", now=t0 + timedelta(minutes=31))
    assert Alert.objects.get(pk=alert.pk).notified == 2
    services.resolve(subject.key, "running again", now=t0 + timedelta(minutes=40))
    alert.refresh_from_db()
    assert (alert.state, alert.notified) == (Alert.State.RESOLVED, 3)

    texts = list(Notification.objects.filter(user=owner).order_by("id").values_list("text", flat=True))
    assert texts == [
        "Instance down: slw-web-0 is down",
        "Still: slw-web-0 is down",
        "Resolved: slw-web-0 is down (running again)",
    ]
    # The team hears of its app's alerts; another team and ops (not in it) do not.
    assert Notification.objects.filter(user=lead).count() == 3
    assert not Notification.objects.filter(user__in=[outsider, ops]).exists()
    # It fires anew after it was resolved.
    again = services.fire(Kind.INSTANCE_DOWN, subject, "slw-web-0 is down", now=t0 + timedelta(minutes=50))
    assert again is not None and again.pk != alert.pk


def test_a_rule_switched_off_says_nothing(instance: Instance) -> None:
    Rule.objects.filter(pk=services.default_rule(Kind.OOM_KILL).pk).update(enabled=False)
    subject = services.Subject.of_instance(Kind.OOM_KILL, instance)
    assert services.fire(Kind.OOM_KILL, subject, "died") is None
    assert not Alert.objects.exists()
