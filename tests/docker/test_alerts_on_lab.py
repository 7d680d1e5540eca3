"""Alerts on the lab: the kernel's OOM kill of a real instance reaches a webhook receiver, signed,
with the lines before it; lifecycle events follow the instance; a receiver that fails is tried
again; a crash loop is said once; an instance stopped behind the portal's back is "down" and then
resolved; an alert email through a real SMTP server (aiosmtpd). The real watcher, a real Celery
worker, a real HTTP receiver on the lab's segment."""

from __future__ import annotations

import hashlib
import hmac
import socket
from collections.abc import Callable, Iterator

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink
from django.contrib.auth.models import User
from django.test import override_settings

from apps.alerts import delivery as deliveries
from apps.alerts import evaluate, services
from apps.alerts.models import Alert, Delivery, Kind, Notification, Rule
from apps.applications import services as app_services
from apps.instances import executor
from apps.instances.models import Instance
from apps.lab import fleet
from tests.helpers import (
    CRASHER,
    EATER,
    EventWatcher,
    Received,
    WebhookReceiver,
    api_client,
    app_prints,
    eventually,
)


def _hook(lead: User, receiver: WebhookReceiver, topics: list[str]) -> dict[str, object]:
    answer = api_client(lead).post(
        "/api/v1/webhooks/",
        {"team": "alpha", "name": "lb", "url": receiver.url, "topics": topics},
        format="json",
    )
    assert answer.status_code == 201, answer.content
    body: dict[str, object] = answer.json()
    assert isinstance(body["secret"], str) and len(body["secret"]) == 64
    # Shown once: never again.
    assert api_client(lead).get(f"/api/v1/webhooks/{body['id']}/").json()["secret"] is None
    return body


def _signed(received: Received, secret: str) -> bool:
    fields = dict(part.split("=", 1) for part in received.headers["X-Slipway-Signature"].split(","))
    expected = hmac.new(
        secret.encode(), f"{fields['t']}.".encode() + received.body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, fields["v1"])


def test_an_oom_kill_reaches_the_webhook_signed_with_the_lines_before_it(
    watcher: EventWatcher,
    worker: None,
    receiver: WebhookReceiver,
    app_running: Callable[[str, str], Instance],
    lab: list[fleet.LabHost],
    owner: User,
    lead: User,
    outsider: User,
) -> None:
    hook = _hook(lead, receiver, ["alerts", "lifecycle"])
    instance = app_running("oomer", EATER)
    # The instance's own start went to the lifecycle webhook, with where it serves.
    started = eventually(lambda: receiver.events("instance.started"), 20, "the start delivered")[0]
    assert started.json["instance"]["name"] == instance.container_name
    assert started.json["instance"]["host"] == instance.host.name

    lab_host = next(h for h in lab if h.name == instance.host.name)
    app_prints(lab, instance, "echo last words")
    fleet.docker(lab_host, "exec", instance.container_name, "touch", "/srv/data/eat")

    firing = eventually(lambda: receiver.events("alert.firing"), 30, "the OOM alert delivered")
    assert len(firing) == 1, [r.json for r in firing]  # the "oom" and the death are one alert
    said = firing[0]
    assert _signed(said, str(hook["secret"]))
    assert said.headers["Content-Type"] == "application/json"
    alert = said.json["alert"]
    assert alert["kind"] == "oom_kill" and alert["state"] == "firing"
    assert alert["instance"] == instance.container_name and alert["app"] == "oomer"
    assert "last words" in alert["detail"] and "eating memory" in alert["detail"]
    assert said.json["delivery"] == int(said.headers["X-Slipway-Delivery"])
    eventually(lambda: receiver.events("instance.died"), 20, "the death delivered to lifecycle")
    assert receiver.events("instance.died")[0].json["instance"]["exit_code"] == 137

    # Recorded: delivered, and a notification for each of the team (not the other team).
    delivery = Delivery.objects.get(pk=said.json["delivery"])
    assert delivery.status == Delivery.Status.DELIVERED and delivery.response_status == 200
    row = Alert.objects.get(kind="oom_kill")
    assert set(Notification.objects.filter(alert=row).values_list("user__username", flat=True)) == {
        owner.username,
        lead.username,
    }
    listed = api_client(owner).get("/api/v1/alerts/", {"state": "firing"}).json()["results"]
    assert [a["kind"] for a in listed] == ["oom_kill"]
    assert api_client(outsider).get("/api/v1/alerts/").json()["results"] == []
    assert api_client(owner).get("/api/v1/notifications/", {"unread": "1"}).json()["count"] == 1

    # Scaled to nothing: the load balancer hears the container is gone, though its row went first.
    op = app_services.app_scale(user=owner, app=instance.app, instances=0)
    executor.run_operation(op.pk)
    # (Whether the watcher reads the stop before or after the worker deletes the row, it is said.)
    stopped = eventually(lambda: receiver.events("instance.stopped"), 20, "the removal delivered")[0]
    assert stopped.json["instance"]["name"] == instance.container_name
    assert stopped.json["instance"]["detail"].startswith("stopped (exit code")


def test_a_crash_loop_is_said_once_and_a_failing_receiver_gets_it_on_a_later_attempt(
    watcher: EventWatcher,
    worker: None,
    lab: list[fleet.LabHost],
    app_running: Callable[[str, str], Instance],
    lead: User,
) -> None:
    # Fails twice (HTTP 500, 503), then takes it: the delivery is tried again with back-off.
    receiver = WebhookReceiver(str(lab[0].config.portal_ip), answers=(500, 503, 200))
    try:
        _hook(lead, receiver, ["alerts"])
        app_running("looper", CRASHER)
        loop = eventually(
            lambda: [r for r in receiver.events("alert.firing") if r.json["alert"]["kind"] == "crash_loop"],
            60,
            "the crash loop alert delivered after the receiver recovered",
        )
        assert len(loop) == 1
        delivery = Delivery.objects.get(pk=loop[0].json["delivery"])
        assert delivery.status == Delivery.Status.DELIVERED
        assert delivery.attempts == 3, delivery.attempts
        # The same delivery id on every attempt: receivers dedupe by it.
        ids = {
            r.headers["X-Slipway-Delivery"]
            for r in receiver.received
            if r.json["alert"]["kind"] == "crash_loop"
        }
        assert ids == {str(delivery.pk)}
        assert Alert.objects.filter(kind="crash_loop").count() == 1
    finally:
        receiver.close()


def test_an_instance_stopped_behind_the_portals_back_is_down_then_resolved(
    watcher: EventWatcher,
    receiver: WebhookReceiver,
    app_running: Callable[[str, str], Instance],
    lab: list[fleet.LabHost],
    lead: User,
) -> None:
    _hook(lead, receiver, ["alerts"])
    answer = api_client(lead).post(
        "/api/v1/alert-rules/", {"team": "alpha", "kind": "instance_down", "for_seconds": 1}, format="json"
    )
    assert answer.status_code == 200, answer.content
    instance = app_running("sleeper", "echo up; exec sleep 3600")
    lab_host = next(h for h in lab if h.name == instance.host.name)
    fleet.docker(lab_host, "stop", "-t", "1", instance.container_name)
    eventually(lambda: instance.events.filter(kind="stopped").exists(), 20, "the stop recorded")

    def down() -> Alert | None:
        evaluate.evaluate()
        return Alert.objects.filter(kind="instance_down", state="firing").first()

    alert = eventually(down, 20, "the instance down alert", every=0.5)
    assert alert.subject == instance.container_name
    assert "is down (stopped)" in alert.summary

    fleet.docker(lab_host, "start", instance.container_name)
    eventually(lambda: instance.events.filter(kind="started").count() >= 2, 20, "the start recorded")
    evaluate.evaluate()
    alert.refresh_from_db()
    assert alert.state == Alert.State.RESOLVED
    # Said to the webhook: no worker runs in this test, so its deliveries are run here.
    for pk in Delivery.objects.filter(status="pending").values_list("pk", flat=True):
        deliveries.deliver(pk)

    def said() -> set[tuple[str, str]]:
        return {(r.headers["X-Slipway-Event"], r.json["alert"]["kind"]) for r in receiver.received}

    eventually(
        lambda: {("alert.firing", "instance_down"), ("alert.resolved", "instance_down")} <= said(),
        20,
        "firing and resolved delivered",
    )
    resolved = next(r for r in receiver.received if r.headers["X-Slipway-Event"] == "alert.resolved")
    assert resolved.json["alert"]["why_resolved"] == "running again"


@pytest.fixture
def smtp() -> Iterator[Sink]:
    """A real SMTP server (aiosmtpd) on a free port that keeps what it is sent."""

    class Keep(Sink):
        def __init__(self) -> None:
            self.messages: list[tuple[str, list[str], bytes]] = []

        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
            return "250 OK"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handler = Keep()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with override_settings(
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=port,
        ):
            yield handler
    finally:
        controller.stop()


def test_an_alert_email_goes_to_the_team_through_smtp(
    smtp: Sink, app_running: Callable[[str, str], Instance], owner: User, lead: User
) -> None:
    instance = app_running("mailer", "exec sleep 3600")
    owner.email, lead.email = "owner@example.invalid", "lead@example.invalid"
    owner.save()
    lead.save()
    Rule.objects.filter(pk=services.default_rule(Kind.OOM_KILL).pk).update(notify_email=True)
    subject = services.Subject.of_instance(Kind.OOM_KILL, instance)
    alert = services.fire(
        Kind.OOM_KILL, subject, "slw-web-0 died: exit code 137 (OOM killed)", "eating memory"
    )
    assert alert is not None
    services.send_email(
        alert.pk,
        "OOM kill: slw-web-0 died: exit code 137 (OOM killed)",
        ["lead@example.invalid", "owner@example.invalid"],
    )
    (sender, to, content) = smtp.messages[0]  # type: ignore[attr-defined]
    assert sender == "slipway@localhost"
    assert to == ["lead@example.invalid", "owner@example.invalid"]
    assert b"Subject: [Slipway] OOM kill: slw-web-0 died: exit code 137 (OOM killed)" in content
    assert b"eating memory" in content
    assert f"/alerts/{alert.pk}/".encode() in content
