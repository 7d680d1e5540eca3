"""Issue 20's figures, each beside what raw Docker gives on the same host in the same round:

- `log_first_line`: a line written inside the container until it shows in Chromium following the
  instance's log (daphne, the websocket, the page); raw: the same line read from `docker logs -f`
  on the host.
- `oom_to_alert`: the kernel's OOM kill of the app until the alert reaches a webhook receiver
  (the watcher, the alert, the Celery worker's signed POST); raw: the same kill seen in
  `docker events --filter event=oom` on the host.
- `death_to_restart`: the app's processes killed until the portal has recorded that Docker's
  restart policy started it again; raw: the same restart seen in `docker events` on the host.

Each round writes or kills once; the portal and the raw observer watch the same event, timed
from the same moment (before the `docker exec` that causes it)."""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from django.contrib.auth.models import User
from django.utils import timezone

from apps.accounts.models import Membership, Team
from apps.alerts import services as alerts
from apps.alerts.models import Kind, Webhook
from apps.applications import services
from apps.applications.models import BaseImage
from apps.events.models import ContainerEvent
from apps.events.watcher import Leases
from apps.hosts.models import Host
from apps.instances import executor
from apps.instances.models import Instance, Operation
from apps.lab import fleet
from bench.common import figure, wait_for

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
EATER = (
    "echo waiting; while true; do "
    "if [ -e /srv/data/eat ]; then rm /srv/data/eat; echo eating; exec awk 'BEGIN { s = \"x\"; while (1) s = s s }'; fi; "
    "sleep 0.05; done"
)


class Receiver:
    """A webhook receiver on the lab's segment: when each alert arrived."""

    def __init__(self, address: str) -> None:
        self.arrived: list[tuple[float, dict[str, Any]]] = []
        arrived = self.arrived

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                arrived.append((time.perf_counter(), json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((address, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://{address}:{self.server.server_address[1]}/hook"

    def alert(self, kind: str, since: float) -> float | None:
        """When the first `alert.firing` of the kind arrived after `since`."""
        return next(
            (
                t
                for t, body in self.arrived
                if t >= since and body["event"] == "alert.firing" and body["alert"]["kind"] == kind
            ),
            None,
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Follower:
    """A raw `docker <args>` on the host whose output lines are timed as they come."""

    def __init__(self, lab_host: fleet.LabHost, *args: str) -> None:
        argv = [fleet.docker_cli(), "-H", f"unix://{lab_host.docker_socket}", *args]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[tuple[float, str]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.perf_counter(), line))

    def first(self, text: str, after: float) -> float | None:
        return next((t for t, line in self.lines if t >= after and text in line), None)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@contextmanager
def process(argv: list[str], log_name: str) -> Iterator[subprocess.Popen[bytes]]:
    with open(VAR / "log" / log_name, "ab") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def bench_events(
    lab: list[fleet.LabHost], by_name: dict[str, fleet.LabHost], user: User, team: Team, rounds: int
) -> None:
    """Needs the bench's worker running (it sends the webhooks)."""
    image = BaseImage.objects.get(name="slipway/busybox", tag="1")
    app = services.app_create(
        user=user,
        team=team,
        slug="bench-events",
        base_image=image,
        command=["sh", "-c", EATER],
        memory_mb=32,
        cpus="0.2",
        instances=1,
        health_check="none",
    )
    executor.run_operation(Operation.objects.get(app=app).pk)
    instance = Instance.objects.select_related("host").get(app=app)
    lab_host = by_name[instance.host.name]
    name = instance.container_name
    receiver = Receiver(str(lab[0].config.portal_ip))
    Webhook.objects.create(team=team, name="bench", url=receiver.url, topics=["alerts"])
    # A user of the team of its own for the browser: a new password for the bench's user would
    # end the sessions the rest of the bench signs in with.
    viewer = User.objects.create_user("bench-viewer", password="bench-pw")  # noqa: S106 - the bench's own
    Membership.objects.create(team=team, user=viewer, role=Membership.Role.DEVELOPER)
    port = _free_port()
    watcher_argv = [sys.executable, "manage.py", "watch_events"]
    daphne_argv = [
        sys.executable,
        "-m",
        "daphne",
        "-b",
        "127.0.0.1",
        "-p",
        str(port),
        "portal.asgi:application",
    ]
    leases = Leases()
    hosts = list(Host.objects.filter(name__in=[h.name for h in lab]))
    try:
        with process(watcher_argv, "bench-watcher.log") as watcher, process(daphne_argv, "bench-daphne.log"):
            wait_for(
                lambda: all(f":{watcher.pid}:" in leases.holder(h.pk) for h in hosts),
                30,
                "the watcher holding the hosts",
            )
            _log_first_line(port, app.slug, instance, lab_host, rounds)
            _oom_to_alert(instance, lab_host, name, receiver, rounds)
            _death_to_restart(instance, lab_host, name, rounds)
    finally:
        receiver.close()
        fleet.docker(lab_host, "rm", "-f", name, check=False)


def _log_first_line(port: int, slug: str, instance: Instance, lab_host: fleet.LabHost, rounds: int) -> None:
    from playwright.sync_api import sync_playwright

    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(f"{base}/healthz"), 30, "daphne")
    raw = Follower(lab_host, "logs", "-f", "--tail", "0", instance.container_name)
    portal: list[float] = []
    baseline: list[float] = []
    with sync_playwright() as play:
        browser = play.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page()
        page.goto(f"{base}/login/")
        page.fill("input[name=username]", "bench-viewer")
        page.fill("input[name=password]", "bench-pw")
        page.get_by_role("button", name="Sign in").click()
        page.goto(f"{base}/apps/{slug}/instances/{instance.slot}/")
        page.get_by_role("button", name="Follow").click()
        page.wait_for_function(
            "document.querySelector('#logs-follow-status').textContent.includes('Following')"
        )
        for i in range(rounds + 1):
            marker = f"bench-line-{i}-{uuid.uuid4().hex[:8]}"
            started = time.perf_counter()
            fleet.docker(
                lab_host, "exec", instance.container_name, "sh", "-c", f"echo {marker} >/proc/1/fd/1"
            )
            page.wait_for_function(
                f"document.querySelector('#logs-lines').textContent.includes('{marker}')", polling="raf"
            )
            shown = time.perf_counter()
            read = _first(raw, marker, started, "the raw follower's line")
            if i == 0:
                continue  # the first line warms the page and the connection up
            portal.append(shown - started)
            baseline.append(read - started)
        browser.close()
    raw.close()
    figure(
        "log_first_line",
        "ms",
        statistics.median(portal) * 1000,
        statistics.median(baseline) * 1000,
        rounds=rounds,
        note="both include the docker exec that writes the line",
    )


def _oom_to_alert(
    instance: Instance, lab_host: fleet.LabHost, name: str, receiver: Receiver, rounds: int
) -> None:
    raw = Follower(lab_host, "events", "--filter", f"container={name}", "--filter", "event=oom")
    portal: list[float] = []
    baseline: list[float] = []
    key = alerts.Subject.of_instance(Kind.OOM_KILL, instance).key
    try:
        for _ in range(rounds):
            alerts.resolve(key, "the bench's next round")  # so the next kill fires anew
            _waiting(instance, lab_host)
            round_start = timezone.now()
            started = time.perf_counter()
            fleet.docker(lab_host, "exec", name, "touch", "/srv/data/eat")

            said = _until(partial(receiver.alert, "oom_kill", started), 30, "the OOM alert at the receiver")
            seen = _first(raw, "oom", started, "docker events' oom")
            portal.append(said - started)
            baseline.append(seen - started)
            # The death after the kill belongs to this round's alert: recorded before the next
            # round resolves it (it would otherwise fire the next round's alert early).
            wait_for(
                partial(_died_since, instance, round_start),
                30,
                "the death after the OOM kill recorded",
                interval=0.05,
            )
    finally:
        raw.close()
    figure("oom_to_alert", "s", statistics.median(portal), statistics.median(baseline), rounds=rounds)


def _death_to_restart(instance: Instance, lab_host: fleet.LabHost, name: str, rounds: int) -> None:
    raw = Follower(lab_host, "events", "--filter", f"container={name}", "--filter", "event=start")
    portal: list[float] = []
    baseline: list[float] = []
    try:
        for _ in range(rounds):
            # Docker doubles its wait before each restart of a container that keeps dying, and
            # starts again from 100 ms once one has run 10 s: each round starts from there.
            _waiting(instance, lab_host, settle=10.5)
            known = ContainerEvent.objects.filter(instance=instance, kind="restarted").count()
            started = time.perf_counter()
            # Every process but the container's init: the app is gone, init exits, Docker's
            # restart policy starts the container again.
            fleet.docker(lab_host, "exec", name, "kill", "-9", "-1", check=False)
            wait_for(
                lambda k=known: (
                    ContainerEvent.objects.filter(instance=instance, kind="restarted").count() > k
                ),  # type: ignore[misc]
                30,
                "the restart recorded",
                interval=0.01,
            )
            recorded = time.perf_counter()
            seen = _first(raw, "start", started, "docker events' start")
            portal.append(recorded - started)
            baseline.append(seen - started)
    finally:
        raw.close()
    figure("death_to_restart", "s", statistics.median(portal), statistics.median(baseline), rounds=rounds)


def _until(value: Callable[[], float | None], timeout: float, what: str) -> float:
    """The first value that is not None, polled every 5 ms."""
    found: list[float] = []

    def check() -> bool:
        v = value()
        if v is not None:
            found.append(v)
        return v is not None

    wait_for(check, timeout, what)
    return found[0]


def _first(follower: Follower, text: str, since: float, what: str) -> float:
    return _until(lambda: follower.first(text, since), 10, what)


def _died_since(instance: Instance, since: datetime) -> bool:
    return ContainerEvent.objects.filter(
        instance=instance, kind=ContainerEvent.Kind.DIED, time__gte=since
    ).exists()


def _waiting(instance: Instance, lab_host: fleet.LabHost, settle: float = 0.3) -> None:
    """The app is up and waiting for its next round (Docker has restarted it, its loop runs),
    for `settle` seconds."""

    def up() -> bool:
        # Not .State.Running: it is true while Docker waits to restart it ("restarting") too.
        state = fleet.docker(
            lab_host, "inspect", "-f", "{{.State.Status}}", instance.container_name, check=False
        )
        return state.stdout.strip() == "running"

    wait_for(up, 60, "the app running again")
    time.sleep(settle)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own http URL
            return bool(response.status == 200)
    except OSError:
        return False
