"""Gratuitous ARP with a raw socket (standard library only).

After an instance starts with a static address, possibly on another host than before, the
segment's switches and neighbours must learn at once where that address lives now. The frame
is sent from inside the container's network namespace: the agent enters it with setns(2)
just long enough to open the sockets, so no process is started per announcement.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import ipaddress
import os
import socket
import struct
import time
from collections.abc import Iterator

from hostagent import docker_socket

ETH_P_ARP = 0x0806
SIOCGIFADDR = 0x8915
SIOCGIFHWADDR = 0x8927
CLONE_NEWNET = 0x40000000
PACKET_OUTGOING = 4


@contextlib.contextmanager
def netns_of(pid: int | None) -> Iterator[None]:
    """Run the block in the network namespace of process `pid` (this thread only)."""
    if pid is None:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into the network namespace of pid {pid}")
        try:
            yield
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:  # pragma: no cover - cannot happen as root
                raise OSError(ctypes.get_errno(), "setns back into the agent's own network namespace")
    finally:
        os.close(own)
        os.close(target)


def _ifreq(sock: socket.socket, request: int, iface: str) -> bytes:
    return fcntl.ioctl(sock.fileno(), request, struct.pack("256s", iface.encode()[:15]))


def _iface_with(address: ipaddress.IPv4Address) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            try:
                if _ifreq(probe, SIOCGIFADDR, name)[20:24] == address.packed:
                    return name
            except OSError:
                continue  # no IPv4 address on this interface
    raise ValueError(f"no interface holds {address} in that network namespace")


def garp(address: str, pid: int | None = None, count: int = 3) -> dict[str, object]:
    ip = ipaddress.IPv4Address(address)
    with netns_of(pid):
        iface = _iface_with(ip)
        # A packet socket belongs to the namespace it was opened in, whatever happens after.
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        sock.bind((iface, 0))
    with sock:
        mac = _ifreq(sock, SIOCGIFHWADDR, iface)[18:24]
        # ARP request with sender = target = the address: "this IP is at this MAC now".
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, ip.packed, b"\x00" * 6, ip.packed)
        frame = b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP) + arp
        for _ in range(count):
            sock.send(frame)
    return {"address": str(ip), "interface": iface, "mac": mac.hex(":"), "sent": count}


def garp_for(network: str, address: str, mac: str, count: int = 3) -> dict[str, object]:
    """Announce that `address` is at `mac`, a machine on the segment that is not this host (a VM
    given its address back after a rolled-back move): neighbours then send to it at once
    instead of to the container that held the address a moment ago. The frame leaves from the
    network's parent interface with this host's own MAC as its source, so switches keep
    learning the VM's MAC from the VM; only the ARP payload names the VM."""
    ip = ipaddress.IPv4Address(address)
    try:
        target = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    except ValueError:
        target = b""
    if len(target) != 6:
        raise ValueError(f"{mac!r} is not a MAC address")
    iface = _network_iface(docker_socket.get_json(f"/networks/{network}"))
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    with sock:
        sock.bind((iface, 0))
        own = _ifreq(sock, SIOCGIFHWADDR, iface)[18:24]
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, target, ip.packed, b"\x00" * 6, ip.packed)
        frame = b"\xff" * 6 + own + struct.pack("!H", ETH_P_ARP) + arp
        for _ in range(count):
            sock.send(frame)
    return {"address": str(ip), "interface": iface, "mac": target.hex(":"), "sent": count}


def _network_iface(network: dict[str, object]) -> str:
    """The host interface a Docker network puts its containers' frames on."""
    options = network.get("Options") or {}
    assert isinstance(options, dict)
    driver = network.get("Driver")
    if driver in ("macvlan", "ipvlan"):
        parent = options.get("parent")
        if not parent:
            raise ValueError(f"network {network.get('Name')}: {driver} without a parent interface")
        return str(parent)
    if driver == "bridge":
        return str(options.get("com.docker.network.bridge.name") or f"br-{str(network.get('Id'))[:12]}")
    raise ValueError(f"network {network.get('Name')}: cannot probe a {driver} network")


def holders(network: str) -> dict[str, str]:
    """Addresses on the Docker network held by containers of this host, running or not: the
    configured static address counts too, since the container claims it when it starts."""
    out: dict[str, str] = {}
    for container in docker_socket.get_json("/containers/json?all=1"):
        attached = ((container.get("NetworkSettings") or {}).get("Networks") or {}).get(network)
        if not attached:
            continue
        name = (container.get("Names") or ["?"])[0].lstrip("/")
        for address in (attached.get("IPAddress"), (attached.get("IPAMConfig") or {}).get("IPv4Address")):
            if address:
                out[address] = name
    return out


def probe(network: str, addresses: list[str], wait: float = 0.1) -> dict[str, object]:
    """Which of the addresses are in use: held by a running container on this host's Docker
    network, or answering ARP on the segment. The probes carry sender address 0.0.0.0 (RFC 5227), so no
    neighbour learns anything from them; a host that owns the address answers all the same."""
    wanted = {str(ipaddress.IPv4Address(a)) for a in addresses}
    details = docker_socket.get_json(f"/networks/{network}")
    iface = _network_iface(details)
    # The network's own view (running containers) is one call that returns with the interface;
    # a stopped container that merely has the address configured cannot start while we hold it.
    attached = details.get("Containers") or {}
    local = {
        str(c.get("IPv4Address", "")).split("/")[0]: str(c.get("Name", "?"))
        for c in attached.values()
        if str(c.get("IPv4Address", "")).split("/")[0] in wanted
    }
    answered: dict[str, str] = {}
    ask = sorted(wanted - set(local))
    if ask:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        with sock:
            sock.bind((iface, 0))
            mac = _ifreq(sock, SIOCGIFHWADDR, iface)[18:24]
            frames = []
            for address in ask:
                target = ipaddress.IPv4Address(address).packed
                arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, b"\x00" * 4, b"\x00" * 6, target)
                frames.append(b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP) + arp)
            wait = max(0.01, min(float(wait), 5.0))
            started = time.monotonic()
            deadline, again_at = started + wait, started + wait / 3
            for frame in frames:
                sock.send(frame)
            # Sent twice, a third of the wait apart: one lost frame must not make an address
            # look free.
            sent_again = False
            while (now := time.monotonic()) < deadline:
                if not sent_again and now >= again_at:
                    for frame in frames:
                        sock.send(frame)
                    sent_again = True
                sock.settimeout(max(0.001, (deadline if sent_again else again_at) - now))
                try:
                    data, meta = sock.recvfrom(128)
                except TimeoutError:
                    continue
                if meta[2] == PACKET_OUTGOING or len(data) < 42:
                    continue
                op, sha, spa = struct.unpack("!6xH6s4s", data[14:32])
                sender = str(ipaddress.IPv4Address(spa))
                if op == 2 and sender in wanted:
                    answered[sender] = sha.hex(":")
    return {
        "interface": iface,
        "local": local,
        "answered": answered,
        "free": sorted(wanted - set(local) - set(answered)),
    }
