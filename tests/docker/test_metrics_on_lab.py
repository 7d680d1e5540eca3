"""Metrics from real containers on the lab: sweeps over the agent channel, rates, charts."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth.models import User
from django.test import override_settings

from apps.accounts.models import Team
from apps.applications import services
from apps.applications.models import App, BaseImage
from apps.hosts.models import Host
from apps.instances import executor
from apps.instances.models import Instance, Operation
from apps.lab import fleet
from apps.metrics import services as metrics
from apps.metrics.models import Sample
from apps.metrics.selectors import app_metrics, window
from apps.network.models import IPPool

MiB = 1024 * 1024


@pytest.fixture
def busy(owner: User, alpha: Team, busybox: BaseImage, lab_pool: IPPool, remove_apps: list[str]) -> App:
    remove_apps.append("gauge")
    app = services.app_create(
        user=owner, team=alpha, slug="gauge", base_image=busybox, memory_mb=48, cpus="0.5", instances=2
    )
    op = Operation.objects.get(app=app)
    executor.run_operation(op.pk)
    op.refresh_from_db()
    assert op.status == Operation.Status.SUCCEEDED, op.error
    return app


def test_a_sweep_stores_one_sample_per_instance_with_its_limits(busy: App, lab_hosts: list[Host]) -> None:
    report = metrics.collect_all()
    assert report.failed == {}
    samples = list(Sample.objects.filter(app=busy).order_by("slot"))
    assert [s.slot for s in samples] == [0, 1]
    instances = {i.slot: i for i in Instance.objects.filter(app=busy)}
    for sample in samples:
        assert sample.memory_limit == 48 * MiB
        assert sample.cpu_limit == 0.5
        assert sample.container_id == instances[sample.slot].container_id
        assert sample.host_id == instances[sample.slot].host_id
        assert 0 < sample.working_set <= sample.memory_usage <= 48 * MiB
        assert sample.pids >= 1 and sample.cpu_ns > 0
    for host in Host.objects.filter(pk__in=[s.host_id for s in samples]):
        assert host.metrics_at is not None and host.metrics_error == ""


def test_work_inside_an_instance_shows_as_cpu_and_network_rates(
    busy: App, lab: list[fleet.LabHost], lab_hosts: list[Host]
) -> None:
    instance = Instance.objects.select_related("host").get(app=busy, slot=0)
    lab_host = next(h for h in lab if h.name == instance.host.name)
    metrics.collect_all()
    # About a second of busy loop (the limit is half a core) and some traffic to the bridge.
    fleet.docker(
        lab_host,
        "exec",
        instance.container_name,
        "sh",
        "-c",
        "i=0; while [ $i -lt 150000 ]; do i=$((i+1)); done; ping -c 3 -W 1 10.213.0.1 || true",
    )
    time.sleep(1)
    metrics.collect_all()
    chart = app_metrics(busy, window(range_name="1h"))
    slot0 = next(s for s in chart["series"] if s["slot"] == 0)
    cpu = [v for v in slot0["cpu_pct"] if v is not None]
    rx = [v for v in slot0["net_rx_bps"] if v is not None]
    assert cpu and max(cpu) > 5  # percent of its half core
    assert rx and max(rx) > 0
    assert chart["markers"] and chart["markers"][0]["kind"] == "scale"


@override_settings(METRICS_HOST_TIMEOUT=2.0, SSH_BANNER_TIMEOUT=1.0)
def test_a_hung_host_does_not_cost_the_others_their_samples(
    busy: App, lab_hosts: list[Host], silent_listener: int
) -> None:
    hung = Host.objects.create(
        name="hung",
        address="127.0.0.1",
        ssh_port=silent_listener,
        host_key="ssh-ed25519 AAAA",
        state=Host.State.ACTIVE,
    )
    report = metrics.collect_all()
    assert set(report.failed) == {"hung"}
    assert report.hosts and sum(report.hosts.values()) == 2
    assert Sample.objects.filter(app=busy).count() == 2
    hung.refresh_from_db()
    assert hung.metrics_error and hung.metrics_at is None
