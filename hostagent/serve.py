"""`hostagent serve`: answer requests on stdin/stdout, one JSON object per line, until EOF.

The portal keeps one such process per host on its SSH connection, so a request costs a round
trip (about a millisecond) instead of a new SSH channel and a Python start (over 100 ms).
Request: {"id": 1, "cmd": "garp", "args": {...}}; reply: {"id": 1, "ok": true, "result": {...}}
or {"id": 1, "ok": false, "error": "..."}.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import IO, Any

from hostagent import arp, check, dockerd, doctor, info, killtree, limits, lxcfs, safefs, stats
from hostagent.protocol import AGENT_VERSION

COMMANDS: dict[str, Callable[..., Any]] = {
    "ping": lambda: {"agent_version": AGENT_VERSION},
    "info": info.collect,
    "garp": arp.garp,
    "garp-for": arp.garp_for,
    "arp-probe": arp.probe,
    "holders": lambda network: {"holders": arp.holders(network)},
    "check": check.collect,
    "doctor": doctor.collect,
    "fix-network": check.fix_network,
    "stats": stats.collect,
    "limits": limits.collect,
    "kill-tree": killtree.kill_tree,
    "lxcfs-heal": lxcfs.heal,
    "lxcfs-start": lxcfs.start,
    "docker-settings": dockerd.apply,
    # Inside an app's volume, never following a symlink (extract and pack stream: CLI only).
    "write-file": safefs.write_file,
    "read-file": safefs.read_file,
    "remove": safefs.remove,
    "manifest": safefs.manifest,
}


def serve(stdin: IO[str] = sys.stdin, stdout: IO[str] = sys.stdout) -> int:
    for line in stdin:
        if not line.strip():
            continue
        reply: dict[str, Any]
        try:
            request = json.loads(line)
            handler = COMMANDS[request["cmd"]]
        except (ValueError, KeyError, TypeError):
            reply = {"id": None, "ok": False, "error": f"bad request; commands: {sorted(COMMANDS)}"}
        else:
            try:
                reply = {
                    "id": request.get("id"),
                    "ok": True,
                    "result": handler(**(request.get("args") or {})),
                }
            except (OSError, ValueError, TypeError) as exc:
                reply = {"id": request.get("id"), "ok": False, "error": str(exc)}
        stdout.write(json.dumps(reply, sort_keys=True) + "\n")
        stdout.flush()
    return 0
