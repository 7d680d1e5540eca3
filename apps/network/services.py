"""Addresses for instance slots: allocate (sticky), request a specific one, hold, move, release.

Every change to an address goes through here and is one audit row in the change's transaction:
`address.allocate` (a slot's next free one), `address.reserve` (a person asked for it),
`address.hold` (in use outside Slipway, or kept for a VM's move), `address.move` (from a VM's
hold to an app's slot, or back) and `address.release`. Who and from where come from the caller
(`user`) and the audit context: a person on a page, the API, the CLI or the admin; the portal in
a worker; the reconcile."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction

from apps.accounts import permissions
from apps.audit import services as audit
from apps.audit.models import AuditEntry
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


def _owner(app: App | None, slot: int | None) -> str:
    return f"slot {slot} of {app.slug}" if app is not None else "a hold"


def _entry(
    action: str,
    allocation: IPAllocation,
    summary: str,
    *,
    user: Any = None,
    app: App | None = None,
    slot: int | None = None,
    why: str = "",
    **data: Any,
) -> AuditEntry:
    """The audit row of one address's change (not saved: the caller saves it, or several at once).
    The address is the object; the app's team, if an app has it or had it, is the row's team."""
    if app is None and allocation.app_id is not None:
        app, slot = allocation.app, allocation.slot
    return audit.entry(
        action,
        summary + (f": {why}" if why else ""),
        actor=user,
        object_type="address",
        object_id=allocation.pk,
        object_repr=allocation.address,
        team=app.team if app is not None else None,
        data={
            "pool": allocation.pool.name,
            **({"app": app.slug, "slot": slot} if app is not None else {}),
            **data,
        },
    )


def _create(
    pool: IPPool, address: str, app: App, slot: int, *, requested: bool, user: Any, action: str
) -> IPAllocation:
    # The savepoint keeps the caller's transaction usable when the constraint says no; the row
    # and its audit row are written together.
    with transaction.atomic():
        allocation = IPAllocation.objects.create(
            pool=pool, address=address, app=app, slot=slot, requested=requested
        )
        verb = "reserve" if requested else "allocate"
        _entry(action, allocation, f"{verb} {address} for {_owner(app, slot)}", user=user).save(
            force_insert=True
        )
        return allocation


def address_allocate(*, app: App, slot: int, user: Any = None) -> IPAllocation | None:
    """The slot's address: the one it already holds, else the pool's lowest free one (a row)."""
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
            return _create(
                pool, str(candidate), app, slot, requested=False, user=user, action="address.allocate"
            )
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
        return _create(pool, normalized, app, slot, requested=True, user=user, action="address.reserve")
    except IntegrityError:
        raise ValidationError({"address": f"{normalized} is already allocated."}) from None


def _release(rows: list[IPAllocation], user: Any, why: str) -> list[str]:
    """Free apps' addresses: one audit row each, written in one statement."""
    if not rows:
        return []
    audit.record_many(
        _entry("address.release", a, f"release {a.address} of {_owner(a.app, a.slot)}", user=user, why=why)
        for a in rows
    )
    IPAllocation.objects.filter(pk__in=[a.pk for a in rows]).delete()
    return [a.address for a in rows]


@transaction.atomic
def address_release(*, app: App, slot: int | None = None, user: Any = None, why: str = "") -> list[str]:
    """Free the slot's address (every address of the app when `slot` is None): its container is
    gone, or the app is. The addresses freed."""
    found = IPAllocation.objects.filter(app=app).select_related("pool", "app__team")
    if slot is not None:
        found = found.filter(slot=slot)
    return _release(list(found), user, why)


@transaction.atomic
def address_release_foreign(
    *, allocations: Iterable[IPAllocation], user: Any = None, why: str = ""
) -> list[str]:
    """Let go of addresses held for something outside Slipway (found in use, or kept for a VM's
    move). Only holds: an app's address goes with its slot. The addresses freed."""
    rows = list(
        IPAllocation.objects.select_for_update(of=("self",))
        .filter(pk__in=[a.pk for a in allocations], app=None)
        .select_related("pool")
    )
    if not rows:
        return []
    audit.record_many(
        _entry(
            "address.release",
            a,
            f"release {a.address}, held for {a.held_by or 'something outside Slipway'}",
            user=user,
            why=why,
            held_by=a.held_by,
        )
        for a in rows
    )
    IPAllocation.objects.filter(pk__in=[a.pk for a in rows]).delete()
    return [a.address for a in rows]


def address_hold_foreign(*, pool: IPPool, address: str, held_by: str) -> IPAllocation | None:
    """Keep an address found in use outside Slipway from being handed out. None if an app holds
    it (a conflict for ops to look at, never silently taken away from the app). A new hold is an
    audit row; a new word on who holds one held already is not (it changes from look to look)."""
    held_by = held_by[:200]
    row = IPAllocation.objects.filter(pool=pool, address=address).first()
    if row is None:
        try:
            with transaction.atomic():  # the hold and its row together
                row = IPAllocation.objects.create(pool=pool, address=address, held_by=held_by)
                _entry(
                    "address.hold",
                    row,
                    f"hold {address}, in use outside Slipway ({held_by})",
                    held_by=held_by,
                ).save(force_insert=True)
            return row
        except IntegrityError:  # held or allocated this very moment
            row = IPAllocation.objects.get(pool=pool, address=address)
    if not row.foreign:
        return None
    if row.held_by != held_by:
        IPAllocation.objects.filter(pk=row.pk).update(held_by=held_by)
    return row


def address_hold(
    *, pool: IPPool, address: str, held_by: str, user: Any = None, why: str = ""
) -> IPAllocation:
    """Hold a free address, or take over one held as in use outside Slipway, for `held_by` (a VM
    whose address Slipway will take over). Raises IntegrityError if an app has it, or someone
    took it this very moment: the caller checked before, and says what to do."""
    held_by = held_by[:200]
    with transaction.atomic():
        row = IPAllocation.objects.filter(pool=pool, address=address).first()
        if row is None:
            row = IPAllocation.objects.create(pool=pool, address=address, held_by=held_by)
        elif not IPAllocation.objects.filter(pk=row.pk, app=None).update(held_by=held_by):
            raise IntegrityError(f"{address} is allocated to an app")
        row.pool, row.held_by = pool, held_by
        _entry(
            "address.hold", row, f"hold {address} for {held_by}", user=user, why=why, held_by=held_by
        ).save(force_insert=True)
    return row


@transaction.atomic
def address_move(
    *, allocation: IPAllocation, app: App, slot: int, user: Any = None, why: str = ""
) -> IPAllocation:
    """Give a held address to an app's slot (a VM's address at its cutover); the address the
    slot had until now is released. Done already (a run sent again): nothing changes."""
    before = allocation.held_by
    others = IPAllocation.objects.filter(app=app, slot=slot).exclude(pk=allocation.pk)
    _release(list(others.select_related("pool", "app__team")), user, f"{allocation.address} takes its place")
    if not IPAllocation.objects.filter(pk=allocation.pk, app=None).update(
        app=app, slot=slot, requested=True, held_by="", verified_at=None
    ):
        return allocation
    allocation.app, allocation.slot, allocation.requested, allocation.held_by = app, slot, True, ""
    allocation.verified_at = None
    _entry(
        "address.move",
        allocation,
        f"move {allocation.address} from the hold for {before or 'a VM'} to {_owner(app, slot)}",
        user=user,
        why=why,
        held_by=before,
    ).save(force_insert=True)
    return allocation


@transaction.atomic
def address_unassign(
    *, allocation: IPAllocation, held_by: str, user: Any = None, why: str = "", action: str = "address.move"
) -> IPAllocation:
    """Take an address from its app's slot and hold it for `held_by`: the VM it goes back to at
    a rollback (`address.move`), or something outside Slipway found using it (`address.hold`).
    Held already (a rollback tried again): only who holds it is noted."""
    app = allocation.app if allocation.app_id is not None else None
    slot = allocation.slot
    held_by = held_by[:200]
    moved = IPAllocation.objects.filter(pk=allocation.pk, app__isnull=False).update(
        app=None, slot=None, requested=False, held_by=held_by, verified_at=None
    )
    allocation.app, allocation.slot, allocation.requested, allocation.held_by = None, None, False, held_by
    if not moved:
        IPAllocation.objects.filter(pk=allocation.pk).update(held_by=held_by)
        return allocation
    allocation.verified_at = None
    _entry(
        action,
        allocation,
        f"move {allocation.address} from {_owner(app, slot)} to a hold for {held_by}",
        user=user,
        app=app,
        slot=slot,
        why=why,
        held_by=held_by,
    ).save(force_insert=True)
    return allocation


@transaction.atomic
def address_replace_taken(*, allocation: IPAllocation, held_by: str) -> IPAllocation:
    """The slot's address turned out to be in use by something else before the slot used it:
    hold it as foreign, and give the slot the next free address."""
    assert allocation.app is not None and allocation.slot is not None
    app, slot = allocation.app, allocation.slot
    address_unassign(
        allocation=allocation,
        held_by=held_by,
        why="in use on the network before the slot used it",
        action="address.hold",
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
