"""Exactly one beat: two real `celery beat` processes on the real Redis broker, as when a second
beat is started by mistake. Only the one holding the lock sends; the other says which beat holds
it and sends nothing until the holder is SIGKILLed and the lock expires; a beat that stops lets
go of the lock. Counted in the broker's queue and in each beat's log."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings

from portal.beat import LOCK_KEY
from portal.celery import app as celery_app
from tests.conftest import TEST_BROKER_URL
from tests.helpers import end, eventually

SENT = "Sending due task probe hosts"
# The lock expires 2 s after its holder stops renewing it; "probe hosts" is due every 0.3 s;
# everything else the beat schedules waits an hour.
BEAT_ENV = {
    "BEAT_LOCK_TTL": "2",
    "HOST_PROBE_INTERVAL": "0.3",
    **dict.fromkeys(
        ("RECONCILE_INTERVAL", "METRICS_INTERVAL", "METRICS_ROLLUP_INTERVAL", "ALERT_INTERVAL"), "3600"
    ),
}


class Beat:
    """`celery -A portal beat` as scripts/services.sh and the systemd unit run it, with a
    schedule file of its own (as on another machine) and its log in a file."""

    def __init__(self, name: str, directory: Path) -> None:
        self.log_path = directory / f"{name}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", "portal", "beat", "--loglevel", "INFO"),
                *("--schedule", str(directory / f"{name}-schedule")),
            ],
            cwd=settings.BASE_DIR,
            env=dict(os.environ, CELERY_BROKER_URL=TEST_BROKER_URL, **BEAT_ENV),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def says(self, pattern: str) -> re.Match[str] | None:
        return re.search(pattern, self.text())

    def waits_for(self, pattern: str, what: str) -> re.Match[str]:
        """The first match of `pattern` in the log within 30 s; the log's end if it exits first."""

        def check() -> re.Match[str] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"the beat exited with {self.proc.returncode}:\n{self.text()[-3000:]}")
            return self.says(pattern)

        return eventually(check, 30, what)

    def sent(self) -> int:
        return self.text().count(SENT)

    def stop(self) -> None:
        end(self.proc)
        self.log.close()


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    """The test broker's Redis, its queue and the beat lock empty before and after."""
    client = redis.Redis.from_url(TEST_BROKER_URL)
    client.delete(LOCK_KEY)
    celery_app.control.purge()
    yield client
    client.delete(LOCK_KEY)
    celery_app.control.purge()


def test_a_second_beat_sends_nothing_says_who_holds_the_lock_and_takes_over_when_the_holder_dies(
    broker: redis.Redis, tmp_path: Path
) -> None:
    host = socket.gethostname()
    first = Beat("first", tmp_path)
    second: Beat | None = None
    try:
        first.waits_for("holds the beat lock", "the first beat to take the lock")
        assert f"host {host}, pid {first.proc.pid}" in first.text()
        assert broker.get(LOCK_KEY).decode().startswith(f"{host}:{first.proc.pid}:")  # type: ignore[union-attr]

        second = Beat("second", tmp_path)
        waiting = second.waits_for(
            r"another beat holds the beat lock \((host \S+, pid \d+)\)",
            "the second beat to say who holds the lock",
        )
        assert waiting.group(1) == f"host {host}, pid {first.proc.pid}"
        assert f"this one (host {host}, pid {second.proc.pid}) sends nothing" in second.text()
        # While both run, the first sends its due task over and over; the second none.
        eventually(lambda: first.sent() >= 5, 30, "the first beat to send 'probe hosts' five times")
        assert second.sent() == 0, second.text()

        # The holder dies without letting go: its lock lapses and the second one takes over.
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=10)
        sent_by_first = first.sent()
        second.waits_for("holds the beat lock", "the second beat to take over")
        eventually(lambda: second.sent() >= 3, 30, "the second beat to send 'probe hosts'")
        log = second.text()
        assert log.index("beat: holds the beat lock") < log.index(SENT), "it sent before it held the lock"
        assert broker.get(LOCK_KEY).decode().startswith(f"{host}:{second.proc.pid}:")  # type: ignore[union-attr]

        # Stopped the ordinary way, it lets go at once.
        second.stop()
        assert second.proc.returncode == 0, second.text()
        assert "released the beat lock" in second.text()
        assert broker.get(LOCK_KEY) is None
        # Every message in the queue was sent by the beat holding the lock, each said in its log
        # (the first says it just before it sends: killed in between, one said was not sent).
        assert broker.llen("celery") - second.sent() in (sent_by_first, sent_by_first - 1)
    finally:
        if second is not None:
            second.stop()
        first.stop()


def test_a_beat_lock_expiry_out_of_range_stops_the_portal_with_what_is_allowed() -> None:
    for value, message in [("0", "BEAT_LOCK_TTL=0.0: from 1 to 3600 seconds"), ("soon", "expected a number")]:
        result = subprocess.run(
            [sys.executable, "-c", "import portal.settings"],
            cwd=settings.BASE_DIR,
            env=dict(os.environ, BEAT_LOCK_TTL=value),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0
        assert message in result.stderr, result.stderr
