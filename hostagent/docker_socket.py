"""A minimal HTTP client for the Docker Engine API over its unix socket (stdlib only)."""

from __future__ import annotations

import http.client
import json
import os
import socket
from typing import Any

from hostagent.protocol import DEFAULT_DOCKER_HOST, DOCKER_HOST_ENV


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def socket_path() -> str:
    url = os.environ.get(DOCKER_HOST_ENV) or DEFAULT_DOCKER_HOST
    if not url.startswith("unix://"):
        raise ValueError(f"{DOCKER_HOST_ENV}={url!r}: only unix:// sockets are supported")
    return url[len("unix://") :]


def get_json(path: str, timeout: float = 5.0) -> Any:
    return json.loads(get_bytes(path, timeout))


def get_json_lines(path: str, timeout: float = 5.0) -> list[Any]:
    """A streamed answer (/events with an `until`): one JSON object per line."""
    return [json.loads(line) for line in get_bytes(path, timeout).splitlines() if line.strip()]


def get_bytes(path: str, timeout: float = 5.0) -> bytes:
    where = socket_path()
    conn = UnixHTTPConnection(where, timeout)
    try:
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
        except OSError as exc:
            raise OSError(f"Docker daemon unreachable at {where}: {exc.strerror or exc}") from exc
        if response.status != 200:
            raise OSError(f"docker API {path}: HTTP {response.status}")
        return body
    finally:
        conn.close()
