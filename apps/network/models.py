"""IP pools on the bridged public network, and sticky per-slot allocations.

The database decides who holds an address: a unique constraint on (pool, address) makes two
requests for one address end with exactly one winner, whatever the timing.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

from apps.hosts.models import Host

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_excluded(text: str) -> list[tuple[int, int, int]]:
    """'10.0.0.5, 10.0.0.10-10.0.0.20' (commas or lines) to inclusive (version, first, last) ranges."""
    out: list[tuple[int, int, int]] = []
    for raw in text.replace(",", "\n").splitlines():
        item = raw.strip()
        if not item:
            continue
        first, _, last = item.partition("-")
        try:
            start = ipaddress.ip_address(first.strip())
            end = ipaddress.ip_address(last.strip()) if last else start
        except ValueError:
            raise ValidationError(
                f"Excluded {item!r}: use an address or a range like 10.0.0.10-10.0.0.20."
            ) from None
        if start.version != end.version or int(end) < int(start):
            raise ValidationError(f"Excluded {item!r}: the range must go up, within one IP version.")
        out.append((start.version, int(start), int(end)))
    return out


def _excluded(ip: Address, ranges: list[tuple[int, int, int]]) -> bool:
    return any(version == ip.version and first <= int(ip) <= last for version, first, last in ranges)


# Docker's own network modes, which are not networks a pool bridges onto: "host" would put
# every instance in the host's network namespace, "none" and "container:..." take it away.
RESERVED_NETWORKS = ("host", "none", "bridge", "default")


def validate_docker_network(value: str) -> None:
    if value.lower() in RESERVED_NETWORKS or not re.fullmatch(
        r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", value or ""
    ):
        raise ValidationError(
            f"{value!r} is not a network a pool can use: give the name of a macvlan or bridge network "
            "on the hosts (letters, digits, '_', '.', '-'), not one of Docker's modes "
            f"({', '.join(RESERVED_NETWORKS)}, container:...)."
        )


class IPPool(models.Model):
    name = models.CharField(
        max_length=40,
        unique=True,
        validators=[RegexValidator(r"^[a-z][a-z0-9-]{1,39}$", "Lowercase letters, digits and '-'.")],
    )
    network = models.CharField(max_length=43, help_text="CIDR, e.g. 10.213.0.0/16")
    gateway = models.GenericIPAddressField()
    range_start = models.GenericIPAddressField(help_text="First address handed out")
    range_end = models.GenericIPAddressField(help_text="Last address handed out")
    excluded = models.TextField(
        blank=True, help_text="Addresses or ranges never handed out, comma or line separated"
    )
    hosts = models.ManyToManyField(
        Host, blank=True, related_name="ip_pools", help_text="Hosts that serve this pool"
    )
    docker_network = models.CharField(
        max_length=64,
        default="public",
        validators=[validate_docker_network],
        help_text="The Docker network on each host that bridges onto this pool",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "IP pool"

    def __str__(self) -> str:
        return f"{self.name} ({self.network})"

    @property
    def net(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.network, strict=True)

    def clean(self) -> None:
        try:
            net = self.net
        except ValueError as exc:
            raise ValidationError({"network": f"Not a network in CIDR form ({exc})."}) from None
        errors = {}
        addresses = {}
        for field in ("gateway", "range_start", "range_end"):
            try:
                addresses[field] = ipaddress.ip_address(getattr(self, field))
            except ValueError:
                errors[field] = "Not an IP address."
                continue
            if addresses[field].version != net.version or addresses[field] not in net:
                errors[field] = f"{addresses[field]} is not in {net}."
        if not errors and int(addresses["range_end"]) < int(addresses["range_start"]):
            errors["range_end"] = "The range must end at or after its start."
        try:
            parse_excluded(self.excluded)
        except ValidationError as exc:
            errors["excluded"] = exc.messages[0]
        if errors:
            raise ValidationError(errors)

    def candidates(self) -> Iterator[Address]:
        """Addresses that may be handed out, in order (the range minus reserved and excluded)."""
        net = self.net
        start, end = ipaddress.ip_address(self.range_start), ipaddress.ip_address(self.range_end)
        reserved = {net.network_address, ipaddress.ip_address(self.gateway)}
        if net.version == 4:
            reserved.add(net.broadcast_address)
        excluded = parse_excluded(self.excluded)
        for number in range(int(start), int(end) + 1):
            current = ipaddress.ip_address(number) if net.version == 4 else ipaddress.IPv6Address(number)
            if current not in reserved and not _excluded(current, excluded):
                yield current

    def why_not(self, address: str) -> str:
        """Why this address cannot be handed out by the pool, or '' if it can (allocation aside)."""
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return f"{address!r} is not an IP address."
        net = self.net
        if ip.version != net.version:
            return f"{ip} is IPv{ip.version}; pool {self.name} is IPv{net.version} ({net})."
        if ip not in net:
            return f"{ip} is outside pool {self.name}'s network {net}."
        if ip == net.network_address:
            return f"{ip} is the network address of {net}."
        if net.version == 4 and ip == net.broadcast_address:
            return f"{ip} is the broadcast address of {net}."
        if ip == ipaddress.ip_address(self.gateway):
            return f"{ip} is the gateway of pool {self.name}."
        start, end = ipaddress.ip_address(self.range_start), ipaddress.ip_address(self.range_end)
        if not int(start) <= int(ip) <= int(end):
            return f"{ip} is outside pool {self.name}'s range {start} - {end}."
        if _excluded(ip, parse_excluded(self.excluded)):
            return f"{ip} is excluded from pool {self.name}."
        return ""


class IPAllocation(models.Model):
    """An address held by an app's instance slot. It stays with the slot through stop/start,
    restart, recreate and moves, and goes when the slot is scaled away or the app deleted.

    A row without an app is an address found in use outside Slipway (a container the database
    does not know, or a machine answering ARP): held here so it is never handed out, until the
    reconcile sees it free again or ops release it."""

    pool = models.ForeignKey(IPPool, on_delete=models.PROTECT, related_name="allocations")
    address = models.GenericIPAddressField()
    # A string reference: the core (apps) builds on addresses, not the reverse.
    app = models.ForeignKey(
        "catalog.App", null=True, blank=True, on_delete=models.CASCADE, related_name="addresses"
    )
    slot = models.PositiveIntegerField(null=True, blank=True)
    requested = models.BooleanField(
        default=False, help_text="Asked for by the owner (e.g. a migrated VM's IP)"
    )
    held_by = models.CharField(
        max_length=200, blank=True, help_text="Who uses the address outside Slipway, as last seen"
    )
    verified_at = models.DateTimeField(
        null=True, blank=True, help_text="When the segment was found silent on it, before first use"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pool", "app", "slot"]
        constraints = [
            models.UniqueConstraint(fields=["pool", "address"], name="one_holder_per_address"),
            models.UniqueConstraint(fields=["app", "slot"], name="one_address_per_slot"),
            models.CheckConstraint(
                condition=models.Q(app__isnull=True, slot__isnull=True)
                | models.Q(app__isnull=False, slot__isnull=False),
                name="slot_with_app",
            ),
        ]

    def __str__(self) -> str:
        if self.app_id is None:
            return f"{self.address} (in use outside Slipway: {self.held_by or 'unknown'})"
        return f"{self.address} → {self.app.slug if self.app else '?'}/{self.slot}"

    @property
    def foreign(self) -> bool:
        return self.app_id is None
