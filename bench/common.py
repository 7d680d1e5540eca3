"""What both benchmarks share: the raw side (the portal's own container, run by hand with
`docker run`) and how a figure is recorded and printed."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from apps.hosts.transport import ContainerSpec

# Static addresses the raw containers take while the portal's instances hold theirs: on the pool's
# network, outside the bench pool's range (10.213.240.1-10.213.249.254) and Docker's own.
ROOT = Path(__file__).resolve().parent.parent

RAW_ADDRESSES = [f"10.213.250.{n}" for n in range(1, 200)]


def raw_run_args(spec: ContainerSpec, name: str, address: str = "") -> list[str]:
    """`docker run -d` of the very container the portal made from `spec`: the same image and
    command, limits (memory = memory+swap, CPUs, processes), log rotation, init, restart policy,
    network and static address on the pool's macvlan (or the published port), volume, LXCFS
    binds, environment, labels and working directory. Only the name differs (and the raw one has the bench label),
    and the address when `address` is given (the portal's instance still holds its own)."""
    args = ["run", "-d", "--name", name, "--init", "--restart", "unless-stopped"]
    args += ["--memory", f"{spec.memory_mb}m", "--memory-swap", f"{spec.memory_mb}m"]
    args += ["--cpus", f"{spec.nano_cpus / 1e9:g}"]
    if spec.pids_limit:
        args += ["--pids-limit", str(spec.pids_limit)]
    if spec.log_max_size:
        args += ["--log-driver", "json-file", "--log-opt", f"max-size={spec.log_max_size}"]
        args += ["--log-opt", f"max-file={spec.log_max_file or 1}"]
    if spec.network:
        ipv4 = address or spec.ipv4
        args += ["--network", spec.network] + (["--ip", ipv4] if ipv4 else [])
    elif spec.port:
        args += ["-p", f"{spec.publish_address}::{spec.port}" if spec.publish_address else str(spec.port)]
    for source, target in spec.binds:
        args += ["-v", f"{source}:{target}"]
    for source, target in spec.ro_binds:
        args += ["-v", f"{source}:{target}:ro"]
    for key, value in spec.env:
        args += ["-e", f"{key}={value}"]
    for key, value in spec.labels:
        args += ["--label", f"{key}={value}"]
    args += ["--label", "io.slipway.bench=1"]
    if spec.workdir:
        args += ["-w", spec.workdir]
    return [*args, spec.image, *spec.command]


def wait_for(
    check: Callable[[], bool],
    timeout: float = 60,
    what: str = "benchmark step",
    *,
    interval: float = 0.005,
    negate: bool = False,
) -> None:
    """Until check() is true (false with `negate`), polled every `interval`; TimeoutError past
    `timeout` seconds, naming `what`."""
    deadline = time.monotonic() + timeout
    while check() == negate:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


figures: list[dict[str, object]] = []


def say(text: str) -> None:
    print(text, flush=True)


def figure(
    name: str, unit: str, value: float, baseline: float | None, *, rounds: int, note: str = ""
) -> None:
    """One figure: the portal's median over `rounds` repetitions beside the raw baseline's
    median over as many (each baseline is described in docs/benchmarks.md)."""
    ratio = round(value / baseline, 2) if baseline else None
    figures.append(
        {
            "name": name,
            "unit": unit,
            "value": round(value, 4),
            "baseline": round(baseline, 4) if baseline else None,
            "ratio": ratio,
            "rounds": rounds,
            **({"note": note} if note else {}),
        }
    )
    base = f"  raw {baseline:.3f} {unit}  ratio {ratio}" if baseline else ""
    say(f"{name:16} {value:.3f} {unit}{base}  (n={rounds}){'  ' + note if note else ''}")


def commit() -> str:
    """The git commit the figures are for, with "+changes" when the tree differs from it."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def machine() -> dict[str, object]:
    """What ran the bench, so two results files can be compared."""
    import platform

    import django.db

    with open("/proc/meminfo") as handle:
        total_kib = int(handle.readline().split()[1])
    with open("/proc/cpuinfo") as handle:
        model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    docker = subprocess.run(["dockerd", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(total_kib / 2**20, 1),
        "python": platform.python_version(),
        "docker": docker,
        "database": str(django.db.connection.vendor),
    }
