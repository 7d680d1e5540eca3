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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone

from apps.hosts import gateway
from apps.hosts.models import Host
from apps.hosts.transport import HostError
from apps.instances.models import Finding, Instance
from apps.network.models import IPAllocation, IPPool
from apps.network.services import address_replace_taken

log = logging.getLogger(__name__)

# A taken address is swapped for the next free one and probed again, at most this often.
PROBE_ROUNDS = 3


@dataclass
class Refusal:
    error: str
    transient: bool  # the host could not be asked: try again later


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


def addresses_verify(instances: list[Instance]) -> dict[int, Refusal]:
    """Probe the addresses these instances are about to use for the first time. Taken ones are
    held as foreign and replaced (instance.address is updated in place). Returns the instances
    that cannot go ahead, by pk."""
    slots = {
        (i.app_id, i.slot): i for i in instances if i.address and i.desired_state != Instance.Desired.REMOVED
    }
    if not slots:
        return {}
    unverified = {
        (a.app_id, a.slot): a
        for a in IPAllocation.objects.filter(
            app_id__in={app for app, _ in slots}, slot__in={slot for _, slot in slots}, verified_at=None
        ).select_related("pool", "app")
    }
    todo = [instance for key, instance in slots.items() if key in unverified]
    refused: dict[int, Refusal] = {}
    for _ in range(PROBE_ROUNDS):
        if not todo:
            break
        by_host: dict[Host, list[Instance]] = defaultdict(list)
        for instance in todo:
            by_host[instance.host].append(instance)
        todo = []
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(by_host)))) as pool:
            answers = pool.map(lambda item: _ask(item[0], item[1], unverified), by_host.items())
            for host, group, result, error in answers:
                for instance in group:
                    allocation = unverified[(instance.app_id, instance.slot)]
                    if error:
                        refused[instance.pk] = Refusal(
                            f"Cannot check that {allocation.address} is free: {error}", transient=True
                        )
                        continue
                    held_by = holder_text(result, allocation.address, host, instance.container_name)
                    if not held_by:
                        IPAllocation.objects.filter(pk=allocation.pk).update(verified_at=timezone.now())
                        continue
                    _report(host, allocation, held_by)
                    if allocation.requested:
                        refused[instance.pk] = Refusal(
                            f"{allocation.address} is in use on the network ({held_by}). Free it there "
                            "first, then restart the instance; or release the address and scale again "
                            "for a new one.",
                            transient=False,
                        )
                        continue
                    replacement = address_replace_taken(allocation=allocation, held_by=held_by)
                    log.warning(
                        "%s: %s is in use (%s); slot %s takes %s instead",
                        instance.app.slug,
                        allocation.address,
                        held_by,
                        instance.slot,
                        replacement.address,
                    )
                    Instance.objects.filter(pk=instance.pk).update(address=replacement.address)
                    instance.address = replacement.address
                    unverified[(instance.app_id, instance.slot)] = replacement
                    todo.append(instance)
    for instance in todo:
        refused[instance.pk] = Refusal(
            f"No free address found for slot {instance.slot}: the last {PROBE_ROUNDS} tried were "
            "all in use on the network; ask ops to look at the pool.",
            transient=False,
        )
    return refused


def _ask(
    host: Host, group: list[Instance], unverified: dict[tuple[Any, Any], IPAllocation]
) -> tuple[Host, list[Instance], dict[str, Any], str]:
    # Runs in a pool thread: no database here.
    allocations = [unverified[(i.app_id, i.slot)] for i in group]
    try:
        return host, group, probe(host, allocations[0].pool, [a.address for a in allocations]), ""
    except HostError as exc:
        return host, group, {}, str(exc)


def _report(host: Host, allocation: IPAllocation, held_by: str) -> None:
    owner = f"{allocation.app.slug}/{allocation.slot}" if allocation.app else "?"
    Finding.open(
        host, Finding.Kind.FOREIGN_ADDRESS, allocation.address, f"{held_by}; it was about to go to {owner}"
    )
