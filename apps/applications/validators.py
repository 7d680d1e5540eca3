"""Checks on what users send that ends up in a container spec. Each message says what is
wrong and what is allowed."""

from __future__ import annotations

import posixpath
import re
from typing import Any

from django.core.exceptions import ValidationError

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_ENV_VALUE = 4096
MAX_ENV_VARS = 100
MAX_ARGV_ITEMS = 64
MAX_ARGV_BYTES = 8192
# Set by the portal for every instance; an app may not override them.
RESERVED_ENV_PREFIX = "SLIPWAY_"


def validate_env(value: Any) -> None:
    if not isinstance(value, dict):
        raise ValidationError('Environment must be an object of NAME: "value" pairs.')
    if len(value) > MAX_ENV_VARS:
        raise ValidationError(f"At most {MAX_ENV_VARS} environment variables (got {len(value)}).")
    for name, val in value.items():
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise ValidationError(
                f"Environment name {name!r} is not allowed: use letters, digits and '_', "
                "not starting with a digit, at most 128 characters."
            )
        if name.startswith(RESERVED_ENV_PREFIX):
            raise ValidationError(
                f"Environment name {name!r}: names starting with {RESERVED_ENV_PREFIX} are set by Slipway."
            )
        if not isinstance(val, str):
            raise ValidationError(f"Environment value of {name} must be a string (got {type(val).__name__}).")
        if "\x00" in val:
            raise ValidationError(f"Environment value of {name} contains a NUL byte, which Docker refuses.")
        if len(val) > MAX_ENV_VALUE:
            raise ValidationError(
                f"Environment value of {name} is {len(val)} characters; at most {MAX_ENV_VALUE}."
            )


def validate_argv(value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(part, str) for part in value):
        raise ValidationError('A command is a list of strings (argv), for example ["httpd", "-f"].')
    if len(value) > MAX_ARGV_ITEMS:
        raise ValidationError(f"A command has at most {MAX_ARGV_ITEMS} arguments (got {len(value)}).")
    if any("\x00" in part for part in value):
        raise ValidationError("A command argument contains a NUL byte, which no program can receive.")
    if sum(len(part.encode()) for part in value) > MAX_ARGV_BYTES:
        raise ValidationError(f"A command is at most {MAX_ARGV_BYTES} bytes long.")
    if value and not value[0]:
        raise ValidationError("The program (first argument) of a command cannot be empty.")


def parse_env_text(text: str) -> dict[str, str]:
    """`NAME=value` lines (the form's textarea) to a dict; blank lines and # comments skipped."""
    env: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if "=" not in stripped:
            raise ValidationError(f"Line {number}: expected NAME=value, got {stripped[:40]!r}.")
        name, val = line.split("=", 1)
        name = name.strip()
        if name in env:
            raise ValidationError(f"Line {number}: {name} is set twice.")
        env[name] = val
    validate_env(env)
    return env


# Where an app's volume or working directory may not be: the container's own system paths.
SYSTEM_PATHS = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var/run",  # a link to /run in most images
)


def validate_container_path(value: Any) -> None:
    """An absolute, normalised path inside the container, outside its system directories."""
    if value in ("", None):
        return
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValidationError(f"{value!r}: use an absolute path such as /srv/app.")
    if "\0" in value or len(value) > 200:
        raise ValidationError("The path is too long or holds a NUL byte (at most 200 characters).")
    if posixpath.normpath(value) != value or "//" in value:
        raise ValidationError(f"{value!r} is not in plain form: no '..', '.', '//' or trailing '/'.")
    if value == "/" or any(value == p or value.startswith(p + "/") for p in SYSTEM_PATHS):
        raise ValidationError(
            f"{value} is a system directory of the container; use one under /srv, /opt, /var/www, /home or /app."
        )


def validate_health_path(value: Any) -> None:
    """The path part of a URL an HTTP health check GETs: absolute, printable, no spaces."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValidationError(f"{value!r}: the health check path starts with '/', e.g. /healthz.")
    if len(value) > 200 or any(c.isspace() or not c.isprintable() for c in value) or "#" in value:
        raise ValidationError(
            "The health check path is at most 200 characters, without spaces, control characters or '#'."
        )


def validate_state_paths(value: Any) -> None:
    """Relative paths inside the app's files, each bound from its persistent directory."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValidationError("Persistent paths are a list of paths inside the app's files, e.g. logs.")
    if len(value) > 20:
        raise ValidationError(f"At most 20 persistent paths (got {len(value)}).")
    for item in value:
        clean = posixpath.normpath(item) if item else ""
        if not item or item.startswith("/") or clean != item or clean.split("/")[0] in ("..", "."):
            raise ValidationError(
                f"{item!r}: a persistent path is relative to the app's files, in plain form (like logs or "
                "data/uploads), without '..' or a leading '/'."
            )
        if item.split("/")[0] in ("releases", "state") or "\0" in item or len(item) > 200:
            raise ValidationError(f"{item!r} cannot be a persistent path.")
    if len(set(value)) != len(value):
        raise ValidationError("A persistent path is listed twice.")
    for item in value:
        for other in value:
            if other != item and other.startswith(item + "/"):
                raise ValidationError(f"{other!r} is inside {item!r}: list only {item!r}.")
