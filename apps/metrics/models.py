"""Instance metrics from cgroups: raw counters per sweep, and rollups with rates.

A series is an app's slot, not a container: the history of "web/0" goes on through restarts,
recreates and moves (the container id in each sample tells the counters' lifetimes apart).
Raw samples keep the counters as the kernel reports them; rollups turn them into rates, so a
counter that starts again at zero (a new container) never shows up as a negative or huge spike.
"""

from __future__ import annotations

from django.db import models

from apps.applications.models import App
from apps.hosts.models import Host


class Sample(models.Model):
    """One instance's counters from one sweep (kept METRICS_RAW_RETENTION)."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="+")
    slot = models.PositiveIntegerField()
    host = models.ForeignKey(Host, null=True, on_delete=models.SET_NULL, related_name="+")
    container_id = models.CharField(max_length=64)
    t = models.DateTimeField(help_text="The host's clock at the sweep")
    cpu_limit = models.FloatField(help_text="Cores the instance may use at the time")
    cpu_ns = models.BigIntegerField()
    throttled_ns = models.BigIntegerField(default=0)
    memory_usage = models.BigIntegerField()
    memory_limit = models.BigIntegerField()
    working_set = models.BigIntegerField()
    rss = models.BigIntegerField(default=0)
    cache = models.BigIntegerField(default=0)
    swap = models.BigIntegerField(default=0)
    failcnt = models.BigIntegerField(default=0)
    oom_kills = models.BigIntegerField(default=0)
    pids = models.IntegerField(default=0)
    blk_read = models.BigIntegerField(default=0)
    blk_write = models.BigIntegerField(default=0)
    net_rx = models.BigIntegerField(default=0)
    net_tx = models.BigIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["app", "slot", "t"]), models.Index(fields=["t"])]

    def __str__(self) -> str:
        return f"{self.app_id}/{self.slot} at {self.t:%Y-%m-%d %H:%M:%S}"


class Rollup(models.Model):
    """Rates and levels of one slot over one bucket (a minute or an hour)."""

    MINUTE = 60
    HOUR = 3600

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="+")
    slot = models.PositiveIntegerField()
    host = models.ForeignKey(Host, null=True, on_delete=models.SET_NULL, related_name="+")
    step = models.PositiveIntegerField(help_text="Bucket length in seconds")
    t = models.DateTimeField(help_text="Bucket start")
    samples = models.PositiveIntegerField(help_text="Intervals averaged into the bucket")
    cpu_cores = models.FloatField(help_text="Average cores used")
    cpu_limit = models.FloatField()
    throttled = models.FloatField(default=0, help_text="Share of time throttled (0-1)")
    working_set = models.BigIntegerField(help_text="Average working set, bytes")
    working_set_max = models.BigIntegerField()
    memory_limit = models.BigIntegerField()
    net_rx_bps = models.FloatField(default=0)
    net_tx_bps = models.FloatField(default=0)
    blk_read_bps = models.FloatField(default=0)
    blk_write_bps = models.FloatField(default=0)
    oom_kills = models.PositiveIntegerField(default=0, help_text="OOM kills in the bucket")
    pids_max = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["app", "slot", "step", "t"], name="one_rollup_per_bucket")
        ]
        indexes = [models.Index(fields=["step", "t"]), models.Index(fields=["host", "step", "t"])]

    def __str__(self) -> str:
        return f"{self.app_id}/{self.slot} {self.step}s bucket at {self.t:%Y-%m-%d %H:%M}"


class RollupMark(models.Model):
    """How far each rollup step is done: buckets before `until` are final."""

    step = models.PositiveIntegerField(unique=True)
    until = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.step}s rollups done until {self.until}"
