"""A short command's output arrives in the same read as Docker's answer to "start the exec".
http.client reads that answer through a buffered reader, so the output sits in its buffer, not
in the connection: reading the connection alone (as docker-py's own exec stream does,
docker/docker-py#3332) shows nothing. A daemon on a unix socket sends both in one write, which
a real one does only now and then, under load."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from apps.hosts.transport import docker_api
from apps.hosts.transport.docker_api.exec import _Hijacked

ANSWER = (
    b"HTTP/1.1 101 UPGRADED\r\n"
    b"Content-Type: application/vnd.docker.raw-stream\r\n"
    b"Connection: Upgrade\r\n"
    b"Upgrade: tcp\r\n\r\n"
)


def _frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[str]:
    """A Docker socket that answers one exec start with the answer and all output at once."""
    path = str(tmp_path / "docker.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)  # the request
            conn.sendall(ANSWER + _frame(1, b"hello\n") + _frame(2, b"warning\n") + _frame(1, b"bye\n"))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path
    thread.join(timeout=5)
    server.close()


def test_output_that_came_with_dockers_answer_is_read_from_the_buffer(daemon: str) -> None:
    client = docker_api.client_for(transport="local", socket_path=daemon)
    raw = docker_api.exec_start(client, "0123456789ab", "test", tty=False)
    assert list(_Hijacked(raw).frames()) == [b"hello\n", b"warning\n", b"bye\n"]
