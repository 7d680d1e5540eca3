"""Before an address is used for the first time, make sure nothing on the segment has it.

The database knows what Slipway gave out, not what else lives on the network: a VM nobody
registered, a container started by hand, a box configured with a static IP years ago. So the
instance's host asks (hostagent `arp-probe`: its own containers on the pool's Docker network,
then ARP on the wire) and an address that is in use is held as foreign and swapped for the
next free one. An address the owner asked for is never swapped: the instance fails and says
who answers for it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.utils import timezone

from apps.hosts import gateway
from apps.hosts.models import Host
from apps.hosts.transport import AddressInUse, HostError
from apps.instances.models import Finding, Instance
from apps.network.models import IPAllocation, IPPool
from apps.network.services import address_replace_taken

log = logging.getLogger(__name__)

# A taken address is swapped for the next free one and probed again, at most this often.
PROBE_ROUNDS = 3


def probe(host: Host, pool: IPPool, addresses: list[str]) -> dict[str, Any]:
    """Ask the host which addresses are in use: {"local": {addr: container}, "answered": {addr: mac}}."""
    wait = settings.ADDRESS_PROBE_WAIT
    return gateway.agent(
        host, "arp-probe", timeout=10 + wait, network=pool.docker_network, addresses=addresses, wait=wait
    )


def holder_text(result: dict[str, Any], address: str, host: Host, own_container: str = "") -> str:
    """Who holds the address according to a probe result, or '' if nobody (but us)."""
    local = result.get("local", {}).get(address)
    if local and local != own_container:
        return f"container {local} on {host.name}"
    mac = result.get("answered", {}).get(address)
    if mac:
        return f"answers ARP from {mac} (asked from {host.name})"
    return ""


class AddressGate:
    """The probes of one converge round. They start at once, in threads of their own, so they
    run while Docker creates the containers; `check` (called between create and start, in the
    executor's pool threads) waits for the instance's answer. `settle` then writes the result
    in the calling thread: found free, or held as foreign and swapped for another address."""

    def __init__(self, instances: list[Instance]) -> None:
        keys = {
            (i.app_id, i.slot): i
            for i in instances
            if i.address and i.desired_state != Instance.Desired.REMOVED
        }
        self.unverified: dict[tuple[int, int], IPAllocation] = {}
        if keys:
            for allocation in IPAllocation.objects.filter(
                app_id__in={app for app, _ in keys}, slot__in={slot for _, slot in keys}, verified_at=None
            ).select_related("pool", "app"):
                key = (allocation.app_id or 0, allocation.slot or 0)
                if key in keys:
                    self.unverified[key] = allocation
        by_host: dict[Host, list[IPAllocation]] = defaultdict(list)
        self.hosts: dict[tuple[int, int], Host] = {}
        for key, allocation in self.unverified.items():
            host = keys[key].host
            by_host[host].append(allocation)
            self.hosts[key] = host
        self.answers: dict[int, Future[dict[str, Any]]] = {}
        self.passed: set[tuple[int, int]] = set()  # checked and free (added from pool threads)
        if by_host:
            threads = ThreadPoolExecutor(max_workers=min(8, len(by_host)), thread_name_prefix="arp-probe")
            for host, allocations in by_host.items():
                self.answers[host.pk] = threads.submit(
                    probe, host, allocations[0].pool, [a.address for a in allocations]
                )
            threads.shutdown(wait=False)

    def check(self, instance: Instance) -> None:
        """Raise AddressInUse if something else holds the instance's new address, HostError if
        the host could not say. Runs in pool threads: no database here."""
        allocation = self.unverified.get((instance.app_id, instance.slot))
        if allocation is None:
            return
        try:
            result = self.answers[instance.host.pk].result()
        except HostError as exc:
            raise HostError(f"Cannot check that {allocation.address} is free: {exc}") from exc
        held_by = holder_text(result, allocation.address, instance.host, instance.container_name)
        if held_by:
            raise AddressInUse(allocation.address, held_by)
        self.passed.add((instance.app_id, instance.slot))

    def pending(self, instance: Instance) -> bool:
        """The instance's address still has to be checked before its container starts."""
        return (instance.app_id, instance.slot) in self.unverified

    def settle(self, instance: Instance, taken: AddressInUse | None) -> str:
        """Record the check of one instance's address. Returns '' when the instance may go on
        (its address was free, or it has a new one to try), else why it cannot."""
        key = (instance.app_id, instance.slot)
        allocation = self.unverified.get(key)
        if allocation is None:
            return ""
        if taken is None:
            if key in self.passed:  # not if the container failed before its check
                IPAllocation.objects.filter(pk=allocation.pk).update(verified_at=timezone.now())
            return ""
        _report(self.hosts[key], allocation, taken.held_by)
        if allocation.requested:
            return (
                f"{allocation.address} is in use on the network ({taken.held_by}). Free it there first, "
                "then restart the instance; or release the address and scale again for a new one."
            )
        replacement = address_replace_taken(allocation=allocation, held_by=taken.held_by)
        log.warning(
            "%s: %s is in use (%s); slot %s takes %s instead",
            instance.app.slug,
            allocation.address,
            taken.held_by,
            instance.slot,
            replacement.address,
        )
        Instance.objects.filter(pk=instance.pk).update(address=replacement.address)
        instance.address = replacement.address
        return ""


def _report(host: Host, allocation: IPAllocation, held_by: str) -> None:
    owner = f"{allocation.app.slug}/{allocation.slot}" if allocation.app else "?"
    Finding.open(
        host, Finding.Kind.FOREIGN_ADDRESS, allocation.address, f"{held_by}; it was about to go to {owner}"
    )
