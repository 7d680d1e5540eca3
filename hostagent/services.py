"""Starting, reloading and restarting the host's own services (dockerd, LXCFS) the way the host
does it: `systemctl` on a Debian server. A host run otherwise (the lab, which has no systemd in
its namespaces) names its stand-in, which takes the same arguments, in $SLIPWAY_SERVICE_CTL."""

from __future__ import annotations

import os
import subprocess

SERVICE_CTL_ENV = "SLIPWAY_SERVICE_CTL"
DEFAULT_CTL = "systemctl"


def ctl(*args: str, timeout: float = 120) -> str:
    """Run `systemctl ARGS` (or the stand-in); what it printed, or OSError with its last line."""
    argv = [os.environ.get(SERVICE_CTL_ENV) or DEFAULT_CTL, *args]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise OSError(f"{argv[0]} is not there to {' '.join(args)}") from None
    except subprocess.TimeoutExpired:
        raise OSError(f"{' '.join(argv)} did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise OSError(f"{' '.join(argv)} exited {done.returncode}: {said}")
    return done.stdout.strip()
