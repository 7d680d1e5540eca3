"""The checks an uploaded archive of an app's files passes before it is kept."""

from __future__ import annotations

import tarfile
from typing import IO

from django.conf import settings
from django.core.exceptions import ValidationError


def check_archive(fileobj: IO[bytes], size: int, *, state_paths: list[str] | None = None) -> int:
    """Refuse an archive too big, unreadable, or that could write outside the app's files, or
    that holds something other than a directory where a persistent path is bound; return its
    regular-file count."""
    limit = settings.MAX_UPLOAD_MB * 1024 * 1024
    if size > limit:
        raise ValidationError(f"The archive is {size // 2**20} MiB; at most {settings.MAX_UPLOAD_MB} MiB.")
    return _check_tarball(fileobj, state_paths or [])


def _check_tarball(fileobj: IO[bytes], state_paths: list[str]) -> int:
    """Refuse a tarball that could write outside the volume; return its regular-file count."""
    try:
        with tarfile.open(fileobj=fileobj, mode="r:*") as tar:
            files = 0
            for member in tar:
                name = member.name
                parts = [p for p in name.split("/") if p not in ("", ".")]
                if name.startswith("/") or ".." in parts:
                    raise ValidationError(
                        f"{name!r}: absolute paths and '..' are not allowed in the tarball."
                    )
                if member.isdev() or member.isfifo():
                    raise ValidationError(f"{name!r}: devices and fifos are not allowed in the tarball.")
                if member.issym() or member.islnk():
                    target = member.linkname
                    base = parts[:-1] if member.issym() else []
                    resolved: list[str] = []
                    for part in [*base, *target.split("/")] if not target.startswith("/") else ["/"]:
                        if part == "/":
                            resolved = ["/"]
                            break
                        if part in ("", "."):
                            continue
                        if part == "..":
                            if not resolved:
                                resolved = [".."]
                                break
                            resolved.pop()
                        else:
                            resolved.append(part)
                    if resolved[:1] in (["/"], [".."]):
                        raise ValidationError(
                            f"{name!r}: links must point inside the archive's files (to {target!r})."
                        )
                path = "/".join(parts)
                for state in state_paths:
                    if path.startswith(state + "/"):
                        raise ValidationError(
                            f"{name!r} is under the persistent path {state}, which the app's persistent "
                            f"directory covers in every instance: leave {state}/ out of the archive."
                        )
                    if (path == state or state.startswith(path + "/")) and not member.isdir():
                        raise ValidationError(
                            f"{name!r} is not a directory, but the persistent path {state} is bound there: "
                            "leave it out of the archive."
                        )
                if member.isfile():
                    files += 1
            return files
    except tarfile.TarError as exc:
        raise ValidationError(f"Not a readable tar archive (plain, gzip, bzip2 or xz): {exc}") from exc
    finally:
        fileobj.seek(0)
