"""Command line: `python3 -m hostagent info`. One JSON document on stdout; errors on stderr."""

from __future__ import annotations

import argparse
import json
import sys

from hostagent import arp, check, info, killtree, limits, lxcfs, serve, stats
from hostagent.protocol import AGENT_VERSION


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hostagent", description="Slipway host agent")
    parser.add_argument("--version", action="version", version=f"hostagent {AGENT_VERSION}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="host facts: CPUs, memory, kernel, cgroups, Docker")
    garp = commands.add_parser("garp", help="announce an address (gratuitous ARP)")
    garp.add_argument("address")
    garp.add_argument("--pid", type=int, help="from the network namespace of this process (a container)")
    garp_for = commands.add_parser("garp-for", help="announce that an address is at another machine's MAC")
    garp_for.add_argument("network", help="the Docker network whose segment hears it")
    garp_for.add_argument("address")
    garp_for.add_argument("mac")
    probe = commands.add_parser("arp-probe", help="which addresses are in use on a Docker network's segment")
    probe.add_argument("network", help="the Docker network (its parent interface sends the probes)")
    probe.add_argument("addresses", nargs="+")
    probe.add_argument("--wait", type=float, default=0.1, help="seconds to wait for answers")
    lxcfs_root = f"where LXCFS is mounted (default: ${lxcfs.ROOT_ENV} or {lxcfs.DEFAULT_ROOT})"
    check_cmd = commands.add_parser(
        "check", help="facts for the host checks: bridges, IP forwarding, storage driver, LXCFS"
    )
    check_cmd.add_argument("--lxcfs-root", "--lxcfs_root", dest="lxcfs_root", help=lxcfs_root)
    commands.add_parser("fix-network", help="IP forwarding off, bridge MACs set explicitly")
    heal = commands.add_parser("lxcfs-heal", help="re-bind stale LXCFS files in running containers")
    heal.add_argument("--root", help=lxcfs_root)
    kill = commands.add_parser("kill-tree", help="kill an exec'd process and its children in a container")
    kill.add_argument("pid", type=int)
    kill.add_argument("--container", required=True, help="the container's id")
    limit = commands.add_parser("limits", help="memory and CPU limits in force, from the cgroup files")
    limit.add_argument("containers", nargs="+", help="container names or ids")
    sweep = commands.add_parser("stats", help="cgroup counters of every running container, one sweep")
    sweep.add_argument("--label", help="only containers with this label, e.g. io.slipway.managed=1")
    commands.add_parser("serve", help="answer JSON requests on stdin/stdout until EOF")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve.serve()

    document: dict[str, object]
    try:
        if args.command == "info":
            document = dict(info.collect())
        elif args.command == "check":
            document = check.collect(args.lxcfs_root)
        elif args.command == "lxcfs-heal":
            document = lxcfs.heal(args.root)
        elif args.command == "fix-network":
            document = check.fix_network()
        elif args.command == "garp":
            document = arp.garp(args.address, pid=args.pid)
        elif args.command == "garp-for":
            document = arp.garp_for(args.network, args.address, args.mac)
        elif args.command == "arp-probe":
            document = arp.probe(args.network, args.addresses, wait=args.wait)
        elif args.command == "kill-tree":
            document = killtree.kill_tree(args.pid, args.container)
        elif args.command == "limits":
            document = limits.collect(args.containers)
        elif args.command == "stats":
            document = dict(stats.collect(args.label))
        else:  # pragma: no cover - argparse refuses unknown commands
            parser.error(f"unknown command {args.command!r}")
    except (OSError, ValueError) as exc:
        print(f"hostagent {args.command}: {exc}", file=sys.stderr)
        return 1
    document.setdefault("agent_version", AGENT_VERSION)
    json.dump(document, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
