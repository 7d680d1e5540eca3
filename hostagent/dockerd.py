"""dockerd's own settings (daemon.json): log rotation and live-restore, written by the portal on
ops' word, taken by dockerd without losing an instance.

The order makes a restart safe: write the file, have dockerd reload it (SIGHUP, through the
service manager), which turns live-restore on without a restart and proves the file is valid;
only then restart dockerd, whose containers keep running across it with live-restore on. Any
step that fails puts the old file back, so dockerd never restarts with a file it refuses.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.parse
from typing import Any

from hostagent import docker_socket, doctor, services

# What Slipway wants from dockerd; whatever else the file says is kept.
LOG_OPTS = {"max-size": "10m", "max-file": "3"}
ROTATABLE = ("json-file", "local")  # the drivers max-size/max-file apply to
RELOAD_WAIT_S = 10.0
RESTART_WAIT_S = 60.0
BACKUP_SUFFIX = ".slipway-backup"


def planned(current: dict[str, Any]) -> dict[str, Any]:
    """The file with Slipway's settings added: live-restore on; rotation where the log driver
    takes it (a driver that ships logs elsewhere, journald or syslog, rotates there)."""
    new = dict(current)
    new["live-restore"] = True
    if str(current.get("log-driver", "json-file")) in ROTATABLE:
        opts = dict(current.get("log-opts") or {})
        for key, value in LOG_OPTS.items():
            opts.setdefault(key, value)
        new["log-opts"] = opts
    return new


def _current() -> dict[str, Any]:
    path = doctor.docker_config_path()
    try:
        with open(path) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); fix it by hand first") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, not an object; fix it by hand first")
    return data


def dockerd_argv() -> list[str]:
    """The running dockerd's command line: the one serving our socket when several run."""
    sock = docker_socket.socket_path()
    found: list[list[str]] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as handle:
                if handle.read().strip() != "dockerd":
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = [a.decode(errors="replace") for a in handle.read().split(b"\0") if a]
        except OSError:
            continue  # gone meanwhile
        found.append(argv)
    mine = [argv for argv in found if any(sock in arg for arg in argv)]
    return (mine or found)[0] if len(mine or found) == 1 else []


def conflicts(settings: dict[str, Any], argv: list[str]) -> list[str]:
    """Settings dockerd's command line sets too: dockerd refuses to start when a directive is
    both a flag and in daemon.json."""
    flags = {arg[2:].split("=", 1)[0] for arg in argv if arg.startswith("--")}
    return sorted(key for key in settings if key in flags)


def _running() -> set[str]:
    return {str(c["Id"]) for c in docker_socket.get_json("/containers/json")}


def _reloaded_since(since: float) -> bool:
    query = urllib.parse.urlencode(
        {
            "since": f"{since:.9f}",
            "until": f"{time.time():.9f}",
            "filters": json.dumps({"type": ["daemon"], "event": ["reload"]}),
        }
    )
    return bool(docker_socket.get_json_lines(f"/events?{query}"))


def _wait(test: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if test():
                return True
        except (OSError, ValueError):
            pass  # dockerd still starting
        time.sleep(0.2)
    return False


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as handle:
        handle.write(text)
    os.chmod(path + ".tmp", 0o644)
    os.replace(path + ".tmp", path)


def apply(restart: bool = False) -> dict[str, Any]:
    """What daemon.json would become; with `restart`, write it, reload dockerd and restart it.
    Without `restart` nothing on the host changes (the portal shows the plan to ops)."""
    path = doctor.docker_config_path()
    current = _current()
    new = planned(current)
    info = docker_socket.get_json("/info")
    changes = {k: v for k, v in new.items() if current.get(k) != v}
    clash = conflicts(new, dockerd_argv())
    report: dict[str, Any] = {"path": path, "changes": changes, "restarted": False}
    if clash:
        raise ValueError(
            f"dockerd's command line sets {', '.join(clash)}, which daemon.json would set too: dockerd "
            "would refuse to start. Take them off the command line (the service's ExecStart) first"
        )
    if not changes and info.get("LiveRestoreEnabled"):
        report["detail"] = f"{path} has log rotation and live-restore already, and dockerd uses them"
        return report
    if not restart:
        report["detail"] = (
            f"would write {', '.join(changes) or 'nothing'} to {path}, reload and restart dockerd"
        )
        return report
    had = os.path.exists(path)
    backup = path + BACKUP_SUFFIX
    if had:
        shutil.copy2(path, backup)

    def put_back() -> None:
        if had:
            os.replace(backup, path)
        elif os.path.exists(path):
            os.unlink(path)

    _write(path, json.dumps(new, indent=2, sort_keys=True) + "\n")
    # Reload first: it checks the whole file and turns live-restore on while dockerd runs.
    started = time.time() - 0.001
    try:
        services.ctl("reload", "docker", timeout=30)
    except OSError:
        put_back()
        raise
    if not _wait(lambda: _reloaded_since(started), RELOAD_WAIT_S) or not docker_socket.get_json("/info").get(
        "LiveRestoreEnabled"
    ):
        put_back()
        services.ctl("reload", "docker", timeout=30)
        raise OSError(
            f"dockerd did not take the new {path} on reload (see its log); nothing was restarted and "
            "the file is as it was"
        )
    before = _running()
    services.ctl("restart", "docker", timeout=RESTART_WAIT_S + 60)
    if not _wait(
        lambda: docker_socket.get_json("/info", timeout=2).get("LiveRestoreEnabled"), RESTART_WAIT_S
    ):
        put_back()
        services.ctl("restart", "docker", timeout=RESTART_WAIT_S + 60)
        raise OSError(
            f"dockerd did not come back within {RESTART_WAIT_S:.0f} s with the new {path}; the old file is "
            "back and dockerd was restarted with it"
        )
    after = _running()
    report.update(
        restarted=True,
        backup=backup if had else "",
        kept_running=len(before & after),
        stopped=sorted(before - after),
        detail=f"wrote {', '.join(changes)} to {path}; dockerd reloaded and restarted, "
        f"{len(before & after)} of {len(before)} running containers kept running",
    )
    return report
