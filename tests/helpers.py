"""Waiting and process helpers shared by the tests: one way to wait for a condition, for an
operation to end, to run a Celery worker that a test may kill, and the event watcher."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, TypeVar

from django.conf import settings

from apps.accounts import tokens
from apps.instances import executor
from apps.instances.models import Instance, Operation
from portal.celery import app as celery_app
from tests.conftest import SHARED_WORKERS

if TYPE_CHECKING:
    from apps.hosts.models import Host
    from apps.lab.fleet import LabHost

T = TypeVar("T")

# Apps for the event and alert tests. EATER waits for a file in its persistent directory, then eats memory
# until the kernel kills it (awk doubling a string: 32 MiB within milliseconds); Docker restarts
# it, and it waits again. CRASHER dies half a second after each start.
EATER = (
    "echo waiting; while [ ! -e /srv/data/eat ]; do sleep 0.1; done; rm /srv/data/eat; "
    "echo eating memory; exec awk 'BEGIN { s = \"x\"; while (1) s = s s }'"
)
CRASHER = "echo starting; sleep 0.5; echo giving up >&2; exit 3"


def archive(files: dict[str, bytes]) -> io.BytesIO:
    """A gzipped tar of the files (name: content), as an app's release is uploaded."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    buffer.seek(0)
    buffer.name = "release.tar.gz"
    return buffer


def api_client(user: Any) -> Any:
    """A REST framework client signed in as the user."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    return client


_token_names = itertools.count(1)


def api_token(user: Any, scope: str = "write", days: int = 30) -> str:
    """The key of a new API token of the user (a name of its own each time)."""
    created = tokens.api_token_create(
        user=user, name=f"test {next(_token_names)}", scope=scope, expires_at=tokens.expires_after(days)
    )
    return created.key


def eventually(check: Callable[[], T | None], seconds: float, what: str, every: float = 0.1) -> T:
    """The first truthy value of `check()` within `seconds`, else an AssertionError saying what
    did not happen."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds:g} s: {what}")
        time.sleep(every)


def finished(op: Operation, seconds: float = 120) -> Operation:
    """The operation once it ended (run by whichever worker has it)."""
    eventually(
        lambda: Operation.objects.filter(pk=op.pk, status__in=Operation.TERMINAL).exists(),
        seconds,
        f"{op} to end",
        every=0.2,
    )
    op.refresh_from_db()
    return op


def run_op(op: Operation, seconds: float = 120) -> Operation:
    """Run the operation in this process (if no worker claimed it first) and wait for its end."""
    executor.run_operation(op.pk)
    return finished(op, seconds)


class KillableWorker:
    """A real Celery worker in a process group of its own, so all of it can be SIGKILLed."""

    def __init__(self, broker: str, database_url: str, beat: bool = False, **env: str) -> None:
        if any(p.poll() is None for p in SHARED_WORKERS):
            raise RuntimeError(
                "this module's shared `worker` runs and would take this test's tasks: "
                "use `own_worker` (tests/docker/conftest.py) in this module instead"
            )
        if broker == celery_app.conf.broker_url:
            # Tasks earlier tests queued name rows of their own (flushed) databases.
            with contextlib.suppress(Exception):
                celery_app.control.purge()
        argv = [sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool", "prefork"]
        argv += ["--concurrency", "2", "--without-mingle", "--without-gossip", "--loglevel", "INFO"]
        if beat:
            argv += ["--beat", "--schedule", str(settings.VAR_DIR / "test-faults-beat")]
        self.log = open(settings.VAR_DIR / "test-faults-worker.log", "ab")  # noqa: SIM115 - closed in stop
        self.proc = subprocess.Popen(
            argv,
            cwd=settings.BASE_DIR,
            env=dict(os.environ, DATABASE_URL=database_url, CELERY_BROKER_URL=broker, **env),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


def end(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if it has not ended 15 s later."""
    end_all([proc])


def end_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to all at once (their shutdowns overlap), then SIGKILL to any that has not ended
    15 s later."""
    running = [proc for proc in procs if proc.poll() is None]
    for proc in running:
        proc.terminate()
    deadline = time.monotonic() + 15
    for proc in running:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            # A program that ignores SIGTERM would hold systemd's stop just as long: worth seeing.
            warnings.warn(f"{proc.args!r} did not end within 15 s of SIGTERM", stacklevel=2)


class EventWatcher:
    """`manage.py watch_events` as `make up` runs it (on the test database and broker), started
    and waited for until it holds every host in `hosts`."""

    def __init__(self, database_url: str, broker: str, hosts: list[Host]) -> None:
        from apps.events.watcher import Leases

        self.log = open(settings.VAR_DIR / "test-watcher.log", "ab")  # noqa: SIM115 - closed in stop
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "watch_events"],
            cwd=settings.BASE_DIR,
            env=dict(os.environ, DATABASE_URL=database_url, CELERY_BROKER_URL=broker),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        leases = Leases(broker)
        try:
            eventually(
                lambda: all(f":{self.proc.pid}:" in leases.holder(h.pk) for h in hosts) or None,
                30,
                "the event watcher holding every host (see var/test-watcher.log)",
            )
        except BaseException:  # not up in time, or Redis down: never leave the process behind
            self.stop()
            raise

    def stop(self) -> None:
        end(self.proc)
        self.log.close()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """A real HTTP server that records what is POSTed to it (a company's load balancer or
    alerting bridge, in the tests). `answers` are the status codes to give, in order; the last
    one is given from then on."""

    def __init__(self, address: str, answers: tuple[int, ...] = (200,)) -> None:
        self.received: list[Received] = []
        self.answers = list(answers)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver.answers.pop(0) if len(receiver.answers) > 1 else receiver.answers[0]
                receiver.received.append(Received(self.path, dict(self.headers.items()), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((address, 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://{address}:{self.server.server_address[1]}/hook"

    def events(self, name: str) -> list[Received]:
        """What was POSTed as the event `name` and taken (answered 2xx)."""
        return [r for r in self.received if r.headers.get("X-Slipway-Event") == name and r.status < 300]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def serve_asgi(database_url: str, broker: str, **env: str) -> Iterator[str]:
    """The portal under daphne on a free port of 127.0.0.1 and the given database (with `env`
    on top of this process's environment); yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = dict(os.environ, DATABASE_URL=database_url, CELERY_BROKER_URL=broker, **env)
    environment.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # the server keeps Django's async safety checks
    log = open(settings.VAR_DIR / "test-daphne.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "portal.asgi:application"],
        cwd=settings.BASE_DIR,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"daphne exited with {proc.returncode}; see var/test-daphne.log")
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2):  # noqa: S310 - our own http URL
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("daphne did not answer within 30 s; see var/test-daphne.log") from None
                time.sleep(0.2)
        yield base
    finally:
        end(proc)
        log.close()


@contextlib.contextmanager
def frozen(lab_host: LabHost) -> Iterator[None]:
    """The host's dockerd held still (SIGSTOP): calls to it wait, as on a host that hangs."""
    pid = int(lab_host.docker_pidfile.read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def plain_dockerd(lab_host: LabHost) -> Iterator[LabHost]:
    """The host's dockerd as a fresh Debian install has it: no daemon.json settings (so no log
    rotation, no live-restore), before and after (restarted through the host's stand-in for
    systemctl if a test left settings)."""

    def plain() -> None:
        if lab_host.docker_config.read_text().strip() != "{}":
            lab_host.docker_config.write_text("{}\n")
            subprocess.run(
                [str(lab_host.service_ctl), "restart", "docker"], check=True, capture_output=True, timeout=120
            )
        lab_host.docker_config.with_name("daemon.json.slipway-backup").unlink(missing_ok=True)

    plain()
    try:
        yield lab_host
    finally:
        plain()


def app_prints(lab: list[LabHost], instance: Instance, script: str) -> None:
    """Runs the shell `script` in the instance with its output going where the app's own goes:
    the container's init (PID 1) holds the stdout and stderr Docker logs."""
    from apps.lab import fleet

    lab_host = next(h for h in lab if h.name == instance.host.name)
    redirected = f"{{ {script}; }} >/proc/1/fd/1 2>/proc/1/fd/2"
    fleet.docker(lab_host, "exec", instance.container_name, "sh", "-c", redirected)
