"""Where the portal's URL and the user's token are kept: one JSON file only its owner can read,
overridden by SLIPWAY_URL / SLIPWAY_TOKEN (CI jobs get the token from their secret store and
never write it to disk)."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from slipway_cli.errors import AUTH, FAILED, USAGE, CliError

URL_VARIABLE = "SLIPWAY_URL"
TOKEN_VARIABLE = "SLIPWAY_TOKEN"  # noqa: S105 - the variable's name, not a token


@dataclass(frozen=True)
class Credentials:
    url: str
    token: str
    # Which of the two came from the environment: a refused token is then fixed there, not by
    # logging in again.
    token_from_env: bool = False


def config_dir() -> Path:
    # The XDG spec says a relative XDG_CONFIG_HOME is invalid and must be ignored.
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
    return base / "slipway"


def config_path() -> Path:
    return config_dir() / "config.json"


def normalize_url(raw: str) -> str:
    """The portal's base URL: scheme and host (and a path prefix if the portal is served under
    one), without the API's own path a user may have pasted."""
    url = raw.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CliError(f"{raw!r} is not a portal URL; give it as https://portal.example.com", USAGE)
    if parts.query or parts.fragment:
        raise CliError(f"{raw!r}: give the portal's address without ?query or #fragment", USAGE)
    for suffix in ("/api/v1", "/api", "/account/token"):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
            break
    return url


def _read() -> dict[str, str]:
    path = config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CliError(f"Cannot read {path}: {exc.strerror}", FAILED) from None
    try:
        data = json.loads(text)
    except ValueError:
        raise CliError(f"{path} is not valid JSON; log in again with `slipway login URL`.", AUTH) from None
    if not isinstance(data, dict):
        raise CliError(f"{path} is not a slipway config; log in again with `slipway login URL`.", AUTH)
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def loosely_readable() -> Path | None:
    """The config file if others than its owner may read it (the token would be theirs too)."""
    path = config_path()
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    return path if mode & (stat.S_IRWXG | stat.S_IRWXO) else None


def credentials() -> Credentials:
    """The URL and token to use; the environment wins over the file, each on its own."""
    stored = _read()
    env_url = os.environ.get(URL_VARIABLE, "").strip()
    env_token = os.environ.get(TOKEN_VARIABLE, "").strip()
    url = normalize_url(env_url) if env_url else stored.get("url", "")
    token = env_token or stored.get("token", "")
    if not url or not token:
        missing = "no portal URL" if not url else "no token"
        raise CliError(
            f"Not logged in ({missing}): run `slipway login URL`, or set {URL_VARIABLE} and {TOKEN_VARIABLE}.",
            AUTH,
        )
    return Credentials(url=url, token=token, token_from_env=bool(env_token))


def save(url: str, token: str) -> Path:
    """Write the file atomically (a crash leaves the old file or the new one, never half of
    one), created 0600 from the start so the token is never readable by others, even briefly."""
    directory = config_dir()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode is not applied to a directory that already exists (another tool may
        # have made it 0755).
        os.chmod(directory, 0o700)
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".config.", suffix=".tmp")
    except OSError as exc:
        raise CliError(f"Cannot write to {directory}: {exc.strerror}", FAILED) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"url": url, "token": token}, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, config_path())
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise CliError(f"Cannot write {config_path()}: {exc.strerror}", FAILED) from None
    # The rename is durable only once the directory entry is on disk.
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return config_path()


def forget() -> str | None:
    """Remove the stored token; the URL it was for, or None if there was none."""
    stored = _read()
    try:
        config_path().unlink()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CliError(f"Cannot remove {config_path()}: {exc.strerror}", FAILED) from None
    return stored.get("url") or ""
