"""/metrics on database rows alone: its token, and the text Prometheus reads (names, labels,
values, counters as `_total`)."""

from __future__ import annotations

from decimal import Decimal

from django.contrib.auth.models import User
from django.test import Client, override_settings
from django.utils import timezone

from apps.applications.models import App, BaseImage
from apps.hosts.models import Host
from apps.instances.models import Instance
from apps.metrics.models import Sample


def test_the_endpoint_is_off_without_a_token_and_refuses_a_wrong_one(db: None) -> None:
    client = Client()
    assert client.get("/metrics").status_code == 404
    with override_settings(METRICS_TOKEN="t0ken"):
        refused = client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope")
        assert refused.status_code == 401 and refused["WWW-Authenticate"].startswith("Bearer")
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer t0ken").status_code == 200


def test_instances_hosts_and_the_portal_in_prometheus_text(
    owner: User, image: BaseImage, hosts: list[Host]
) -> None:
    app = App.objects.create(slug="shop", team=owner.memberships.get().team, base_image=image, instances=1)
    Instance.objects.create(
        app=app, slot=0, host=hosts[0], memory_mb=64, cpus=Decimal("0.5"), state=Instance.State.RUNNING
    )
    Sample.objects.create(
        app=app,
        slot=0,
        host=hosts[0],
        container_id="c" * 64,
        t=timezone.now(),
        cpu_limit=0.5,
        cpu_ns=2_500_000_000,
        throttled_ns=500_000_000,
        memory_usage=40 << 20,
        memory_limit=64 << 20,
        working_set=30 << 20,
        oom_kills=1,
        pids=3,
    )
    with override_settings(METRICS_TOKEN="t0ken"):
        text = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer t0ken").content.decode()
    labels = 'app="shop",container="slw-shop-0",host="h1",slot="0"'
    for line in [
        f"slipway_instance_up{{{labels}}} 1.0",
        f"slipway_instance_memory_working_set_bytes{{{labels}}} 3.145728e+07",
        f"slipway_instance_memory_limit_bytes{{{labels}}} 6.7108864e+07",
        f"slipway_instance_cpu_limit_cores{{{labels}}} 0.5",
        f"slipway_instance_cpu_seconds_total{{{labels}}} 2.5",
        f"slipway_instance_cpu_throttled_seconds_total{{{labels}}} 0.5",
        f"slipway_instance_oom_kills_total{{{labels}}} 1.0",
        f"slipway_instance_restarts_total{{{labels}}} 0.0",
        'slipway_host_instances{host="h1"} 1.0',
        'slipway_host_reserved_cpus{host="h1"} 0.5',
        'slipway_host_memory_bytes{host="h2"} 1.073741824e+09',
        'slipway_host_up{host="h1"} 1.0',
        "# TYPE slipway_instance_cpu_seconds_total counter",
    ]:
        assert line in text, line
