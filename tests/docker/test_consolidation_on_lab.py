"""The consolidation planner on the real lab: two half-empty hosts carry what one could, the
plan says so, and applying it drains the emptier host for real."""

from __future__ import annotations

from django.contrib.auth.models import User

from apps.accounts.models import Team
from apps.applications import services
from apps.applications.models import BaseImage
from apps.fleet import consolidation, planner
from apps.fleet import drain as draining
from apps.fleet.models import Drain
from apps.hosts.models import Host
from apps.instances import executor
from apps.instances.models import Instance, Operation
from apps.lab import fleet
from apps.network.models import IPPool


def test_the_plan_empties_a_host_and_applying_it_drains_that_host(
    owner: User,
    alpha: Team,
    ops: User,
    busybox: BaseImage,
    lab_pool: IPPool,
    lab: list[fleet.LabHost],
    lab_hosts: list[Host],
    remove_apps: list[str],
    transactional_db: None,
) -> None:
    first, second = lab_hosts
    for slug, host in (("packa", first), ("packb", second)):
        remove_apps.append(slug)
        app = services.app_create(
            user=owner, team=alpha, slug=slug, base_image=busybox, memory_mb=32, cpus="0.1"
        )
        op = services.app_scale(user=owner, app=app, instances=1, hosts=[host])
        executor.run_operation(op.pk)
        op.refresh_from_db()
        assert op.status == Operation.Status.SUCCEEDED, op.error
    # Only these two instances count here: the lab's hosts are otherwise empty in this database.
    live = consolidation.live_fleet()
    assert {h.name for h in live.hosts} == {first.name, second.name}
    plan = planner.plan(live.hosts, live.items)
    assert (plan.hosts_before, plan.hosts_after, plan.lower_bound) == (2, 1, 1)
    assert len(plan.emptied) == 1 and len(plan.moves) == 1

    [drain] = consolidation.apply(user=ops, fleet=live, plan=plan)
    emptied = Host.objects.get(pk=plan.emptied[0])
    assert drain.host == emptied and emptied.state == Host.State.DRAINING
    draining.run(drain.pk)
    drain.refresh_from_db()
    assert drain.state == Drain.State.DONE, drain.error
    kept = Host.objects.exclude(pk=emptied.pk).get(pk__in=[first.pk, second.pk])
    running = Instance.objects.filter(app__slug__in=["packa", "packb"])
    assert {(i.host_id, i.state) for i in running} == {(kept.pk, Instance.State.RUNNING)}
    again = consolidation.live_fleet()
    replanned = planner.plan(again.hosts, again.items)
    assert replanned.hosts_before == 1 and not replanned.moves
    draining.host_activate(user=ops, host=emptied)
