"""Base images built on the portal side from a recipe and a root filesystem tar, without a
Docker engine or a registry: the result is a `docker save` style archive that `docker load`
takes (manifest.json, one config, one uncompressed layer). The same inputs give the same bytes,
so the same image ID on every host and every rebuild."""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import re
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from apps.images.recipe import RESERVED_LABEL, Recipe

# Fixed, so an image's ID depends only on what is in it.
CREATED = "1970-01-01T00:00:00Z"
CHUNK = 1024 * 1024

# platform.machine() to the names Docker uses for architectures.
ARCHITECTURES = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "i386": "386",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}

# Docker's reference grammar (distribution/reference), tag required, no digest.
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
DOMAIN = re.compile(rf"{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?")
PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
MAX_NAME = 255


class InvalidReference(ValueError):
    pass


@dataclass(frozen=True)
class Built:
    path: Path
    digest: str  # sha256 of the config: the image ID `docker load` reports
    size: int
    layer_diff_id: str


def docker_architecture() -> str:
    machine = platform.machine().lower()
    return ARCHITECTURES.get(machine, machine)


def validate_reference(reference: str) -> tuple[str, str]:
    """(repository, tag) of "name:tag"; InvalidReference with what is allowed otherwise."""
    allowed = (
        "use name:tag with a lowercase name (letters, digits and '.', '_', '-' between them, parts "
        "separated by '/') and a tag of at most 128 letters, digits, '_', '.' and '-', "
        "e.g. slipway/busybox:2"
    )
    name, colon, tag = reference.rpartition(":")
    if not colon or "/" in tag or "@" in reference:
        raise InvalidReference(f"{reference!r} is not an image reference with a tag: {allowed}.")
    if not TAG.fullmatch(tag):
        raise InvalidReference(f"{reference!r} has an invalid tag {tag!r}: {allowed}.")
    parts = name.split("/")
    # Like Docker, the first part is a registry host only if it looks like one.
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        if not DOMAIN.fullmatch(parts[0]):
            raise InvalidReference(f"{reference!r} has an invalid registry host {parts[0]!r}: {allowed}.")
        parts = parts[1:]
    if len(name) > MAX_NAME or not all(PATH_COMPONENT.fullmatch(part) for part in parts):
        raise InvalidReference(f"{reference!r} has an invalid name {name!r}: {allowed}.")
    return name, tag


def image_config(recipe: Recipe, reference: str, diff_id: str, architecture: str) -> bytes:
    """The image config, serialised canonically: its sha256 is the image ID."""
    config: dict[str, Any] = {
        "Env": [f"{key}={value}" for key, value in recipe.env],
        "Labels": {**dict(recipe.labels), RESERVED_LABEL: reference},
    }
    if recipe.cmd is not None:
        config["Cmd"] = list(recipe.cmd)
    if recipe.entrypoint is not None:
        config["Entrypoint"] = list(recipe.entrypoint)
    if recipe.workdir:
        config["WorkingDir"] = recipe.workdir
    if recipe.user:
        config["User"] = recipe.user
    if recipe.exposed:
        config["ExposedPorts"] = {f"{port}/tcp": {} for port in recipe.exposed}
    document = {
        "architecture": architecture,
        "os": "linux",
        "created": CREATED,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [
            {
                "created": CREATED,
                "created_by": (
                    f"FROM debian:{recipe.release} PACKAGES {' '.join(recipe.packages)}".rstrip()
                    if recipe.release
                    else f"ADD {recipe.rootfs} /"
                ),
                "comment": "built by the Slipway portal from a recipe",
            }
        ],
    }
    return _canonical(document)


def build(
    recipe: Recipe, rootfs_tar: Path, reference: str, out: Path, *, architecture: str | None = None
) -> Built:
    """Write the `docker load` archive of `recipe` over `rootfs_tar` to `out` (atomically).
    The rootfs is streamed, never held in memory: it is read once to hash it (the layer's
    directory is named after the hash, and tar headers come before the data) and once to copy
    it, and the copy is checked against the first read."""
    repository, tag = validate_reference(reference)
    architecture = architecture or docker_architecture()
    if not re.fullmatch(r"[a-z0-9]+", architecture):
        raise ValueError(f"{architecture!r} is not a Docker architecture name such as amd64 or arm64.")
    with open(rootfs_tar, "rb") as layer:
        size = os.fstat(layer.fileno()).st_size
        _check_tar(layer, rootfs_tar)
        diff_hex = _sha256_stream(layer, size, rootfs_tar)
        diff_id = f"sha256:{diff_hex}"
        config = image_config(recipe, reference, diff_id, architecture)
        config_hex = hashlib.sha256(config).hexdigest()
        layer_name = f"{diff_hex}/layer.tar"
        manifest = _canonical(
            [{"Config": f"{config_hex}.json", "RepoTags": [reference], "Layers": [layer_name]}]
        )
        repositories = _canonical({repository: {tag: diff_hex}})

        out = Path(out)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as raw:
                with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
                    archive.addfile(_member(f"{diff_hex}", 0, directory=True))
                    layer.seek(0)
                    copied = _HashingReader(layer)
                    archive.addfile(_member(layer_name, size), copied)
                    if copied.hexdigest() != diff_hex or layer.read(1):
                        raise RuntimeError(f"{rootfs_tar} changed while the image was built; build again.")
                    for name, data in (
                        (f"{config_hex}.json", config),
                        ("manifest.json", manifest),
                        ("repositories", repositories),
                    ):
                        archive.addfile(_member(name, len(data)), io.BytesIO(data))
                raw.flush()
                os.fsync(raw.fileno())
            tmp.chmod(0o644)
            tmp.replace(out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return Built(path=out, digest=f"sha256:{config_hex}", size=out.stat().st_size, layer_diff_id=diff_id)


def archive_digest(path: Path) -> str:
    """The image ID of a `docker load` archive built here ("" when there is none, or it is not
    one): the digest its manifest names for its config."""
    try:
        with tarfile.open(path) as archive:
            member = archive.extractfile("manifest.json")
            manifest = json.loads(member.read()) if member else None
    except (OSError, tarfile.TarError, KeyError, ValueError):
        return ""
    if not isinstance(manifest, list) or len(manifest) != 1 or not isinstance(manifest[0], dict):
        return ""
    config = str(manifest[0].get("Config", ""))
    return f"sha256:{config.removesuffix('.json')}" if re.fullmatch(r"[0-9a-f]{64}\.json", config) else ""


def _canonical(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _member(name: str, size: int, *, directory: bool = False) -> tarfile.TarInfo:
    """A tar header that depends only on name and size: no owner, time or umask leaks in."""
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _check_tar(layer: IO[bytes], path: Path) -> None:
    """An uncompressed tar is what Docker hashes for a layer's diff_id; refuse anything else
    here rather than have `docker load` fail on every host."""
    head = layer.read(512)
    layer.seek(0)
    if (
        head[:2] == b"\x1f\x8b"
        or head[:3] == b"BZh"
        or head[:6] == b"\xfd7zXZ\x00"
        or head[:4] == b"(\xb5/\xfd"
    ):
        raise ValueError(f"{path} is compressed; the root filesystem must be an uncompressed tar.")
    if len(head) < 512 or head[257:262] != b"ustar":
        raise ValueError(f"{path} is not a tar archive (ustar, GNU or pax); the root filesystem must be one.")


def _sha256_stream(layer: IO[bytes], size: int, path: Path) -> str:
    digest = hashlib.sha256()
    read = 0
    while chunk := layer.read(CHUNK):
        digest.update(chunk)
        read += len(chunk)
    if read != size:
        raise RuntimeError(f"{path} changed while the image was built; build again.")
    return digest.hexdigest()


class _HashingReader:
    """Passes reads through and hashes what went by, so the copy is checked in the same pass."""

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner
        self._digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self._digest.update(data)
        return data

    def hexdigest(self) -> str:
        return self._digest.hexdigest()
