"""`manage.py watch_events`: every host's Docker event stream read as it happens, one thread per
host, each event recorded at once (apps.events.services), so a death is on the instance's
timeline within a second or two, not at the next reconcile.

Each host is held by one watcher at a time through a lease in Redis (the broker's database),
so a second watcher started by mistake, or a standby on another machine, waits and takes over
the hosts of one that died once its leases expire. Where a host's stream was read up to is
kept in the database (EventCursor): the next reader goes on from there."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

import redis
from django.conf import settings
from django.db import close_old_connections

from apps.events.models import EventCursor
from apps.events.services import Recorder
from apps.hosts import gateway
from apps.hosts.models import Host
from apps.hosts.transport import HostError
from portal import leases

log = logging.getLogger(__name__)

LEASE_KEY = "slipway:events:host:{}"
HOSTS_EVERY = 10.0  # new hosts are watched within this many seconds
LEASE_RETRY = 5.0


def lease_ttl() -> float:
    # Held through a whole window and a read that waits its longest past it.
    return settings.EVENTS_WINDOW + 2 * settings.DOCKER_TIMEOUT + 10


class Leases:
    def __init__(self, url: str | None = None) -> None:
        self.redis = redis.Redis.from_url(url or settings.CELERY_BROKER_URL)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._hold = self.redis.register_script(leases.HOLD)
        self._release = self.redis.register_script(leases.RELEASE)

    def hold(self, host_id: int) -> bool:
        return bool(self._hold(keys=[LEASE_KEY.format(host_id)], args=[self.owner, int(lease_ttl() * 1000)]))

    def release(self, host_id: int) -> None:
        self._release(keys=[LEASE_KEY.format(host_id)], args=[self.owner])

    def holder(self, host_id: int) -> str:
        value = self.redis.get(LEASE_KEY.format(host_id))
        return value.decode() if isinstance(value, bytes) else ""


def watchable(host: Host) -> bool:
    return bool(host.host_key) and host.state != Host.State.PENDING


class HostWatch(threading.Thread):
    """One host's stream, window after window, until `stop` is set or the host goes."""

    def __init__(self, host_id: int, leases: Leases, stop: threading.Event) -> None:
        super().__init__(name=f"events-{host_id}", daemon=True)
        self.host_id = host_id
        self.leases = leases
        self.stop = stop
        self.recorder: Recorder | None = None
        self.held = False

    def run(self) -> None:
        backoff = 1.0
        try:
            while not self.stop.is_set():
                try:
                    if not self._window():
                        return
                    backoff = 1.0
                except HostError as exc:
                    log.warning("events of host %s: %s; again in %.0f s", self.host_id, exc, backoff)
                    self.stop.wait(backoff)
                    backoff = min(30.0, backoff * 2)
                except Exception:
                    log.exception("events of host %s", self.host_id)
                    self.stop.wait(backoff)
                    backoff = min(30.0, backoff * 2)
                finally:
                    close_old_connections()
        finally:
            if self.held:
                self.leases.release(self.host_id)

    def _window(self) -> bool:
        """Read one window of the host's events; False when the host is gone."""
        if not self.leases.hold(self.host_id):
            if self.held:
                log.warning("events of host %s: another watcher holds it now", self.host_id)
            self.held = False
            self.stop.wait(LEASE_RETRY)
            return True
        if not self.held:
            log.info("events of host %s: watching", self.host_id)
        self.held = True
        host = Host.objects.filter(pk=self.host_id).first()
        if host is None or not watchable(host):
            return False
        if self.recorder is None:
            self.recorder = Recorder(host)
        self.recorder.host = host
        cursor = EventCursor.objects.filter(host=host).values_list("time_ns", flat=True).first()
        since_ns = cursor + 1 if cursor else time.time_ns()
        started = time.monotonic()
        until = time.time() + settings.EVENTS_WINDOW
        for event in gateway.container_events(host, since_ns=since_ns, until=until):
            self.recorder.handle(event)
            _advance(host, event.time_ns)
            if self.stop.is_set():
                return True
        # Docker ended the stream at `until` by its own clock: everything before it was sent.
        _advance(host, int(until * 1e9))
        if time.monotonic() - started < 1:
            self.stop.wait(1)  # a host whose clock runs ahead ends each window at once
        return True


def _advance(host: Host, time_ns: int) -> None:
    updated = EventCursor.objects.filter(host=host, time_ns__lt=time_ns).update(time_ns=time_ns)
    if not updated and not EventCursor.objects.filter(host=host).exists():
        EventCursor.objects.get_or_create(host=host, defaults={"time_ns": time_ns})


def watch(stop: threading.Event, leases: Leases | None = None) -> None:
    """Watch every host that can be reached (keys confirmed) until `stop` is set; hosts added
    later are picked up within HOSTS_EVERY seconds."""
    leases = leases or Leases()
    threads: dict[int, HostWatch] = {}
    while not stop.is_set():
        try:
            for host_id in (
                Host.objects.exclude(host_key="")
                .exclude(state=Host.State.PENDING)
                .values_list("pk", flat=True)
            ):
                thread = threads.get(host_id)
                if thread is None or not thread.is_alive():
                    threads[host_id] = HostWatch(host_id, leases, stop)
                    threads[host_id].start()
        except Exception:
            log.exception("listing hosts")
        finally:
            close_old_connections()
        stop.wait(HOSTS_EVERY)
    for thread in threads.values():
        thread.join(timeout=2)
        if thread.held:  # still in a read: its host is free for the next watcher at once
            leases.release(thread.host_id)
