"""Whether a webhook URL may be called, asked before it is saved and again before every send
(a name may resolve elsewhere by then): http or https only, no credentials in it, and no
address on this machine, link-local or a cloud metadata service, unless ops allow its network
(ALERT_WEBHOOK_ALLOW). Private networks are allowed: a company's load balancer or service
registry lives there."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Cloud metadata services that are not link-local (AWS IPv6, Alibaba).
METADATA = {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}


@dataclass(frozen=True)
class Target:
    """A checked URL and the address to connect to: the one that was checked."""

    url: SplitResult
    address: IPAddress
    port: int

    @property
    def host(self) -> str:
        return self.url.hostname or ""


def allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(n, strict=False) for n in settings.ALERT_WEBHOOK_ALLOW]


def _why_not(address: IPAddress) -> str:
    if any(address in network for network in allowed_networks()):
        return ""
    if address.is_loopback:
        return "a loopback address (this machine)"
    if address.is_link_local:
        return "a link-local address (cloud metadata services live there)"
    if address in METADATA:
        return "a cloud metadata service"
    if address.is_unspecified or address.is_multicast or address.is_reserved:
        return "not an address a webhook can have"
    return ""


def check(url: str) -> Target:
    """The URL's target, or a ValidationError that says what is wrong and what is allowed."""
    text = (url or "").strip()
    if len(text) > 500:
        raise ValidationError("The URL is longer than 500 characters.")
    try:
        parts = urlsplit(text)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ValidationError(f"{text[:80]!r} is not a URL: {exc}.") from exc
    if parts.scheme not in ("http", "https"):
        raise ValidationError(f"Only http:// and https:// URLs are allowed, not {parts.scheme or 'none'}://.")
    if parts.username is not None or parts.password is not None:
        raise ValidationError(
            "Credentials in the URL (user:password@) are not allowed: they would show wherever the "
            "URL does. The receiver checks the X-Slipway-Signature header instead."
        )
    if not parts.hostname:
        raise ValidationError(f"{text[:80]!r} names no host.")
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ValidationError(f"{parts.hostname} does not resolve: {exc}.") from exc
    addresses = sorted({ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}, key=str)
    for address in addresses:
        why = _why_not(address)
        if why:
            allow = ", ".join(settings.ALERT_WEBHOOK_ALLOW) or "none"
            raise ValidationError(
                f"{parts.hostname} is {address}, {why}: refused. Ops can allow a network with "
                f"ALERT_WEBHOOK_ALLOW (allowed now: {allow})."
            )
    return Target(parts, addresses[0], port)
