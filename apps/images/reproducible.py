"""What a Debian root filesystem needs, after its packages are installed, so the same packages give
the same bytes: run by the build on the finished tree (`python3 reproducible.py ROOT`), before
it is packed. Standard library only: it runs as a build hook, outside Django.

mmdebstrap already makes most of a tree reproducible (SOURCE_DATE_EPOCH clamps times, it drops
apt's lists and caches). What is left is what packages' scripts make at install time with the
clock in it: Java's trust store (ca-certificates-java writes a Java KeyStore whose every entry
carries the moment it was added)."""

from __future__ import annotations

import hashlib
import os
import struct
import sys
from pathlib import Path

# Java KeyStores the Debian packages make, with the password they are made with.
KEYSTORES = {"etc/ssl/certs/java/cacerts": "changeit"}
JKS_MAGIC = 0xFEEDFEED
TRUSTED, PRIVATE = 2, 1


class NotAKeyStore(ValueError):
    pass


def jks_normalized(data: bytes, password: str, when_ms: int) -> bytes:
    """The keystore with every entry's date set to `when_ms` and the entries in alias order,
    sealed again with its password (a keystore whose seal does not match is refused: it is not
    one this knows how to read)."""
    body, seal = data[:-20], data[-20:]
    if len(data) < 32 or _seal(password, body) != seal:
        raise NotAKeyStore("not a Java KeyStore sealed with the expected password")
    magic, version, count = struct.unpack(">III", body[:12])
    if magic != JKS_MAGIC or version not in (1, 2):
        raise NotAKeyStore(f"unknown keystore magic {magic:#x} or version {version}")
    entries: list[tuple[str, bytes]] = []
    at = 12
    for _ in range(count):
        start = at
        (tag,) = struct.unpack(">I", body[at : at + 4])
        at += 4
        alias, at = _utf(body, at)
        at += 8  # the date, replaced below
        if tag == TRUSTED:
            at = _cert(body, at, version)
        elif tag == PRIVATE:
            (length,) = struct.unpack(">I", body[at : at + 4])
            at += 4 + length
            (chain,) = struct.unpack(">I", body[at : at + 4])
            at += 4
            for _ in range(chain):
                at = _cert(body, at, version)
        else:
            raise NotAKeyStore(f"unknown entry tag {tag}")
        entry = bytearray(body[start:at])
        date_at = 4 + 2 + len(alias.encode("utf-8", "surrogatepass"))
        entry[date_at : date_at + 8] = struct.pack(">q", when_ms)
        entries.append((alias, bytes(entry)))
    if at != len(body):
        raise NotAKeyStore("trailing bytes after the last entry")
    entries.sort(key=lambda item: item[0])
    out = body[:12] + b"".join(entry for _, entry in entries)
    return out + _seal(password, out)


def _utf(data: bytes, at: int) -> tuple[str, int]:
    (length,) = struct.unpack(">H", data[at : at + 2])
    raw = data[at + 2 : at + 2 + length]
    return raw.decode("utf-8", "surrogatepass"), at + 2 + length


def _cert(data: bytes, at: int, version: int) -> int:
    if version == 2:
        _, at = _utf(data, at)  # the certificate type, e.g. X.509
    (length,) = struct.unpack(">I", data[at : at + 4])
    return at + 4 + length


def _seal(password: str, body: bytes) -> bytes:
    # The JKS integrity check: SHA-1 over the password as UTF-16BE, a fixed phrase, the body.
    return hashlib.sha1(
        password.encode("utf-16-be") + b"Mighty Aphrodite" + body, usedforsecurity=False
    ).digest()


def normalize(root: Path, when: int) -> list[str]:
    """Make the tree at `root` reproducible in place; what was changed, for the build log."""
    done = []
    for relative, password in KEYSTORES.items():
        path = root / relative
        if not path.is_file() or path.is_symlink():
            continue
        try:
            fixed = jks_normalized(path.read_bytes(), password, when * 1000)
        except (NotAKeyStore, struct.error) as exc:
            done.append(f"left {relative} as it is: {exc}")
            continue
        stat = path.stat()
        path.write_bytes(fixed)
        os.utime(path, (stat.st_atime, stat.st_mtime))
        done.append(f"dated every entry of {relative} {when}")
    return done


if __name__ == "__main__":
    for line in normalize(Path(sys.argv[1]), int(os.environ.get("SOURCE_DATE_EPOCH", "0"))):
        print(f"reproducible: {line}", flush=True)
