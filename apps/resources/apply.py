"""Applying an approved resource request live: `docker update` on every instance, then the new
limits read back from each container's cgroup files. Run by the executor as the RESIZE kind of
operation, which this feature registers (apps.resources.apps)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.hosts import gateway
from apps.hosts.models import Host
from apps.hosts.transport import ContainerFailed, HostError, HostUnreachable
from apps.instances import executor
from apps.instances.models import Instance, Operation
from apps.resources.models import ResourceRequest
from apps.resources.services import _event as event


def _resize_one(instance: Instance, memory_mb: int, nano_cpus: int) -> executor.Outcome:
    """docker update for one instance; runs in a pool thread, touches no database."""
    try:
        if instance.container_id:
            gateway.container_update(instance.host, instance.container_name, memory_mb, nano_cpus)
        return executor.Outcome(instance)
    except ContainerFailed as exc:
        return executor.Outcome(instance, error=str(exc))
    except HostError as exc:
        return executor.Outcome(
            instance, error=str(exc), transient=True, unreachable=isinstance(exc, HostUnreachable)
        )


def _read_back(host: Host, instances: list[Instance]) -> dict[str, Any]:
    try:
        return gateway.limits(host, [i.container_name for i in instances])
    except HostError as exc:
        return {i.container_name: {"error": f"cannot read the limits back: {exc}"} for i in instances}


def resize(op: Operation) -> None:
    """Apply an approved resource request live: docker update on every instance not done yet,
    then the limits read back from each container's cgroup files (not Docker's word for it).
    Instances recorded as done are skipped, so a retry, or a run after a killed worker, applies
    only what is left."""
    app = executor.require_app(op)
    request = ResourceRequest.objects.filter(pk=op.params.get("request"), app=app).first()
    if request is None:
        raise executor.OperationFailed("The resource request is gone.")
    if request.state not in (ResourceRequest.State.APPROVED, ResourceRequest.State.PARTIAL):
        raise executor.OperationFailed(
            f"The request is {request.get_state_display().lower()}; nothing to apply."
        )
    memory, cpus = request.memory_mb, Decimal(request.cpus)
    nano = int(cpus * 1_000_000_000)
    live = list(
        app.instance_set.exclude(desired_state=Instance.Desired.REMOVED).select_related("host", "app")
    )
    todo = [i for i in live if (i.memory_mb, Decimal(i.cpus)) != (memory, cpus)]
    results: dict[str, Any] = dict(request.result or {})
    updated: list[Instance] = []
    workers = max(1, min(settings.OPERATION_PARALLELISM, len(todo)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for outcome in pool.map(lambda i: _resize_one(i, memory, nano), todo):
            if outcome.error:
                results[outcome.instance.container_name] = {"ok": False, "error": outcome.error}
            else:
                updated.append(outcome.instance)
    # Running containers are checked in their cgroups; the others have no cgroup to read and
    # take the new limits when they start (the update changed their configuration).
    running = [i for i in updated if i.container_id and i.state == Instance.State.RUNNING]
    by_host: dict[Host, list[Instance]] = {}
    for instance in running:
        by_host.setdefault(instance.host, []).append(instance)
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(by_host)))) as pool:
        read = dict(zip(by_host, pool.map(lambda h: _read_back(h, by_host[h]), by_host), strict=True))
    for instance in updated:
        name = instance.container_name
        figures = read.get(instance.host, {}).get(name) if instance in running else None
        problem = _limits_problem(figures, memory, cpus) if figures is not None else ""
        if problem:
            results[name] = {"ok": False, "error": problem, "read_back": figures}
            continue
        results[name] = {"ok": True, "memory_mb": memory, "cpus": str(cpus), "read_back": figures}
        Instance.objects.filter(pk=instance.pk).update(memory_mb=memory, cpus=cpus, updated_at=timezone.now())
    failed = {name: r["error"] for name, r in results.items() if not r.get("ok")}
    failed = {n: e for n, e in failed.items() if any(i.container_name == n for i in live)}
    now = timezone.now()
    if failed:
        detail = "; ".join(f"{n}: {e}" for n, e in sorted(failed.items()))
        with transaction.atomic():
            ResourceRequest.objects.filter(pk=request.pk).update(
                state=ResourceRequest.State.PARTIAL, result=results
            )
            # The request's history and the audit trail (resize.partially-applied), by the portal.
            event(request, "partially applied", detail=detail)
        raise executor.OperationFailed(
            f"{len(live) - len(failed)} of {len(live)} instance(s) resized; failed: {detail}. Retry applies only these."
        )
    with transaction.atomic():
        ResourceRequest.objects.filter(pk=request.pk).update(
            state=ResourceRequest.State.APPLIED, result=results, applied_at=now
        )
        event(request, "applied", detail=f"{len(live)} instance(s) at {memory} MiB and {cpus} CPU")


def _limits_problem(figures: dict[str, Any], memory_mb: int, cpus: Decimal) -> str:
    """'' if the cgroup files say what was asked, else what they say."""
    if "error" in figures:
        return str(figures["error"])
    want = memory_mb * 1024 * 1024
    if figures.get("memory_bytes") != want:
        return f"its cgroup says memory {figures.get('memory_bytes')} bytes, not {want}"
    quota, period = figures.get("cpu_quota_us"), figures.get("cpu_period_us")
    if not quota or not period or abs(Decimal(quota) / Decimal(period) - cpus) > Decimal("0.005"):
        return f"its cgroup says CPU quota {quota}/{period}, not {cpus} cores"
    return ""
