"""Webhook deliveries: each is a row (Delivery) that a worker claims, POSTs, and either marks
delivered (any 2xx) or schedules again with back-off (ALERT_WEBHOOK_BACKOFF seconds, doubled
each time) until ALERT_WEBHOOK_ATTEMPTS are spent. A lost task costs nothing: the periodic
evaluation sends every pending delivery whose time has come again, and the claim makes sure
one worker posts it at a time. Receivers get at-least-once delivery: X-Slipway-Delivery is the
same on every attempt.

The body is signed like Stripe's: `X-Slipway-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of
"<t>.<body>" with the webhook's secret>`, so a receiver can check it came from the portal and is
recent. The secret is kept sealed (Webhook.secret_sealed) and opened here only to sign."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import socket
import ssl
import time
from collections.abc import Mapping
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from apps.alerts import urlcheck
from apps.alerts.models import Delivery, Webhook
from apps.applications.secret_env import SecretUnreadable
from portal import jobs

log = logging.getLogger(__name__)
TASK = "alerts.deliver"
# A claimed delivery is not taken by another worker for this long (the POST's own deadline is
# far shorter); a worker that died holding it only delays it by this much.
CLAIM_SECONDS = 120


@sensitive_variables("secret")  # an error report shows no opened secret
def signature(secret: str, body: bytes, at: int) -> str:
    digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def queue(
    webhook: Webhook, event: str, payload: Mapping[str, object], alert_id: int | None = None
) -> Delivery:
    """A delivery row, sent to a worker once the caller's transaction commits."""
    delivery = Delivery.objects.create(
        webhook=webhook, alert_id=alert_id, event=event, payload=dict(payload), next_attempt_at=timezone.now()
    )
    # The delivery's own id goes in the body too: receivers dedupe by it.
    Delivery.objects.filter(pk=delivery.pk).update(payload={**payload, "delivery": delivery.pk})
    transaction.on_commit(lambda: jobs.send(TASK, delivery.pk))
    return delivery


def backoff(attempt: int) -> float:
    return float(settings.ALERT_WEBHOOK_BACKOFF * 2 ** max(0, attempt - 1))


def claim(pk: int) -> bool:
    now = timezone.now()
    return bool(
        Delivery.objects.filter(pk=pk, status=Delivery.Status.PENDING, next_attempt_at__lte=now).update(
            next_attempt_at=now + timedelta(seconds=CLAIM_SECONDS), attempts=F("attempts") + 1
        )
    )


def deliver(pk: int) -> None:
    """One attempt, if the delivery is due and nobody else holds it."""
    if not claim(pk):
        return
    delivery = Delivery.objects.select_related("webhook").get(pk=pk)
    status, error = post(delivery.webhook, delivery.event, delivery.pk, delivery.payload)
    now = timezone.now()
    if status is not None and 200 <= status < 300:
        Delivery.objects.filter(pk=pk).update(
            status=Delivery.Status.DELIVERED, response_status=status, error="", delivered_at=now
        )
        return
    error = error or f"answered HTTP {status}"
    if delivery.attempts >= settings.ALERT_WEBHOOK_ATTEMPTS:
        Delivery.objects.filter(pk=pk).update(
            status=Delivery.Status.FAILED,
            response_status=status,
            error=f"gave up after {delivery.attempts} attempts; last: {error}"[:500],
        )
        log.warning("webhook delivery %s to %s failed for good: %s", pk, delivery.webhook, error)
        return
    wait = backoff(delivery.attempts)
    Delivery.objects.filter(pk=pk).update(
        response_status=status, error=error[:500], next_attempt_at=now + timedelta(seconds=wait)
    )
    try:
        current_app.send_task(TASK, args=(pk,), countdown=wait)
    except Exception as exc:  # the periodic evaluation sends it when it is due
        log.warning("delivery %s: could not schedule the next attempt: %s", pk, exc)


def resend_due() -> int:
    """Pending deliveries whose time has come (a task lost, a worker killed): sent again."""
    due = list(
        Delivery.objects.filter(status=Delivery.Status.PENDING, next_attempt_at__lte=timezone.now())
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:500]
    )
    for pk in due:
        jobs.send(TASK, pk)
    return len(due)


def post(
    webhook: Webhook, event: str, delivery_id: int, payload: dict[str, object]
) -> tuple[int | None, str]:
    """POST the payload, signed, to the checked address: (HTTP status or None, error)."""
    if not webhook.active:
        return None, "the webhook is switched off"
    try:
        target = urlcheck.check(webhook.url)
    except ValidationError as exc:
        return None, " ".join(exc.messages)
    body = json.dumps({**payload, "delivery": delivery_id}, sort_keys=True).encode()
    try:
        signed = signature(webhook.secret_opened(), body, int(time.time()))
    except SecretUnreadable as exc:  # kept on the row, tried again (a key put back) until it gives up
        return None, str(exc)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Slipway-Webhook",
        "X-Slipway-Event": event,
        "X-Slipway-Delivery": str(delivery_id),
        "X-Slipway-Signature": signed,
    }
    path = target.url.path or "/"
    if target.url.query:
        path += "?" + target.url.query
    conn = _connection(target)
    try:
        conn.request("POST", path, body=body, headers={**headers, "Host": target.url.netloc})
        response = conn.getresponse()
        response.read(64 * 1024)
        return response.status, ""
    except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500]
    finally:
        conn.close()


def _connection(target: urlcheck.Target) -> http.client.HTTPConnection:
    """A connection to the address that was checked (not a fresh lookup of the name), with the
    name kept for TLS (SNI and certificate) and the Host header."""
    timeout = settings.ALERT_WEBHOOK_TIMEOUT
    address = str(target.address)
    if target.url.scheme == "https":
        context = ssl.create_default_context()
        conn = http.client.HTTPSConnection(target.host, target.port, timeout=timeout, context=context)

        def connect() -> None:
            sock = socket.create_connection((address, target.port), timeout)
            conn.sock = context.wrap_socket(sock, server_hostname=target.host)

        conn.connect = connect  # type: ignore[method-assign]
        return conn
    return http.client.HTTPConnection(address, target.port, timeout=timeout)
