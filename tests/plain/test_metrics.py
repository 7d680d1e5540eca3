"""Metrics storage: counters to rates, resets, rollups, retention, windows and the API.

The counters here are written the way `store()` writes a sweep's document; the sweep itself
runs against real containers in tests/docker/test_metrics_on_lab.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.test import override_settings
from rest_framework.test import APIClient

from apps.applications import services as catalog_services
from apps.applications.models import BaseImage
from apps.hosts.models import Host
from apps.instances.models import Instance, Operation
from apps.metrics import services
from apps.metrics.models import Rollup, RollupMark, Sample
from apps.metrics.selectors import app_metrics, host_metrics, window

T0 = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)
MiB = 1024 * 1024


def _doc(t: datetime, name: str, cid: str = "c1", **figures: int) -> dict[str, Any]:
    base = {
        "id": cid,
        "name": name,
        "cpu_usage_ns": 0,
        "memory_usage": 30 * MiB,
        "memory_limit": 64 * MiB,
        "memory_working_set": 20 * MiB,
        "net_rx_bytes": 0,
        "net_tx_bytes": 0,
        "oom_kills": 0,
    }
    base.update(figures)
    return {"time": t.timestamp(), "containers": [base]}


@pytest.fixture
def running(owner: User, image: BaseImage, hosts: list[Host]) -> Instance:
    app = catalog_services.app_create(
        user=owner,
        team=owner.memberships.get().team,
        slug="web",
        base_image=image,
        instances=1,
        cpus="0.5",
        memory_mb=64,
    )
    Instance.objects.filter(app=app).update(state=Instance.State.RUNNING)
    return Instance.objects.select_related("app", "host").get(app=app)


def test_counters_become_rates_and_a_new_container_makes_no_spike(running: Instance) -> None:
    host, name = running.host, running.container_name
    # 0.25 cores for 20 s, then the container is recreated (counters start again), then 0.5 cores.
    services.store(host, _doc(T0, name, cpu_usage_ns=1_000_000_000, net_rx_bytes=1000))
    services.store(
        host, _doc(T0 + timedelta(seconds=10), name, cpu_usage_ns=3_500_000_000, net_rx_bytes=11_000)
    )
    services.store(
        host, _doc(T0 + timedelta(seconds=20), name, cpu_usage_ns=6_000_000_000, net_rx_bytes=21_000)
    )
    services.store(
        host, _doc(T0 + timedelta(seconds=30), name, cid="c2", cpu_usage_ns=100_000_000, oom_kills=0)
    )
    services.store(
        host, _doc(T0 + timedelta(seconds=40), name, cid="c2", cpu_usage_ns=5_100_000_000, oom_kills=1)
    )
    assert Sample.objects.count() == 5
    rows = Sample.objects.order_by("t").values(*services.SAMPLE_FIELDS)
    series = services.points(rows)[(running.app_id, 0)]
    # Three intervals with rates; the one across the new container has none (no negative spike).
    assert [round(p.cpu_cores, 3) for p in series] == [0.25, 0.25, 0.5]
    assert [p.net_rx_bps for p in series] == [1000.0, 1000.0, 0.0]
    assert [p.oom_kills for p in series] == [0, 0, 1]
    assert all(p.cpu_cores >= 0 for p in series)


def test_a_counter_that_goes_down_in_the_same_container_is_not_a_rate(running: Instance) -> None:
    host, name = running.host, running.container_name
    services.store(host, _doc(T0, name, net_tx_bytes=10_000_000))
    services.store(host, _doc(T0 + timedelta(seconds=10), name, net_tx_bytes=500))  # interface recreated
    services.store(host, _doc(T0 + timedelta(seconds=20), name, net_tx_bytes=1500))
    series = services.points(Sample.objects.order_by("t").values(*services.SAMPLE_FIELDS))[
        (running.app_id, 0)
    ]
    assert [p.net_tx_bps for p in series] == [100.0]


@override_settings(METRICS_INTERVAL=10)
def test_minute_and_hour_rollups_then_retention(running: Instance) -> None:
    host, name = running.host, running.container_name
    # Two hours of sweeps at 10 s, half a core all the time, 2 KB/s in, one OOM kill at 10:30.
    for i in range(0, 721):
        t = T0 + timedelta(seconds=10 * i)
        services.store(
            host,
            _doc(
                t,
                name,
                cpu_usage_ns=i * 5_000_000_000,
                net_rx_bytes=i * 20_000,
                oom_kills=1 if i >= 180 else 0,
            ),
        )
    written = services.rollup(now=T0 + timedelta(hours=2, minutes=1))
    assert written[Rollup.MINUTE] == 120  # every minute from 10:00 to 11:59
    assert written[Rollup.HOUR] == 2
    minute = Rollup.objects.get(step=Rollup.MINUTE, t=T0 + timedelta(minutes=5))
    assert minute.cpu_cores == pytest.approx(0.5) and minute.cpu_limit == 0.5
    assert minute.net_rx_bps == pytest.approx(2000) and minute.samples == 6
    assert minute.working_set == 20 * MiB and minute.memory_limit == 64 * MiB
    hour = Rollup.objects.get(step=Rollup.HOUR, t=T0)
    assert hour.cpu_cores == pytest.approx(0.5) and hour.oom_kills == 1
    # Once more: nothing new, nothing written twice.
    assert services.rollup(now=T0 + timedelta(hours=2, minutes=1)) == {Rollup.MINUTE: 0, Rollup.HOUR: 0}
    assert RollupMark.objects.get(step=Rollup.MINUTE).until == T0 + timedelta(hours=2)

    with override_settings(METRICS_RAW_RETENTION=3600):
        services.expire(T0 + timedelta(hours=2, minutes=30))
    assert not Sample.objects.filter(t__lt=T0 + timedelta(hours=1, minutes=30)).exists()
    assert Sample.objects.exists() and Rollup.objects.filter(step=Rollup.MINUTE).count() == 120


def test_charts_from_raw_and_rollups_with_markers(running: Instance, owner: User) -> None:
    host, name = running.host, running.container_name
    now = T0 + timedelta(hours=2)
    for i in range(0, 721):
        t = T0 + timedelta(seconds=10 * i)
        services.store(host, _doc(t, name, cpu_usage_ns=i * 2_500_000_000, oom_kills=1 if i >= 700 else 0))
    services.rollup(now=now + timedelta(minutes=1))
    Operation.objects.create(
        app=running.app,
        app_slug=running.app.slug,
        instance=running,
        kind=Operation.Kind.RESTART,
        status=Operation.Status.SUCCEEDED,
        requested_by=owner,
        finished_at=T0 + timedelta(minutes=100),
    )

    last_hour = app_metrics(running.app, window(range_name="1h", now=now))
    assert last_hour["source"] == "raw" and last_hour["step"] == 10
    assert len(last_hour["t"]) == 360 and len(last_hour["series"][0]["cpu_pct"]) == 360
    drawn = [v for v in last_hour["series"][0]["cpu_pct"] if v is not None]
    assert len(drawn) >= 350 and all(v == pytest.approx(50.0) for v in drawn)  # 0.25 of 0.5 cores
    kinds = [m["kind"] for m in last_hour["markers"]]
    assert kinds == ["restart", "oom"]
    assert "by owner" in last_hour["markers"][0]["text"]

    day = app_metrics(running.app, window(range_name="24h", now=now))
    assert day["source"] == "1m" and day["step"] == 60 and len(day["t"]) == 1440
    assert sum(v is not None for v in day["total"]["cpu_pct"]) == 120  # the minutes with data

    load = host_metrics(host, window(range_name="1h", now=now))
    used = [v for v in load["used"]["cpu_cores"] if v is not None]
    assert used and all(v == pytest.approx(0.25) for v in used)
    assert {v for v in load["reserved"]["cpu_cores"] if v is not None} == {0.5}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"range_name": "2h"}, "'2h' is not a range; use one of 1h, 24h, 7d, 30d."),
        ({"since": "yesterday"}, "'yesterday' is not a duration"),
        ({"since": "2099-01-01T00:00:00Z"}, "is not in the past"),
        ({"range_name": "1h", "step": "0"}, "The step is at least 1 second."),
        ({"since": "13d", "step": "1m"}, "18720 points is too many; at most 5000"),
    ],
)
def test_bad_windows_are_refused_with_what_is_allowed(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        window(**params)


def test_a_short_step_on_old_data_reads_the_rollups() -> None:
    w = window(since="3d", step="10s", now=T0)
    assert w.step == 60 and w.source == "1m"


def test_metrics_api_for_apps_instances_and_hosts(
    running: Instance, owner: User, outsider: User, ops: User
) -> None:
    services.store(running.host, _doc(T0, running.container_name))
    client = APIClient()
    client.force_authenticate(owner)
    body = client.get(f"/api/v1/apps/{running.app.slug}/metrics/", {"range": "1h"}).json()
    assert set(body) >= {"t", "series", "total", "markers", "step", "source"}
    assert (
        client.get(f"/api/v1/instances/{running.pk}/metrics/", {"since": "2h", "step": "1m"}).json()["step"]
        == 60
    )
    bad = client.get(f"/api/v1/apps/{running.app.slug}/metrics/", {"range": "forever"})
    assert bad.status_code == 400 and "is not a range" in bad.json()["range"][0]
    assert client.get(f"/api/v1/hosts/{running.host.pk}/metrics/").status_code == 403
    client.force_authenticate(outsider)
    assert client.get(f"/api/v1/apps/{running.app.slug}/metrics/").status_code == 404
    client.force_authenticate(ops)
    assert "capacity" in client.get(f"/api/v1/hosts/{running.host.pk}/metrics/").json()
