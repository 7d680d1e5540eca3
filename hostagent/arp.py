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
from collections.abc import Iterator

ETH_P_ARP = 0x0806
SIOCGIFADDR = 0x8915
SIOCGIFHWADDR = 0x8927
CLONE_NEWNET = 0x40000000


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
