"""Docker networks on a host: the bridged (macvlan) network an IP pool's instances join."""

from __future__ import annotations

from docker.client import DockerClient
from docker.errors import NotFound
from docker.types import IPAMConfig, IPAMPool

from apps.hosts.transport.docker_api.client import _retry_stale, translate


@_retry_stale
def network_ensure(
    client: DockerClient, name: str, *, subnet: str, gateway: str, parent: str, ip_range: str, where: str
) -> bool:
    """Create the macvlan network over `parent` if the host has none by that name; True if made.
    Docker's own IPAM only hands out from `ip_range`: the portal gives every instance its
    address explicitly, and Docker's per-host IPAM would reuse addresses across hosts."""
    api = client.api
    try:
        api.inspect_network(name)
        return False
    except NotFound:
        pass
    except Exception as exc:
        raise translate(exc, where) from exc
    try:
        api.create_network(
            name,
            driver="macvlan",
            options={"parent": parent},
            ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=subnet, gateway=gateway, iprange=ip_range)]),
        )
    except Exception as exc:
        raise translate(exc, where) from exc
    return True
