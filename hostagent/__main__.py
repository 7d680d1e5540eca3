"""Command line: `python3 -m hostagent info`. One JSON document on stdout; errors on stderr."""

from __future__ import annotations

import argparse
import json
import sys

from hostagent import info
from hostagent.protocol import AGENT_VERSION


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hostagent", description="Slipway host agent")
    parser.add_argument("--version", action="version", version=f"hostagent {AGENT_VERSION}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="host facts: CPUs, memory, kernel, cgroups, Docker")
    args = parser.parse_args(argv)

    if args.command == "info":
        document = info.collect()
    else:  # pragma: no cover - argparse refuses unknown commands
        parser.error(f"unknown command {args.command!r}")
    json.dump(document, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
