"""Fixtures on the real lab fleet: dockerd and sshd in network namespaces on this machine."""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from django.contrib.auth.models import User

from apps.accounts.models import Team
from apps.applications import services
from apps.applications.models import App, BaseImage
from apps.hosts.models import Host
from apps.instances.models import Instance, Operation
from apps.lab import fleet
from apps.lab.register import prepare_lab_hosts, register_hosts, register_images, register_pool
from apps.network.models import IPPool
from tests.conftest import TEST_BROKER_URL, _database_url
from tests.docker import releases_support
from tests.helpers import EventWatcher, KillableWorker, WebhookReceiver, run_op


@pytest.fixture(scope="session")
def lab() -> list[fleet.LabHost]:
    """The lab fleet, built (or repaired) once per test session. `make test` built it already."""
    return fleet.up(fleet.LabConfig.from_settings(), log=lambda _: None)


@pytest.fixture
def lab_hosts(lab: list[fleet.LabHost], db: None) -> list[Host]:
    """The lab hosts registered in the test database, keys confirmed and probed."""
    hosts = register_hosts(lab, log=lambda _: None)
    assert all(h.state == Host.State.ACTIVE for h in hosts), [(h.name, h.last_error) for h in hosts]
    return hosts


@pytest.fixture
def cleanup_containers(lab: list[fleet.LabHost]) -> Iterator[list[str]]:
    """Names of containers a test creates; removed from every lab host afterwards."""
    names: list[str] = []
    yield names
    for lab_host in lab:
        for name in names:
            fleet.docker(lab_host, "rm", "-f", name, check=False)


@pytest.fixture
def lab_images(lab_hosts: list[Host]) -> dict[str, BaseImage]:
    """The lab's base images in the catalog, with the lab hosts that have them."""
    return {image.name: image for image in register_images(("busybox", "debian-python"), log=lambda _: None)}


@pytest.fixture
def busybox(lab_images: dict[str, BaseImage]) -> BaseImage:
    return lab_images["slipway/busybox"]


@pytest.fixture
def remove_apps(lab: list[fleet.LabHost]) -> Iterator[list[str]]:
    """Slugs of apps a test deploys; their containers are removed from every lab host afterwards."""
    slugs: list[str] = []
    yield slugs
    for lab_host in lab:
        for slug in slugs:
            ids = fleet.docker(
                lab_host, "ps", "-aq", "--filter", f"label=io.slipway.app={slug}"
            ).stdout.split()
            if ids:
                fleet.docker(lab_host, "rm", "-f", *ids, check=False)


@pytest.fixture
def deploy(
    owner: User,
    alpha: Team,
    busybox: BaseImage,
    lab_pool: IPPool,
    lab: list[fleet.LabHost],
    remove_apps: list[str],
) -> Iterator[Callable[..., App]]:
    """Deploys a busybox app with N instances (placement spreads two over both lab hosts); its
    containers and volume directories go afterwards."""
    slugs: list[str] = []

    def clear(slug: str) -> None:
        for lab_host in lab:
            shutil.rmtree(lab_host.volume_root / slug, ignore_errors=True)

    def make(slug: str, instances: int = 2) -> App:
        remove_apps.append(slug)
        slugs.append(slug)
        clear(slug)
        app = services.app_create(
            user=owner, team=alpha, slug=slug, base_image=busybox, memory_mb=32, cpus="0.1"
        )
        op = services.app_scale(user=owner, app=app, instances=instances)
        # Run here, or waited for when a worker of the test claimed it first (it was sent on
        # commit to whichever worker runs).
        op = run_op(op)
        assert op.status == Operation.Status.SUCCEEDED, op.error
        return app

    yield make
    for slug in slugs:
        clear(slug)


@pytest.fixture
def one_instance(
    owner: User, alpha: Team, busybox: BaseImage, remove_apps: list[str]
) -> Callable[[str], Instance]:
    """Makes an app with one running busybox instance (published port, no pool address) and
    gives the instance; its containers go afterwards."""

    def make(slug: str) -> Instance:
        remove_apps.append(slug)
        app = services.app_create(
            user=owner, team=alpha, slug=slug, base_image=busybox, memory_mb=32, cpus="0.1", instances=1
        )
        op = run_op(Operation.objects.get(app=app))  # or waited for, as in deploy() above
        assert op.status == Operation.Status.SUCCEEDED, op.error
        return Instance.objects.select_related("app", "host").get(app=app)

    return make


@pytest.fixture
def lab_pool(lab: list[fleet.LabHost], lab_hosts: list[Host]) -> IPPool:
    """The lab's public pool, served by both lab hosts, which pass their network checks."""
    # A range of the tests' own: the demo's instances (make up) hold addresses from 10.213.1.1 up.
    pool = register_pool(
        lab[0].config, lab_hosts, log=lambda _: None, first="10.213.200.1", last="10.213.239.254"
    )
    hosts = prepare_lab_hosts(lab_hosts, log=lambda _: None)
    assert all(h.checks_ok for h in hosts), [h.checks for h in hosts]
    return pool


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (a hung sshd)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture
def watcher(transactional_db: None, lab_hosts: list[Host]) -> Iterator[EventWatcher]:
    """`manage.py watch_events` as `make up` runs it, holding every lab host's events."""
    process = EventWatcher(_database_url(), TEST_BROKER_URL, lab_hosts)
    yield process
    process.stop()


@pytest.fixture
def receiver(lab: list[fleet.LabHost]) -> Iterator[WebhookReceiver]:
    """A webhook receiver on the portal's address on the lab's segment (a private address,
    allowed without ALERT_WEBHOOK_ALLOW, as a company's internal receiver would be)."""
    server = WebhookReceiver(str(lab[0].config.portal_ip))
    yield server
    server.close()


@pytest.fixture
def app_running(
    owner: User, alpha: Team, busybox: BaseImage, remove_apps: list[str]
) -> Callable[[str, str], Instance]:
    """Makes an app of one busybox instance running `sh -c SCRIPT` (no health check, 32 MiB)
    and gives the instance; its containers go afterwards."""

    def make(slug: str, script: str) -> Instance:
        remove_apps.append(slug)
        app = services.app_create(
            user=owner,
            team=alpha,
            slug=slug,
            base_image=busybox,
            command=["sh", "-c", script],
            memory_mb=32,
            cpus="0.2",
            instances=1,
            health_check="none",
        )
        op = run_op(Operation.objects.get(app=app))  # or waited for, as in deploy() above
        assert op.status == Operation.Status.SUCCEEDED, op.error
        return Instance.objects.select_related("app", "host").get(app=app)

    return make


@pytest.fixture
def own_worker(transactional_db: None) -> Iterator[KillableWorker]:
    """A real Celery worker for this test alone, in modules whose other tests kill workers of
    their own: the module's shared `worker` would take their tasks."""
    process = KillableWorker(TEST_BROKER_URL, _database_url())
    yield process
    process.stop()


@pytest.fixture
def site(
    owner: User,
    alpha: Team,
    busybox: BaseImage,
    lab_pool: IPPool,
    lab: list[fleet.LabHost],
    remove_apps: list[str],
) -> Iterator[Callable[[str, int], App]]:
    """An app whose release 2 (its first upload) serves `A` on N instances, with an HTTP health
    check on that page."""
    made: list[str] = []

    def make(slug: str, instances: int) -> App:
        remove_apps.append(slug)
        made.append(slug)
        for lab_host in lab:
            shutil.rmtree(lab_host.volume_root / slug, ignore_errors=True)
        app = services.app_create(
            user=owner,
            team=alpha,
            slug=slug,
            base_image=busybox,
            memory_mb=32,
            cpus="0.1",
            health_check="http",
            health_path="/index.html",
            health_timeout=5,
        )
        release, op = releases_support.ship(owner, app, {"index.html": b"A\n"})
        assert op is None and release.number == 2  # no instances yet: they start on it
        assert (
            releases_support.run(services.app_scale(user=owner, app=app, instances=instances)).status
            == "succeeded"
        )
        releases_support.all_serve(app, b"A\n")
        return app

    yield make
    for slug in made:
        for lab_host in lab:
            shutil.rmtree(lab_host.volume_root / slug, ignore_errors=True)
