"""Business logic for hosts: register, confirm the key, probe. Views, API, admin, tasks and
the lab all call these."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from apps.hosts import agent, gateway
from apps.hosts.models import Host, HostEvent
from apps.hosts.transport import NOT_A_FINGERPRINT, HostError, HostKeyChanged, fingerprint, fingerprint_in

log = logging.getLogger(__name__)


@transaction.atomic
def host_register(
    *,
    name: str,
    address: str,
    ssh_port: int = 22,
    ssh_user: str = "root",
    docker_transport: str = Host.Transport.SSH,
    docker_socket: str = "",
    volume_root: str | None = None,
    user: Any = None,
) -> Host:
    """Create a host awaiting key confirmation, with the key it offers right now.

    Nothing runs on the host until `host_confirm_key` pins that key. The registration is the
    host's first event (and so a row of the audit trail: apps.fleet.receivers).
    """
    host = Host(
        name=name,
        address=address,
        ssh_port=ssh_port,
        ssh_user=ssh_user,
        docker_transport=docker_transport,
        docker_socket=docker_socket,
        state=Host.State.PENDING,
    )
    if volume_root:
        host.volume_root = volume_root
    host.full_clean(exclude=["offered_host_key"])
    try:
        host.offered_host_key = gateway.fetch_host_key(address, ssh_port)
    except HostError as exc:
        raise ValidationError(f"Cannot fetch the SSH host key of {address}:{ssh_port}: {exc}") from exc
    host.save()
    HostEvent.objects.create(
        host=host,
        user=user,
        action="registered",
        detail=f"{address}:{ssh_port}, offers key {host.offered_fingerprint} (to be confirmed)",
    )
    return host


def host_refetch_key(*, host: Host, user: Any = None) -> Host:
    """Fetch the key the host offers now (after a reinstall), to be confirmed again."""
    try:
        offered = gateway.fetch_host_key(host.address, host.ssh_port)
    except HostError as exc:
        raise ValidationError(
            f"Cannot fetch the SSH host key of {host.address}:{host.ssh_port}: {exc}"
        ) from exc
    with transaction.atomic():
        host.offered_host_key = offered
        host.save(update_fields=["offered_host_key"])
        HostEvent.objects.create(
            host=host,
            user=user,
            action="key fetched",
            detail=f"offers {host.offered_fingerprint} (to be confirmed)",
        )
    return host


def host_confirm_key(*, host: Host, confirmed_fingerprint: str, user: Any = None) -> Host:
    """Pin the offered key if the caller confirms its exact fingerprint, then probe the host."""
    if not host.offered_host_key:
        raise ValidationError("No key was offered by this host yet; fetch it first.")
    expected = fingerprint(host.offered_host_key)
    given = fingerprint_in(confirmed_fingerprint)
    if given is None:
        raise ValidationError(NOT_A_FINGERPRINT.format(key_file="/etc/ssh/ssh_host_ed25519_key.pub"))
    if given != expected:
        raise ValidationError(
            f"The fingerprint does not match the key the host offered ({expected}); nothing was pinned. "
            "If the one on the host's console differs, something else may be answering in its place."
        )
    gateway.forget(host)
    host.host_key = host.offered_host_key
    host.last_error = ""
    if host.state == Host.State.PENDING:
        host.state = Host.State.UNREACHABLE  # until the first probe succeeds
    host.save(update_fields=["host_key", "last_error", "state"])
    HostEvent.objects.create(host=host, user=user, action="key pinned", detail=expected)
    return host_probe(host=host)


def host_probe(*, host: Host) -> Host:
    """Ask the host's agent for its facts; record capacity, or mark it unreachable with the reason."""
    now = timezone.now()
    if not host.host_key:
        host.last_checked = now
        host.last_error = "The host key is not confirmed yet."
        host.save(update_fields=["last_checked", "last_error"])
        return host
    try:
        info: dict[str, Any] = agent_ensure(host)[0]
    except HostError as exc:
        host.last_checked = now
        host.last_error = str(exc)
        if isinstance(exc, HostKeyChanged):
            host.last_error = f"{exc}. Re-fetch and confirm the key if the host was reinstalled."
        if host.state != Host.State.DRAINING:
            host.state = Host.State.UNREACHABLE
        host.save(update_fields=["last_checked", "last_error", "state"])
        log.warning("probe of %s failed: %s", host.name, exc)
        return host
    facts = _check_facts(host)
    host.checks = evaluate_checks(facts, _doctor(host))
    # The spec of each new instance binds the LXCFS files the host serves (apps.instances.spec).
    info["lxcfs"] = {k: v for k, v in (facts.get("lxcfs") or {}).items() if k in ("running", "root", "binds")}
    host.checks_ok = all(check["ok"] for check in host.checks if check.get("required", True))
    host.cpus = int(info["cpus"])
    host.memory_mb = int(info["memory_bytes"]) // (1024 * 1024)
    host.facts = info
    host.last_checked = now
    host.last_seen = now
    docker = info.get("docker") or {}
    if docker.get("reachable"):
        host.last_error = ""
        if host.state in (Host.State.UNREACHABLE, Host.State.PENDING):
            host.state = Host.State.ACTIVE
    else:
        host.last_error = f"Docker daemon not reachable on the host: {docker.get('error', 'unknown')}"
        if host.state != Host.State.DRAINING:
            host.state = Host.State.UNREACHABLE
    host.save(
        update_fields=[
            "cpus",
            "memory_mb",
            "facts",
            "checks",
            "checks_ok",
            "last_checked",
            "last_seen",
            "last_error",
            "state",
        ]
    )
    return host


# One agent install at a time in this process: a probe sweep upgrades hosts one by one.
_install_lock = threading.Lock()


def agent_ensure(host: Host, user: Any = None) -> tuple[dict[str, Any], str]:
    """The agent's `info`, after installing the portal's agent if the host has none, an older
    one or another build (each install on the host's history), and what was installed ("" if
    the host's was current). A newer agent is refused by the gateway."""
    try:
        info: dict[str, Any] = gateway.agent(host, "info")
    except gateway.AgentMissing:
        why = "none was installed"
    else:
        version, build = int(info.get("agent_version", 0)), info.get("agent_build", "")
        if version > gateway.AGENT_VERSION or (
            version == gateway.AGENT_VERSION and build == agent.bundle().build
        ):
            return info, ""  # current (a newer one was refused by the gateway already)
        why = (
            f"version {version} was installed"
            if version < gateway.AGENT_VERSION
            else f"build {build or 'unknown'} was installed"
        )
    with _install_lock:
        try:
            bundle = gateway.agent_install(host)
        except HostError as exc:
            raise HostError(f"Installing hostagent {gateway.AGENT_VERSION} failed ({why}): {exc}") from exc
    detail = f"hostagent {bundle.version} ({bundle.name}); {why}"
    HostEvent.objects.create(host=host, user=user, action="agent installed", detail=detail)
    return gateway.agent(host, "info"), detail


def _check_facts(host: Host) -> dict[str, Any]:
    """`hostagent check`; containers left with dead LXCFS mounts (LXCFS restarted under them)
    are healed in place first, without a restart, and that is kept in the host's log."""
    try:
        facts = gateway.agent(host, "check")
    except HostError as exc:
        return {"error": str(exc)}
    lxcfs = facts.get("lxcfs") or {}
    if not (lxcfs.get("running") and lxcfs.get("stale")):
        return facts
    try:
        result = gateway.agent(host, "lxcfs-heal", timeout=60)
    except HostError as exc:
        lxcfs["heal_error"] = str(exc)
        return facts
    healed = [
        f"{c['name']}: {', '.join(c['healed'])}" for c in result.get("containers", []) if c.get("healed")
    ]
    failed = [f"{c['name']}: {c['failed']}" for c in result.get("containers", []) if c.get("failed")]
    HostEvent.objects.create(
        host=host,
        action="lxcfs healed",
        detail="; ".join(healed + [f"failed {f}" for f in failed]) or "nothing to do",
    )
    try:
        return gateway.agent(host, "check")
    except HostError as exc:
        return {"error": str(exc)}


def hosts_probe_all() -> list[Host]:
    """Probe every host with a pinned key; one slow host must not hold up the others."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import close_old_connections

    hosts = list(Host.objects.exclude(host_key=""))

    def probe(host: Host) -> Host:
        try:
            return host_probe(host=host)
        finally:
            close_old_connections()

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(hosts)))) as pool:
        return list(pool.map(probe, hosts))


# --- host checks ---------------------------------------------------------------------------------


def _check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": ok, "detail": detail}


def _doctor(host: Host) -> list[dict[str, Any]]:
    """`hostagent doctor`, told what only the portal knows about the host."""
    networks = (
        [f"{name}:" for name in host.ip_pools.values_list("docker_network", flat=True)] if host.pk else []
    )
    try:
        report = gateway.agent(
            host,
            "doctor",
            networks=networks,
            forward_off=bool(networks),
            volume_root=host.volume_root,
            now=time.time(),
        )
    except HostError as exc:
        return [_check("doctor", False, f"hostagent doctor failed: {exc}")]
    return list(report.get("checks") or [])


def evaluate_checks(facts: dict[str, Any], doctor: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The host's checks: the doctor judges every one (with its remedy and the portal's fix);
    `hostagent check` failing is a check of its own, since the probe heals LXCFS from it."""
    if "error" in facts:
        return [_check("agent", False, f"hostagent check failed: {facts['error']}"), *doctor]
    return list(doctor)


def host_fix_network(*, host: Host, user: Any) -> Host:
    """Turn IP forwarding off and pin bridge MACs on the host (hostagent fix-network), then re-check."""
    network_fix(host=host, user=user)
    return host_probe(host=host)


def network_fix(*, host: Host, user: Any) -> str:
    """hostagent fix-network, kept in the host's log; what it fixed, in words."""
    try:
        result = gateway.agent(host, "fix-network")
    except HostError as exc:
        raise ValidationError(f"{host.name}: fix-network failed: {exc}") from exc
    fixed = ", ".join(result.get("fixed") or []) or "nothing needed fixing"
    HostEvent.objects.create(host=host, user=user, action="fix-network", detail=fixed)
    return fixed


def lxcfs_start(*, host: Host, user: Any) -> str:
    """hostagent lxcfs-start (Debian's package installed if missing), kept in the host's log."""
    try:
        result = gateway.agent(host, "lxcfs-start", timeout=LXCFS_START_TIMEOUT_S)
    except HostError as exc:
        raise ValidationError(f"{host.name}: starting LXCFS failed: {exc}") from exc
    done = "; ".join(result.get("done") or []) or "nothing to do"
    HostEvent.objects.create(host=host, user=user, action="lxcfs started", detail=done)
    return done


# Installing a package can take minutes on a slow mirror; a dockerd restart, seconds.
LXCFS_START_TIMEOUT_S = 700
DOCKER_SETTINGS_TIMEOUT_S = 300


def docker_settings(*, host: Host, user: Any, restart: bool) -> str:
    """dockerd's settings (log rotation, live-restore): without `restart` what the agent would
    write; with it, written, reloaded and dockerd restarted (instances keep running: the reload
    turns live-restore on first), kept in the host's log."""
    try:
        result = gateway.agent(host, "docker-settings", timeout=DOCKER_SETTINGS_TIMEOUT_S, restart=restart)
    except HostError as exc:
        if restart:
            HostEvent.objects.create(host=host, user=user, action="dockerd settings failed", detail=str(exc))
        raise ValidationError(f"{host.name}: dockerd settings: {exc}") from exc
    detail = str(result.get("detail") or "")
    if result.get("restarted"):
        HostEvent.objects.create(host=host, user=user, action="dockerd settings", detail=detail)
    return detail


@transaction.atomic
def host_override_checks(*, host: Host, user: Any, reason: str) -> Host:
    """Let a host that fails its checks take instances anyway; an empty reason ends the override."""
    reason = reason.strip()
    if reason and len(reason) < 10:
        raise ValidationError(
            {"reason": "Say why in at least 10 characters; the reason is kept in the host's log."}
        )
    host.checks_override = reason
    host.save(update_fields=["checks_override"])
    HostEvent.objects.create(
        host=host, user=user, action="override" if reason else "override ended", detail=reason
    )
    return host
