"""Register the lab's hosts in the portal, as ops would: fetch the key, confirm it, probe."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError

from apps.applications.models import BaseImage, BuildState
from apps.fleet import prepare
from apps.hosts import gateway, services
from apps.hosts.models import Host
from apps.hosts.transport import HostError, fingerprint
from apps.images import registry_settings
from apps.lab.fleet import LabConfig, LabHost, Log
from apps.lab.images import IMAGES, archive, recipe_text
from apps.lab.registry import LabRegistry
from apps.network.models import IPPool


def register_hosts(hosts: list[LabHost], log: Log = print) -> list[Host]:
    registered = []
    for lab_host in hosts:
        # The lab made this key itself; comparing it with what the host offers over the
        # network is the out-of-band check an operator does by reading the console.
        known = fingerprint(lab_host.host_public_key())
        host = Host.objects.filter(name=lab_host.name).first()
        if host is None:
            host = services.host_register(
                name=lab_host.name,
                address=str(lab_host.address),
                docker_socket=str(lab_host.docker_socket),
                volume_root=str(lab_host.volume_root),
            )
        else:
            host.address = str(lab_host.address)
            host.docker_socket = str(lab_host.docker_socket)
            host.volume_root = str(lab_host.volume_root)
            host.save(update_fields=["address", "docker_socket", "volume_root"])
            if host.host_key and fingerprint(host.host_key) == known:
                registered.append(services.host_probe(host=host))
                continue
            services.host_refetch_key(host=host)
        if host.offered_fingerprint != known:
            raise ValidationError(
                f"{lab_host.name} offered {host.offered_fingerprint}, but the lab made {known}"
            )
        host = services.host_confirm_key(host=host, confirmed_fingerprint=known)
        log(f"{host.name}: registered, key {known}, state {host.state}")
        registered.append(host)
    return registered


def register_images(keys: tuple[str, ...], log: Log = print) -> list[BaseImage]:
    """The lab's base images as published versions with their recipes, each with the hosts that
    have it (the same image ID: the lab builds v1 with the portal's own builder). A host that
    lacks one gets it from Prepare's "load base images", as a real server does."""
    cache = Path(settings.LAB_IMAGE_CACHE)
    out = []
    for key in keys:
        spec = IMAGES[key]
        built = archive(key, cache, log)
        name, tag = spec.reference.rsplit(":", 1)
        image, _ = BaseImage.objects.update_or_create(
            name=name,
            tag=tag,
            defaults={
                "runtime": spec.runtime,
                "description": spec.description,
                "default_command": spec.default_command,
                "default_port": spec.default_port,
                # Ops publish the next version from a copy of it.
                "recipe": recipe_text(spec),
                "state": BuildState.PUBLISHED,
                "digest": built.digest,
                "size": built.size,
            },
        )
        present = []
        for host in Host.objects.exclude(host_key=""):
            try:
                if gateway.image_id(host, image.reference) == built.digest:
                    present.append(host)
            except HostError as exc:
                log(f"{image.reference}: {exc}")
        image.hosts.set(present)
        log(f"{image.reference}: on {', '.join(h.name for h in present) or 'no host yet'}")
        out.append(image)
    return out


def register_pool(
    config: LabConfig, hosts: list[Host], log: Log = print, first: str = "", last: str = ""
) -> IPPool:
    """The lab's public pool: by default its subnet minus the first /24 (portal, hosts, the
    legacy VM) and the last /24 (left to Docker's own IPAM on each host). Tests and the bench
    pass a range of their own, so they never meet the demo's instances on the segment."""
    net = config.subnet
    first = first or str(net.network_address + 256 + 1)
    last = last or str(net.broadcast_address - 256 - 1)
    pool, _ = IPPool.objects.update_or_create(
        name="lab-public",
        defaults={
            "network": str(net),
            "gateway": str(config.portal_ip),
            "range_start": first,
            "range_end": last,
            "docker_network": "public",
        },
    )
    pool.full_clean()
    pool.hosts.add(*hosts)
    log(f"IP pool {pool.name}: {pool.range_start} - {pool.range_end} on {', '.join(h.name for h in hosts)}")
    return pool


def prepare_lab_hosts(hosts: list[Host], log: Log = print) -> list[Host]:
    """What ops do with a new host: Prepare. It installs the agent, creates the pool's Docker
    network, turns forwarding off (new namespaces start with ip_forward=1) and checks again."""
    out = []
    for host in hosts:
        preparation = prepare.prepare_now(host)
        for step in preparation.steps:
            if step["state"] in ("done", "failed"):
                log(f"{host.name}: {step['name']}: {step['state']}: {step['detail']}")
        host.refresh_from_db()
        log(
            f"{host.name}: {preparation.get_state_display().lower()}; checks {'pass' if host.checks_ok else 'FAIL'}"
        )
        out.append(host)
    return out


def register_registry(config: LabConfig, log: Log = print) -> None:
    """Publish through the lab's registry, set as ops would on the registry page (URL, the
    generated credentials, the lab CA) and checked the same way before it is saved."""
    lab_registry = LabRegistry.of(config)
    username, password = lab_registry.credentials()
    row = registry_settings.registry_set(
        user=None,
        url=lab_registry.url,
        username=username,
        password=password,
        clear_password=False,
        ca_pem=lab_registry.ca_pem(),
        enabled=True,
    )
    log(f"registry {row.url}: publishing goes through it (user {row.username})")
