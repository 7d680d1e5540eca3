"""The host agent as the portal ships it: the `hostagent` package of this checkout, built into
one zipapp (stdlib only, so the host needs nothing but python3) whose bytes, and so its
checksum, depend only on the sources. The portal installs it on each host over SFTP into a
directory per version, and switches `current` to it atomically, keeping the one before as
`previous` for a rollback:

    /opt/slipway/agent/v8-1a2b3c4d5e6f/hostagent.pyz   (version 8, build 1a2b3c4d5e6f)
    /opt/slipway/agent/current  -> v8-1a2b3c4d5e6f
    /opt/slipway/agent/previous -> v7-...
"""

from __future__ import annotations

import functools
import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from hostagent.protocol import AGENT_VERSION

SOURCE = Path(settings.BASE_DIR) / "hostagent"
# The zipapp's own entry point: what `python3 -m hostagent` runs.
MAIN = b"import sys\nfrom hostagent.__main__ import main\nsys.exit(main())\n"
# A fixed date for every member: the same sources give the same bytes, on any machine.
EPOCH = (2020, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Bundle:
    data: bytes
    sha256: str
    version: int
    build: str  # a digest of the sources, stamped into the agent: `info` says it

    @property
    def name(self) -> str:
        """The directory it is installed in: its version and build."""
        return f"v{self.version}-{self.build}"


def root() -> str:
    return str(settings.HOSTAGENT_ROOT).rstrip("/")


def argv() -> list[str]:
    """How the portal runs the installed agent on a host."""
    return ["python3", f"{root()}/current/hostagent.pyz"]


@functools.cache
def bundle() -> Bundle:
    """The agent as installed: a changed source makes a new build even under the same version,
    and the probe installs it (a portal upgrade brings its agent along)."""
    sources = [
        (f"hostagent/{p.relative_to(SOURCE).as_posix()}", p.read_bytes())
        for p in sorted(SOURCE.rglob("*.py"))
    ]
    digest = hashlib.sha256()
    for name, content in sources:
        digest.update(name.encode() + b"\0" + content + b"\0")
    build = digest.hexdigest()[:12]
    members = [*sources, ("hostagent/_build.py", f'BUILD = "{build}"\n'.encode()), ("__main__.py", MAIN)]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members:
            member = zipfile.ZipInfo(name, EPOCH)
            member.compress_type = zipfile.ZIP_DEFLATED
            member.external_attr = 0o644 << 16
            archive.writestr(member, content)
    data = buffer.getvalue()
    return Bundle(data=data, sha256=hashlib.sha256(data).hexdigest(), version=AGENT_VERSION, build=build)
