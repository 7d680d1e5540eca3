"""What `/metrics` says to Prometheus, read from the database at each scrape (the sweeps already
gathered it; nothing here reaches a host): every instance's latest cgroup counters, each host's
capacity and use, and the portal's own queue, operations, alerts and webhook deliveries.

Counters (`_total`) are Docker's cumulative ones as the last sweep read them: a recreated
container starts them from zero again, which Prometheus's rate() takes as a counter reset."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import redis
from django.conf import settings
from django.db.models import Count
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from apps.alerts.models import Alert, Delivery
from apps.events.models import ContainerEvent
from apps.hosts.models import Host
from apps.instances.models import Instance, Operation
from apps.metrics.models import Sample

# Not "instance": Prometheus gives every series that label itself (the scraped target), and
# would rename ours to exported_instance.
INSTANCE = ["app", "slot", "container", "host"]


class SlipwayCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        yield from self._instances()
        yield from self._hosts()
        yield from self._portal()

    def _instances(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "up": GaugeMetricFamily("slipway_instance_up", "1 when the instance runs", labels=INSTANCE),
            "mem": GaugeMetricFamily(
                "slipway_instance_memory_working_set_bytes",
                "Memory working set (usage minus inactive file cache)",
                labels=INSTANCE,
            ),
            "limit": GaugeMetricFamily(
                "slipway_instance_memory_limit_bytes", "Memory limit", labels=INSTANCE
            ),
            "cpu_limit": GaugeMetricFamily(
                "slipway_instance_cpu_limit_cores", "CPU limit in cores", labels=INSTANCE
            ),
            "pids": GaugeMetricFamily("slipway_instance_pids", "Processes in the instance", labels=INSTANCE),
            "cpu": CounterMetricFamily("slipway_instance_cpu_seconds", "CPU time used", labels=INSTANCE),
            "throttled": CounterMetricFamily(
                "slipway_instance_cpu_throttled_seconds", "Time throttled at the CPU limit", labels=INSTANCE
            ),
            "oom": CounterMetricFamily(
                "slipway_instance_oom_kills", "OOM kills in this container", labels=INSTANCE
            ),
            "restarts": CounterMetricFamily(
                "slipway_instance_restarts",
                "Restarts by Docker after a death, as the hosts reported them",
                labels=INSTANCE,
            ),
        }
        instances = {
            (i.app_id, i.slot): i
            for i in Instance.objects.exclude(desired_state=Instance.Desired.REMOVED).select_related(
                "app", "host"
            )
        }
        since = timezone.now() - timedelta(seconds=3 * settings.METRICS_INTERVAL + 5)
        latest: dict[tuple[int, int], Any] = {}
        for sample in Sample.objects.filter(t__gte=since).order_by("t").values():
            latest[(sample["app_id"], sample["slot"])] = sample  # later samples replace earlier ones
        restarts = defaultdict(
            int,
            {
                (r["app_id"], r["slot"]): r["n"]
                for r in ContainerEvent.objects.filter(kind=ContainerEvent.Kind.RESTARTED)
                .values("app_id", "slot")
                .annotate(n=Count("id"))
            },
        )
        for key, instance in sorted(instances.items()):
            labels = [instance.app.slug, str(instance.slot), instance.container_name, instance.host.name]
            families["up"].add_metric(labels, 1.0 if instance.state == Instance.State.RUNNING else 0.0)
            families["restarts"].add_metric(labels, float(restarts[key]))
            row = latest.get(key)
            if row is None:
                continue
            families["mem"].add_metric(labels, float(row["working_set"]))
            families["limit"].add_metric(labels, float(row["memory_limit"]))
            families["cpu_limit"].add_metric(labels, float(row["cpu_limit"]))
            families["pids"].add_metric(labels, float(row["pids"]))
            families["cpu"].add_metric(labels, row["cpu_ns"] / 1e9)
            families["throttled"].add_metric(labels, row["throttled_ns"] / 1e9)
            families["oom"].add_metric(labels, float(row["oom_kills"]))
        yield from families.values()

    def _hosts(self) -> Iterator[Metric]:
        labels = ["host"]
        up = GaugeMetricFamily("slipway_host_up", "1 when the host answers its probe (active)", labels=labels)
        cpus = GaugeMetricFamily("slipway_host_cpus", "CPUs of the host", labels=labels)
        memory = GaugeMetricFamily("slipway_host_memory_bytes", "Memory of the host", labels=labels)
        reserved_cpus = GaugeMetricFamily(
            "slipway_host_reserved_cpus", "CPU limits of the instances placed on it", labels=labels
        )
        reserved_memory = GaugeMetricFamily(
            "slipway_host_reserved_memory_bytes", "Memory limits of the instances placed on it", labels=labels
        )
        count = GaugeMetricFamily("slipway_host_instances", "Instances placed on the host", labels=labels)
        placed: dict[int, list[Instance]] = defaultdict(list)
        for instance in Instance.objects.exclude(desired_state=Instance.Desired.REMOVED):
            placed[instance.host_id].append(instance)
        for host in Host.objects.order_by("name"):
            mine = placed[host.pk]
            up.add_metric([host.name], 1.0 if host.state == Host.State.ACTIVE else 0.0)
            cpus.add_metric([host.name], float(host.cpus or 0))
            memory.add_metric([host.name], float((host.memory_mb or 0) * 1024 * 1024))
            reserved_cpus.add_metric([host.name], float(sum(i.cpus for i in mine)))
            reserved_memory.add_metric([host.name], float(sum(i.memory_mb for i in mine) * 1024 * 1024))
            count.add_metric([host.name], float(len(mine)))
        yield from (up, cpus, memory, reserved_cpus, reserved_memory, count)

    def _portal(self) -> Iterator[Metric]:
        ops = GaugeMetricFamily(
            "slipway_operations", "Operations by kind and status (all kept)", labels=["kind", "status"]
        )
        for row in (
            Operation.objects.values("kind", "status").annotate(n=Count("id")).order_by("kind", "status")
        ):
            ops.add_metric([row["kind"], row["status"]], float(row["n"]))
        yield ops
        queue = GaugeMetricFamily(
            "slipway_queue_length", "Tasks waiting in the Celery queue", labels=["queue"]
        )
        try:
            length = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2).llen("celery")
            queue.add_metric(["celery"], float(length))
        except redis.RedisError:
            pass  # the broker is down: no sample (Prometheus says the series is absent)
        yield queue
        alerts = GaugeMetricFamily("slipway_alerts_firing", "Alerts firing, by kind", labels=["kind"])
        firing = Alert.objects.filter(state=Alert.State.FIRING).values("kind").annotate(n=Count("id"))
        for kind_row in firing.order_by("kind"):
            alerts.add_metric([kind_row["kind"]], float(kind_row["n"]))
        yield alerts
        deliveries = GaugeMetricFamily(
            "slipway_webhook_deliveries", "Webhook deliveries by status", labels=["status"]
        )
        for sent in Delivery.objects.values("status").annotate(n=Count("id")).order_by("status"):
            deliveries.add_metric([sent["status"]], float(sent["n"]))
        yield deliveries


def exposition() -> bytes:
    """The text format Prometheus scrapes."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SlipwayCollector())
    return generate_latest(registry)
