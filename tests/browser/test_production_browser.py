"""The portal run the production way: Debian's nginx with deploy/nginx/slipway.conf and a
self-signed certificate in front of daphne, two Celery workers and a beat, each started with its
systemd unit's command line (deploy/), on PostgreSQL, with SLIPWAY_HTTPS=1 and the proxy header.
Chromium goes through https: signs in, scales an app (instances appear without a reload), opens
the terminal (a websocket through nginx) and follows a command's output as it is printed. A
client's own X-Forwarded-Proto and X-Forwarded-For are not believed."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from playwright.sync_api import Browser, Page, expect

from apps.accounts.models import ApiToken, Membership, Team
from apps.applications import services
from apps.applications.models import App
from apps.audit.models import AuditEntry, Source
from apps.hosts.models import Host
from apps.instances.models import Instance
from apps.lab import fleet
from apps.lab.register import register_images
from portal.beat import LOCK_KEY
from tests.browser.conftest import login, open_app
from tests.conftest import TEST_BROKER_URL, _database_url
from tests.deploy_support import NGINX, nginx_conf, render_site, self_signed, unit_command
from tests.helpers import api_token, end_all, eventually

SLUG = "prodweb"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Site:
    base: str  # https://127.0.0.1:PORT
    http: str  # http://127.0.0.1:PORT, the redirecting server
    logs: Path


def _answers(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context):  # noqa: S310 - our own URL
            return True
    except (OSError, urllib.error.HTTPError):
        return False


def _insecure() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest.fixture(scope="module")
def site(django_db_setup: None) -> Iterator[Site]:
    """nginx → daphne, 2 workers and a beat on the test database, started once for the module."""
    if connection.vendor != "postgresql":
        pytest.fail(
            "the production test runs on PostgreSQL, the production database: "
            "DATABASE_URL=postgres://slipway:PASSWORD@127.0.0.1:5432/slipway_NAME"
        )
    work = Path(
        tempfile.mkdtemp(prefix="slipway-prod-", dir=settings.VAR_DIR)
    )  # nginx's prefix, its conf, the certificate
    logs = settings.VAR_DIR / "test-production"  # each process's log, kept after the run
    logs.mkdir(exist_ok=True)
    http_port, https_port, web_port = _free_port(), _free_port(), _free_port()
    base = f"https://127.0.0.1:{https_port}"
    env = dict(
        os.environ,
        DATABASE_URL=_database_url(),
        CELERY_BROKER_URL=TEST_BROKER_URL,
        SLIPWAY_HTTPS="1",
        SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        CSRF_TRUSTED_ORIGINS=base,
        SITE_URL=base,
    )
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # the servers keep Django's async safety checks
    # What `manage.py collectstatic` puts in STATIC_ROOT is what nginx serves.
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=settings.BASE_DIR, check=True
    )
    redis.Redis.from_url(TEST_BROKER_URL).delete(LOCK_KEY)  # a beat killed by an earlier run holds nothing

    commands = {
        "web": unit_command("slipway-web.service", **{"-p 8000": f"-p {web_port}"}),
        # Two workers of two processes each (the unit says 4; the CI machine has two cores).
        **{
            f"worker{n}": unit_command(
                "slipway-worker@.service",
                **{"worker%i@%%h": f"worker{n}@%h", "--concurrency 4": "--concurrency 2"},
            )
            for n in (1, 2)
        },
        "beat": unit_command(
            "slipway-beat.service", **{"/var/lib/slipway/celerybeat-schedule": str(work / "beat-schedule")}
        ),
    }
    procs: list[subprocess.Popen[bytes]] = []
    files = []
    try:
        for name, argv in commands.items():
            log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - closed below
            files.append(log)
            procs.append(
                subprocess.Popen(argv, cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
            )
        eventually(lambda: _answers(f"http://127.0.0.1:{web_port}/healthz"), 30, f"daphne to answer ({logs})")

        cert, key = self_signed(work)
        conf_site = work / "slipway.conf"
        conf_site.write_text(
            render_site(
                http_port=http_port,
                https_port=https_port,
                upstream_port=web_port,
                cert=cert,
                key=key,
                static_root=Path(settings.STATIC_ROOT),
            )
        )
        conf = work / "nginx.conf"
        conf.write_text(nginx_conf(work, conf_site))
        log = open(logs / "nginx.log", "wb")  # noqa: SIM115 - closed below
        files.append(log)
        procs.append(
            subprocess.Popen(
                [NGINX, "-c", str(conf), "-p", str(work), "-g", "daemon off;"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        eventually(
            lambda: _answers(f"{base}/healthz", _insecure()),
            30,
            "nginx to answer (see var/test-production/nginx.log)",
        )
        eventually(
            lambda: "holds the beat lock" in (logs / "beat.log").read_text(),
            30,
            f"the beat to take its lock ({logs})",
        )
        yield Site(base, f"http://127.0.0.1:{http_port}", logs)
    finally:
        end_all(procs)
        for file in files:
            file.close()
        shutil.rmtree(work, ignore_errors=True)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


# As a client that trusts the test's certificate and follows no redirect.
CLIENT = urllib.request.build_opener(urllib.request.HTTPSHandler(context=_insecure()), _NoRedirect)


def test_plain_http_is_sent_to_https_and_static_files_come_from_nginx(
    site: Site,
    transactional_db: None,  # pytest-django runs these tests together: the site starts once
) -> None:
    with pytest.raises(urllib.error.HTTPError) as redirect:
        CLIENT.open(f"{site.http}/login/?next=/apps/", timeout=10)
    assert redirect.value.code == 301
    # The site's name on the standard port, as in production (here the name is the address).
    assert redirect.value.headers["Location"] == "https://127.0.0.1/login/?next=/apps/"
    # Probes may use plain http.
    with CLIENT.open(f"{site.http}/healthz", timeout=10) as response:
        assert response.status == 200
    # A static file as collectstatic left it, with nginx's expiry (WhiteNoise would say 60 s).
    with CLIENT.open(f"{site.base}/static/js/exec.js", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == "max-age=3600"
        assert response.read() == (Path(settings.STATIC_ROOT) / "js" / "exec.js").read_bytes()
    # Uploaded archives are never served.
    with pytest.raises(urllib.error.HTTPError) as media:
        CLIENT.open(f"{site.base}/media/releases/x.tar.gz", timeout=10)
    assert media.value.code == 404
    # Over https the portal knows it is https (the proxy's header): HSTS, and no redirect loop.
    with CLIENT.open(f"{site.base}/login/", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Strict-Transport-Security"] == "max-age=3600"
    # A client claiming https on the plain http server is not believed: nginx sets the header.
    request = urllib.request.Request(f"{site.http}/healthz", headers={"X-Forwarded-Proto": "https"})  # noqa: S310
    with CLIENT.open(request, timeout=10) as response:
        assert "Strict-Transport-Security" not in response.headers


def test_a_client_cannot_claim_another_address_through_nginx(site: Site, transactional_db: None) -> None:
    """nginx hands daphne its peer's address alone: a client that sends X-Forwarded-For itself
    is still recorded by the address it came from, in the audit trail and as its token's last
    use (daphne takes the header's first address, so a forged one passed on would be believed)."""
    user = User.objects.create_user("caller", "caller@example.invalid", "pw-caller")
    key = api_token(user)
    made = AuditEntry.objects.filter(action="token.create").count()
    request = urllib.request.Request(  # noqa: S310 - our own URL
        f"{site.base}/api/v1/tokens/",
        data=json.dumps({"name": "through nginx", "scope": "read", "expires_in_days": 7}).encode(),
        headers={
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "X-Forwarded-For": "6.6.6.6",
        },
        method="POST",
    )
    with CLIENT.open(request, timeout=10) as response:
        assert response.status == 201
    entry = AuditEntry.objects.filter(action="token.create").first()  # newest first
    assert entry is not None and AuditEntry.objects.filter(action="token.create").count() == made + 1
    assert "through nginx" in entry.summary and entry.source == Source.API
    assert entry.address == "127.0.0.1"
    used = ApiToken.objects.get(user=user, name__startswith="test ")
    assert used.last_used_from == "127.0.0.1"


@pytest.fixture
def https_page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, ignore_https_errors=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def shop(live_lab_hosts: list[Host]) -> Iterator[App]:
    """An app of one busybox instance, created as a developer would; the workers bring it up."""
    (image,) = register_images(("busybox",), log=lambda _: None)
    team = Team.objects.create(slug="shop", name="Shop team")
    dev = User.objects.create_user("dev", "dev@example.invalid", "pw-dev")
    Membership.objects.create(team=team, user=dev, role=Membership.Role.DEVELOPER)
    app = services.app_create(
        user=dev, team=team, slug=SLUG, base_image=image, memory_mb=32, cpus="0.1", instances=1
    )
    try:
        yield app
    finally:
        for lab_host in fleet.LabConfig.from_settings().all_hosts():
            ids = fleet.docker(
                lab_host, "ps", "-aq", "--filter", f"label=io.slipway.app={SLUG}"
            ).stdout.split()
            if ids:
                fleet.docker(lab_host, "rm", "-f", *ids, check=False)


def test_a_developer_signs_in_scales_opens_a_terminal_and_follows_a_command_through_https(
    site: Site,
    https_page: Page,
    shop: App,
    screenshot,  # type: ignore[no-untyped-def]
) -> None:
    page = https_page
    login(page, site.base, "dev")
    # Over HTTP/2, with cookies only for https.
    assert page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol") == "h2"
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["sessionid"]["secure"] and cookies["sessionid"]["httpOnly"]
    assert cookies["csrftoken"]["secure"]

    open_app(page, SLUG)
    live = page.locator("#live")
    expect(live).to_contain_text("1 of 1 running", timeout=60_000)  # a worker ran the first scale
    page.fill("#id_instances", "2")
    page.get_by_role("button", name="Scale", exact=True).click()
    expect(live).to_contain_text("2 of 2 running", timeout=60_000)
    expect(page.locator("#instances tbody tr")).to_have_count(2)
    screenshot("scaled")

    instance = Instance.objects.select_related("host").get(app=shop, slot=0)
    page.get_by_role("link", name=instance.container_name).click()
    page.get_by_role("link", name="Open a terminal").click()
    expect(page.locator("[data-terminal-status]")).to_contain_text("Connected")
    rows = page.locator(".xterm-rows")
    expect(rows).to_contain_text("/ #")
    page.locator(".xterm").click()
    page.keyboard.type("echo through-nginx-$((6*7))")
    page.keyboard.press("Enter")
    expect(rows).to_contain_text("through-nginx-42")
    screenshot("terminal")

    # A command prints one line, then waits for a file: the line reaches the page while the
    # command still runs, so nothing on the way (nginx) held it back.
    page.go_back()
    expect(page.get_by_role("heading", name=instance.container_name)).to_be_visible()
    page.fill(
        "#exec-argv",
        "sh\n-c\necho first; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo second",
    )
    page.get_by_role("button", name="Run").click()
    output = page.locator("[data-exec-output]")
    expect(output).to_contain_text("first")
    expect(output).to_have_attribute("data-state", "running")
    assert "second" not in output.inner_text()
    lab_host = next(h for h in fleet.LabConfig.from_settings().all_hosts() if h.name == instance.host.name)
    fleet.docker(lab_host, "exec", instance.container_name, "touch", "/tmp/go")
    expect(output).to_have_attribute("data-state", "done")
    expect(output).to_contain_text(re.compile(r"first\s+second"))
    screenshot("streamed")
