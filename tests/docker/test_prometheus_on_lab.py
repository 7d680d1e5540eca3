"""A real Prometheus (Debian's `prometheus`) scrapes the portal's /metrics under daphne with its
token: an instance's memory and CPU limits and use from its cgroups on the lab, the hosts'
capacity and what is placed on them, the portal's operations; without the token it is refused."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from apps.hosts.models import Host
from apps.instances.models import Instance
from apps.metrics import services as metrics
from tests.conftest import TEST_BROKER_URL, _database_url
from tests.helpers import end, eventually, serve_asgi

TOKEN = "prometheus-test-token"


@pytest.fixture
def portal(transactional_db: None) -> Iterator[str]:
    with serve_asgi(_database_url(), TEST_BROKER_URL, METRICS_TOKEN=TOKEN) as base:
        yield base


@pytest.fixture
def prometheus(portal: str, tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    target = portal.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: slipway\n"
        "    metrics_path: /metrics\n"
        f"    authorization: {{credentials: {TOKEN}}}\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = _free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: _ready(base), 30, "Prometheus ready")
        yield base
    finally:
        end(proc)
        log.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as answer:  # noqa: S310 - our own http URL
            return bool(answer.status == 200)
    except OSError:
        return False


def _query(base: str, promql: str) -> list[Any]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - our own http URL
        body = json.load(answer)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def _value(base: str, promql: str) -> float:
    """The first series' value; an AssertionError naming the query when there is none."""
    found = _query(base, promql)
    assert found, f"no series for {promql}"
    return float(found[0]["value"][1])


def test_prometheus_scrapes_instances_hosts_and_the_portal(
    portal: str, prometheus: str, one_instance: Callable[[str], Instance], lab_hosts: list[Host]
) -> None:
    instance = one_instance("scraped")
    metrics.collect_all()  # one sweep of the hosts' cgroups, as beat runs it

    # Without the token, or with another, the endpoint refuses.
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        request = urllib.request.Request(f"{portal}/metrics", headers=headers)  # noqa: S310 - our own http URL
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)  # noqa: S310 - our own http URL
        assert refused.value.code == 401

    labels = f'app="scraped",container="{instance.container_name}",host="{instance.host.name}",slot="0"'

    def scraped() -> list[Any] | None:
        return _query(prometheus, f"slipway_instance_memory_limit_bytes{{{labels}}}") or None

    try:
        eventually(scraped, 30, "Prometheus scraped the instance")
    except AssertionError as exc:
        with urllib.request.urlopen(f"{prometheus}/api/v1/targets", timeout=5) as answer:  # noqa: S310
            targets = [(t["health"], t["lastError"]) for t in json.load(answer)["data"]["activeTargets"]]
        series = [r["metric"] for r in _query(prometheus, '{app="scraped"}')]
        raise AssertionError(f"{exc}; Prometheus's targets: {targets}; series: {series}") from None
    assert _value(prometheus, f"slipway_instance_memory_limit_bytes{{{labels}}}") == 32 * 1024 * 1024
    assert _value(prometheus, 'up{job="slipway"}') == 1
    assert 0 < _value(prometheus, f"slipway_instance_memory_working_set_bytes{{{labels}}}") < 32 * 1024 * 1024
    assert _value(prometheus, f"slipway_instance_cpu_limit_cores{{{labels}}}") == 0.1
    assert _value(prometheus, f"slipway_instance_up{{{labels}}}") == 1
    assert (
        _value(prometheus, f"slipway_instance_cpu_seconds_total{{{labels}}}") > 0
    )  # a counter, named as Prometheus names them
    host = instance.host.name
    assert _value(prometheus, f'slipway_host_cpus{{host="{host}"}}') == instance.host.cpus
    assert _value(prometheus, f'slipway_host_instances{{host="{host}"}}') >= 1
    assert _value(prometheus, 'slipway_operations{kind="scale",status="succeeded"}') >= 1
    assert _value(prometheus, 'slipway_queue_length{queue="celery"}') >= 0  # the broker answered
