"""Addresses for instance slots: allocate (sticky), request a specific one, release."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction

from apps.accounts import permissions
from apps.audit import services as audit
from apps.hosts import gateway
from apps.hosts import services as host_services
from apps.hosts.models import Host, HostEvent
from apps.hosts.transport import HostError
from apps.network.models import IPAllocation, IPPool

if TYPE_CHECKING:  # the core (apps) builds on addresses: no import at run time
    from apps.applications.models import App

# How many addresses to try when others take the ones we picked at the same moment.
ALLOCATION_ATTEMPTS = 20


def default_pool() -> IPPool | None:
    """The pool new apps use when none is chosen: the only one there is, else none."""
    pools = list(IPPool.objects.all()[:2])
    return pools[0] if len(pools) == 1 else None


def _create(pool: IPPool, address: str, app: App, slot: int, requested: bool) -> IPAllocation:
    # The savepoint keeps the caller's transaction usable when the constraint says no.
    with transaction.atomic():
        return IPAllocation.objects.create(
            pool=pool, address=address, app=app, slot=slot, requested=requested
        )


def address_allocate(*, app: App, slot: int) -> IPAllocation | None:
    """The slot's address: the one it already holds, else the pool's lowest free one."""
    if app.ip_pool is None:
        return None
    held = IPAllocation.objects.filter(app=app, slot=slot).first()
    if held is not None:
        return held
    pool = app.ip_pool
    taken = {
        ipaddress.ip_address(a)
        for a in IPAllocation.objects.filter(pool=pool).values_list("address", flat=True)
    }
    attempts = 0
    for candidate in pool.candidates():
        if candidate in taken:
            continue
        try:
            return _create(pool, str(candidate), app, slot, requested=False)
        except IntegrityError:
            # Someone took it between our read and our write; the database said no. Next one.
            taken.add(candidate)
            attempts += 1
            if attempts >= ALLOCATION_ATTEMPTS:
                break
    in_use = IPAllocation.objects.filter(pool=pool).count()
    raise ValidationError(
        f"IP pool {pool.name} has no free address left ({in_use} in use); ask ops to extend it."
    )


def address_request(*, user: Any, app: App, address: str, slot: int | None = None) -> IPAllocation:
    """Reserve a specific free address for a slot (by default the next one a scale-up makes)."""
    if not permissions.is_member(user, app.team_id):
        raise PermissionDenied(f"You are not a member of team {app.team.slug}.")
    pool = app.ip_pool
    if pool is None:
        raise ValidationError({"address": f"{app.slug} has no IP pool, so it cannot hold a static address."})
    reason = pool.why_not(address)
    if reason:
        raise ValidationError({"address": reason})
    normalized = str(ipaddress.ip_address(address.strip()))
    if slot is None:
        used = set(app.addresses.values_list("slot", flat=True)) | set(
            app.instance_set.values_list("slot", flat=True)
        )
        slot = next(n for n in range(len(used) + 1) if n not in used)
    elif slot < 0:
        raise ValidationError({"slot": f"Slots are 0 or more (got {slot})."})
    held = IPAllocation.objects.filter(app=app, slot=slot).first()
    if held is not None:
        if held.address == normalized:
            return held
        raise ValidationError(
            {"slot": f"Slot {slot} of {app.slug} already holds {held.address}; pick a free slot."}
        )
    holder = IPAllocation.objects.filter(pool=pool, address=normalized).first()
    if holder is not None and holder.foreign:
        raise ValidationError(
            {
                "address": f"{normalized} is in use on the network outside Slipway "
                f"({holder.held_by or 'seen by the reconcile'}); once it is free there, the "
                "reconcile releases it (or ops do, in the admin)."
            }
        )
    if holder is not None:
        raise ValidationError({"address": f"{normalized} is already allocated."})
    try:
        allocation = _create(pool, normalized, app, slot, requested=True)
    except IntegrityError:
        raise ValidationError({"address": f"{normalized} is already allocated."}) from None
    audit.record(
        "address.reserve",
        f"reserve {normalized} for slot {slot} of {app.slug}",
        actor=user,
        obj=allocation,
        team=app.team,
    )
    return allocation


def address_release(*, app: App, slot: int) -> None:
    for allocation in IPAllocation.objects.filter(app=app, slot=slot):
        audit.record(
            "address.release",
            f"release {allocation.address} of slot {slot} of {app.slug}",
            obj=allocation,
            team=app.team,
        )
        allocation.delete()


def address_hold_foreign(*, pool: IPPool, address: str, held_by: str) -> IPAllocation | None:
    """Keep an address found in use outside Slipway from being handed out. None if an app holds
    it (a conflict for ops to look at, never silently taken away from the app)."""
    row, created = IPAllocation.objects.get_or_create(
        pool=pool, address=address, defaults={"held_by": held_by[:200]}
    )
    if not row.foreign:
        return None
    if not created and row.held_by != held_by[:200]:
        IPAllocation.objects.filter(pk=row.pk).update(held_by=held_by[:200])
    return row


@transaction.atomic
def address_replace_taken(*, allocation: IPAllocation, held_by: str) -> IPAllocation:
    """The slot's address turned out to be in use by something else before the slot used it:
    hold it as foreign, and give the slot the next free address."""
    assert allocation.app is not None and allocation.slot is not None
    app, slot = allocation.app, allocation.slot
    IPAllocation.objects.filter(pk=allocation.pk).update(
        app=None, slot=None, requested=False, held_by=held_by[:200], verified_at=None
    )
    replacement = address_allocate(app=app, slot=slot)
    assert replacement is not None
    return replacement


def host_networks_fix(*, host: Host, user: Any) -> list[str]:
    """Make, on the host, the bridged Docker network of every pool it serves (ops only), then
    check the host again."""
    permissions.require_ops(user, "create Docker networks on hosts")
    done = host_networks_ensure(host=host, user=user)
    host_services.host_probe(host=host)
    return done


def host_networks_ensure(*, host: Host, user: Any = None) -> list[str]:
    """The bridged Docker network of every pool the host serves, made where missing; what was
    done goes on the host's history. Docker's own IPAM gets the pool's last /24 only. (Callers
    decide who may: ops on the host page, a Prepare ops started, the lab's own set-up.)"""
    done = []
    for pool in IPPool.objects.filter(hosts=host).order_by("name"):
        network = ipaddress.ip_network(pool.network, strict=False)
        last = list(network.subnets(new_prefix=max(network.prefixlen, 24)))[-1]
        try:
            done.append(
                gateway.network_ensure(
                    host,
                    pool.docker_network,
                    subnet=str(network),
                    gateway=str(pool.gateway),
                    ip_range=str(last),
                )
            )
        except HostError as exc:
            HostEvent.objects.create(host=host, user=user, action="networks", detail=f"failed: {exc}")
            raise ValidationError(f"Network {pool.docker_network} for pool {pool.name}: {exc}") from exc
    HostEvent.objects.create(host=host, user=user, action="networks", detail="; ".join(done) or "no pool")
    return done
