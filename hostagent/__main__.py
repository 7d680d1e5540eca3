"""Command line: `python3 -m hostagent info`. One JSON document on stdout; errors on stderr."""

from __future__ import annotations

import argparse
import json
import sys

from hostagent import arp, check, dockerd, doctor, info, killtree, limits, lxcfs, safefs, serve, stats
from hostagent.protocol import AGENT_VERSION, EXTRACT_MAX_BYTES, EXTRACT_MAX_MEMBERS


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
    doc = commands.add_parser(
        "doctor", help="everything the host needs, each with what is wrong and the remedy"
    )
    doc.add_argument(
        "--network", action="append", default=[], help="a Docker network the host needs, as name:parent"
    )
    doc.add_argument("--forward-off", action="store_true", help="IP forwarding must be off (a public pool)")
    doc.add_argument("--volume-root", help="where app volumes live (free disk is checked there)")
    doc.add_argument("--now", type=float, help="the portal's clock (seconds since the epoch)")
    doc.add_argument("--lxcfs-root", dest="lxcfs_root", help=lxcfs_root)
    commands.add_parser("fix-network", help="IP forwarding off, bridge MACs set explicitly")
    start = commands.add_parser("lxcfs-start", help="install (apt) and start LXCFS, then heal containers")
    start.add_argument("--root", help=lxcfs_root)
    settings = commands.add_parser(
        "docker-settings", help="daemon.json with log rotation and live-restore (shows the plan)"
    )
    settings.add_argument(
        "--restart", action="store_true", help="write it, reload and restart dockerd (instances keep running)"
    )
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
    _volume_commands(commands)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve.serve()
    if args.command == "pack":
        return _pack(args.root)

    document: dict[str, object]
    try:
        if args.command == "info":
            document = dict(info.collect())
        elif args.command == "check":
            document = check.collect(args.lxcfs_root)
        elif args.command == "doctor":
            document = doctor.collect(
                args.network, args.forward_off, args.volume_root, args.now, args.lxcfs_root
            )
        elif args.command == "lxcfs-heal":
            document = lxcfs.heal(args.root)
        elif args.command == "lxcfs-start":
            document = lxcfs.start(args.root)
        elif args.command == "docker-settings":
            document = dockerd.apply(args.restart)
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
        elif args.command == "extract":
            document = safefs.extract(
                args.root,
                sys.stdin.buffer,
                max_bytes=args.max_bytes,
                max_members=args.max_members,
                same_owner=args.same_owner,
            )
        elif args.command == "manifest":
            document = safefs.manifest(args.root, args.exclude)
        elif args.command == "write-file":
            document = safefs.write_file(_given(args, "root"), _given(args, "name"), _given(args, "content"))
        elif args.command == "read-file":
            document = safefs.read_file(_given(args, "root"), _given(args, "name"), args.max_bytes)
        elif args.command == "remove":
            document = safefs.remove(args.root, args.names or _stdin_names())
        else:  # pragma: no cover - argparse refuses unknown commands
            parser.error(f"unknown command {args.command!r}")
    except (OSError, ValueError) as exc:
        print(f"hostagent {args.command}: {exc}", file=sys.stderr)
        return 1
    document.setdefault("agent_version", AGENT_VERSION)
    json.dump(document, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    return 0


def _volume_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Work inside an app's volume that never follows a symlink the app made (see safefs)."""
    root_help = "the app's volume directory (absolute); names are relative to it"
    extract = commands.add_parser("extract", help="unpack a tar stream on stdin into the volume")
    extract.add_argument("root", help=root_help)
    extract.add_argument(
        "--max-bytes", type=int, default=EXTRACT_MAX_BYTES, help="refuse past this many bytes"
    )
    extract.add_argument("--max-members", type=int, default=EXTRACT_MAX_MEMBERS, help="refuse past this many")
    extract.add_argument("--same-owner", action="store_true", help="keep the archive's numeric owners")
    pack = commands.add_parser("pack", help="tar of the entries named on stdin (NUL-separated) to stdout")
    pack.add_argument("root", help=root_help)
    listing = commands.add_parser("manifest", help="every entry with its kind, size and sha256 or link text")
    listing.add_argument("root", help=root_help)
    listing.add_argument(
        "--exclude", action="append", default=[], help="a name to leave out, with what is under it"
    )
    # Positional, or as options (how the portal's one-shot fallback passes arguments).
    write = commands.add_parser("write-file", help="write a file, replacing a symlink at its place")
    read = commands.add_parser("read-file", help="a regular file's content; a symlink is not followed")
    for sub, fields in ((write, ("root", "name", "content")), (read, ("root", "name"))):
        for field in fields:
            sub.add_argument(field, nargs="?")
            sub.add_argument(f"--{field}", dest=f"{field}_option")
    read.add_argument("--max-bytes", "--max_bytes", type=int, default=65536)
    remove = commands.add_parser("remove", help="unlink files (not directories), following no symlink")
    remove.add_argument("root", help=root_help)
    remove.add_argument("names", nargs="*", help="relative names; none: NUL-separated names on stdin")


def _given(args: argparse.Namespace, field: str) -> str:
    value = getattr(args, field) or getattr(args, f"{field}_option")
    if value is None:
        raise ValueError(f"give the {field}")
    return str(value)


def _stdin_names() -> list[str]:
    data = sys.stdin.buffer.read()
    return [n.decode("utf-8", "surrogateescape") for n in data.split(b"\0") if n]


def _pack(root: str) -> int:
    """The tar stream goes to stdout; exit 0, or 1 if entries were gone, changed or skipped while
    packing (as tar exits 1 for a file that changed as it was read), or 2 if it could not go on."""
    try:
        counts = safefs.pack(root, _stdin_names(), sys.stdout.buffer)
        sys.stdout.buffer.flush()
    except (OSError, ValueError) as exc:
        print(f"hostagent pack: {exc}", file=sys.stderr)
        return 2
    troubles = [
        f"{len(counts[k])} {k}: {', '.join(counts[k][:5])}"
        for k in ("gone", "changed", "skipped")
        if counts[k]
    ]
    if troubles:
        print(f"hostagent pack: {'; '.join(troubles)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
