"""Exactly one beat: Celery beat's scheduler behind a lock with an expiry in Redis.

Every periodic task (probes, the reconcile, sweeps, alert passes) must be sent by one beat only.
A second `celery beat` started by mistake (a unit enabled on two machines, `make up` beside a
production install on one Redis) would send each of them twice. So the scheduler sends only
while it holds `slipway:beat:lock` in the broker's Redis database: taken with `SET NX PX`,
renewed every BEAT_LOCK_TTL / 3 seconds while held, deleted when beat stops. Another beat logs
which beat (host and pid) holds it and sends nothing; when the holder dies without letting go,
the lock expires and the other takes over within BEAT_LOCK_TTL and one retry.

Wired as CELERY_BEAT_SCHEDULER in settings, so every `celery beat` (make up, the systemd unit)
and every worker started with `--beat` uses it."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from typing import Any

import redis
from celery.beat import PersistentScheduler
from django.conf import settings

from portal import leases

log = logging.getLogger(__name__)

LOCK_KEY = "slipway:beat:lock"


def describe(holder: str) -> str:
    """`host:pid:token` as a person reads it."""
    host, _, rest = holder.rpartition(":")[0].rpartition(":")
    return f"host {host}, pid {rest}" if host and rest else repr(holder)


class BeatLock:
    """The lock in Redis. Every call is one round trip; a Redis error propagates."""

    def __init__(self, url: str, ttl: float) -> None:
        self.redis = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        self.ttl_ms = int(ttl * 1000)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._hold = self.redis.register_script(leases.HOLD)
        self._release = self.redis.register_script(leases.RELEASE)

    def hold(self) -> bool:
        return bool(self._hold(keys=[LOCK_KEY], args=[self.owner, self.ttl_ms]))

    def release(self) -> None:
        self._release(keys=[LOCK_KEY], args=[self.owner])

    def holder(self) -> str:
        value = self.redis.get(LOCK_KEY)
        return value.decode() if isinstance(value, bytes) else ""


class SingleBeatScheduler(PersistentScheduler):
    """Celery's own scheduler (its schedule file included), sending only while it holds the lock."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        ttl = settings.BEAT_LOCK_TTL
        self.lock = BeatLock(settings.CELERY_BROKER_URL, ttl)
        # Renewed three times per expiry: two renewals may fail (a slow Redis) before it lapses.
        self.renew_every = ttl / 3
        self.held = False
        self._waiting_for = ""  # the holder last logged, so a waiting beat says it once per holder
        self._renewed_at = 0.0
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self._hold():
            return self.renew_every
        # Beat sleeps what tick returns: never past the next renewal.
        return min(super().tick(*args, **kwargs), self.renew_every)

    def _hold(self) -> bool:
        now = time.monotonic()
        if self.held and now - self._renewed_at < self.renew_every / 2:
            return True  # renewed moments ago: no round trip per due task
        try:
            held = self.lock.hold()
            holder = "" if held else self.lock.holder()
        except redis.RedisError as exc:
            # Nothing can be sent without Redis either; the lock may lapse meanwhile.
            if self.held:
                log.warning("beat: cannot renew the beat lock (%s); sending nothing until Redis answers", exc)
            self.held = False
            return False
        if held:
            self._renewed_at = now
            if not self.held:
                log.info(
                    "beat: holds the beat lock (%s); this beat sends the periodic tasks",
                    describe(self.lock.owner),
                )
                self._waiting_for = ""
                # Entries come due from the schedule file: what fell due while waiting goes now.
                self._heap = None
            self.held = True
            return True
        if self.held:
            log.warning("beat: lost the beat lock to another beat (%s); sending nothing", describe(holder))
        elif holder != self._waiting_for:
            log.warning(
                "beat: another beat holds the beat lock (%s); this one (%s) sends nothing and takes over "
                "if that one stops or its lock expires (BEAT_LOCK_TTL=%g s)",
                describe(holder),
                describe(self.lock.owner),
                settings.BEAT_LOCK_TTL,
            )
        self._waiting_for = holder
        self.held = False
        return False

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.held:
                try:
                    self.lock.release()
                    log.info("beat: released the beat lock")
                except redis.RedisError as exc:
                    log.warning("beat: could not release the beat lock (%s); it expires by itself", exc)
                self.held = False
