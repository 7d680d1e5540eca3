"""Processes in containers through the Docker API's exec: a command run to its end with its
output passed on as it comes, and an interactive shell on a TTY (the browser terminal)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import socket as socket_module
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from docker.client import DockerClient
from docker.errors import APIError

from apps.hosts.transport import ContainerFailed, HostError
from apps.hosts.transport.docker_api.client import _retry_stale, translate

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ExecResult:
    exit_code: int | None
    timed_out: bool
    truncated: bool
    bytes_out: int
    duration: float


def exec_run(
    client: DockerClient,
    container: str,
    argv: list[str],
    where: str,
    *,
    user: str = "",
    workdir: str = "",
    timeout: float,
    max_output: int,
    on_output: Callable[[bytes], None],
    kill: Callable[[int, str], None],
) -> ExecResult:
    """Run argv in the running container through the Docker API's exec (no shell), passing
    its output (stdout and stderr as they come) to `on_output`, at most `max_output` bytes; the
    rest is counted, not kept. Past `timeout` the process is killed in the container (`kill`
    gets its host pid and the container id) and the result says so."""
    started = time.monotonic()
    exec_id = exec_create(client, container, argv, where, stdin=False, tty=False, user=user, workdir=workdir)
    hijacked = _Hijacked(exec_start(client, exec_id, where, tty=False))
    chunks: queue.Queue[bytes | Exception | None] = queue.Queue()

    def pump() -> None:
        try:
            for chunk in hijacked.frames():
                chunks.put(chunk)
        except Exception as exc:  # handed to the caller's thread
            chunks.put(exc)
        finally:
            chunks.put(None)
            hijacked.shut()

    threading.Thread(target=pump, name=f"exec-{container}", daemon=True).start()
    deadline = started + timeout
    timed_out = truncated = False
    kept = total = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            if timed_out:
                break  # killed, and still no end of stream after the grace: give up on it
            timed_out = True
            try:
                info = exec_inspect(client, exec_id, where)
                kill(int(info.get("Pid") or 0), str(info.get("ContainerID") or ""))
            except Exception as exc:  # the result still says it timed out
                log.warning("could not kill exec %s in %s: %s", exec_id[:12], container, exc)
            deadline = time.monotonic() + 5
            continue
        try:
            item = chunks.get(timeout=min(left, 0.5))
        except queue.Empty:
            continue
        if item is None:
            break
        if isinstance(item, Exception):
            raise translate(item, where) from item
        total += len(item)
        if kept < max_output:
            part = item[: max_output - kept]
            kept += len(part)
            on_output(part)
        if total > kept:
            truncated = True
    return ExecResult(
        # Its output has ended, so it has (or is about to): a loaded daemon takes seconds to say.
        exit_code=exit_code_of(client, exec_id, where, wait=10.0),
        timed_out=timed_out,
        truncated=truncated,
        bytes_out=total,
        duration=time.monotonic() - started,
    )


def exit_code_of(client: DockerClient, exec_id: str, where: str, wait: float = 2.0) -> int | None:
    """The exec'd process's exit code once it has ended: Docker may need a moment after the
    end of its output stream to record it (until then it says running, with no code). None if
    it still runs after `wait` seconds."""
    started = time.monotonic()
    deadline = started + wait
    while True:
        try:
            info = exec_inspect(client, exec_id, where)
        except HostError as exc:
            # The output has all arrived; a hiccup asking for the code must not lose the result.
            if time.monotonic() >= deadline:
                log.warning("exec %s: cannot read its exit code: %s", exec_id[:12], exc)
                return None
            time.sleep(0.2)
            continue
        code = info.get("ExitCode")
        if not info.get("Running") and code is not None:
            if time.monotonic() - started > 1:
                log.info(
                    "exec %s: its exit code came %.1f s after its output ended",
                    exec_id[:12],
                    time.monotonic() - started,
                )
            return int(code)
        if time.monotonic() >= deadline:
            log.warning(
                "exec %s: no exit code %.0f s after its output ended (running: %s)",
                exec_id[:12],
                wait,
                info.get("Running"),
            )
            return None
        time.sleep(0.05)


# --- interactive exec on a TTY (the browser terminal) -----------------------------------------

TERMINAL_ENV = {"TERM": "xterm-256color"}


@_retry_stale
def path_exists(client: DockerClient, container: str, path: str, where: str) -> bool:
    """Whether `path` exists in the container: a HEAD of its archive endpoint, which stats the
    path (symlinked parents followed) without copying anything."""
    api = client.api
    try:
        response = api.head(api._url("/containers/{0}/archive", container), params={"path": path})
    except Exception as exc:
        raise translate(exc, where) from exc
    if response.status_code == 404:
        return False
    try:
        api._raise_for_status(response)
    except Exception as exc:
        raise translate(exc, where) from exc
    return True


def exec_create(
    client: DockerClient,
    container: str,
    cmd: list[str],
    where: str,
    *,
    stdin: bool = True,
    tty: bool = True,
    user: str = "",
    workdir: str = "",
    environment: dict[str, str] | None = None,
) -> str:
    try:
        created = client.api.exec_create(
            container,
            cmd,
            stdout=True,
            stderr=True,
            stdin=stdin,
            tty=tty,
            user=user,
            workdir=workdir or None,
            environment=environment,
        )
    except APIError as exc:
        raise ContainerFailed(
            f"{where}: Docker refused to start {cmd[0]} in {container}: {exc.explanation or exc}"
        ) from exc
    except Exception as exc:
        raise translate(exc, where) from exc
    return str(created["Id"])


def exec_start(
    client: DockerClient, exec_id: str, where: str, *, tty: bool = True, socket: bool = True
) -> Any:
    """Start the exec and take over its HTTP connection (Docker answers 101 and the connection
    becomes the process's stdin/stdout). docker-py hands back the bare transport underneath:
    over SSH the paramiko Channel of the pooled connection (a direct-streamlocal channel to the
    host's Docker socket), locally the SocketIO of the unix socket. Either carries the
    requests response as `_response`, whose header reader may already hold the first bytes
    of the stream; TtyExec takes them from there."""
    try:
        return client.api.exec_start(exec_id, tty=tty, socket=socket)
    except APIError as exc:
        raise ContainerFailed(
            f"{where}: Docker refused to start exec {exec_id[:12]}: {exc.explanation or exc}"
        ) from exc
    except Exception as exc:
        raise translate(exc, where) from exc


def exec_resize(client: DockerClient, exec_id: str, where: str, *, height: int, width: int) -> None:
    try:
        client.api.exec_resize(exec_id, height=height, width=width)
    except Exception as exc:
        raise translate(exc, where) from exc


@_retry_stale  # read-only: a pooled connection that died meanwhile is simply tried again
def exec_inspect(client: DockerClient, exec_id: str, where: str) -> dict[str, Any]:
    try:
        return dict(client.api.exec_inspect(exec_id))
    except Exception as exc:
        raise translate(exc, where) from exc


class _Hijacked:
    """The two directions of an exec's hijacked connection (what `exec_start` hands back).
    http.client read Docker's answer through a buffered reader, which may already hold the
    first bytes of the stream (a short command's whole output, or a shell's first prompt):
    `read` hands those out first. Reading the bare transport alone, as docker-py's own stream
    does (docker/docker-py#3332), loses them."""

    def __init__(self, raw: Any) -> None:
        self.response = getattr(raw, "_response", None)
        header_reader = self.response.raw._fp.fp if self.response is not None else None
        if hasattr(raw, "get_transport"):  # a paramiko Channel (the ssh transport)
            # Read through a buffered ChannelFile: what it read past the headers is in its buffer.
            self._pending = bytes(getattr(header_reader, "_rbuffer", b""))
            if header_reader is not None:
                header_reader._rbuffer = b""
            raw.settimeout(None)
            self._recv: Callable[[int], bytes] = raw.recv
            self.send: Callable[[bytes], None] = raw.sendall
            self.shut: Callable[[], None] = raw.close
        else:  # the SocketIO of a unix socket (the local transport)
            sock = raw._sock
            sock.settimeout(None)
            self._pending = b""
            # The BufferedReader that read the headers hands out its read-ahead first.
            self._recv = header_reader.read1 if header_reader is not None else sock.recv
            self.send = sock.sendall

            def shut() -> None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket_module.SHUT_RDWR)

            self.shut = shut

    def read(self, size: int = 65536) -> bytes:
        """Up to `size` bytes as they come; b"" at the end of the stream."""
        if self._pending:
            chunk, self._pending = self._pending[:size], self._pending[size:]
            return chunk
        try:
            return bytes(self._recv(size) or b"")
        except (OSError, EOFError, ValueError):
            return b""  # closed under us: the end of the stream

    def frames(self) -> Iterator[bytes]:
        """The payloads of a stream without a TTY, where Docker multiplexes stdout and stderr
        in frames: one byte of stream, three of padding, four of big-endian length."""
        buffer = b""
        while chunk := self.read():
            buffer += chunk
            while len(buffer) >= 8:
                size = int.from_bytes(buffer[4:8], "big")
                if len(buffer) < 8 + size:
                    break
                payload, buffer = buffer[8 : 8 + size], buffer[8 + size :]
                if payload:
                    yield payload


class TtyExec:
    """A process on a TTY in a container: read its output, type into it, resize it, end it.

    `read` blocks until output comes and returns b"" once the process has exited (or the
    stream was closed); it is meant for one reader thread, while another thread writes,
    resizes or closes. Closing kills the process and its children (`kill` gets the host pid
    and the container id): Docker's API cannot stop an exec, and a process whose stream is
    closed keeps running."""

    def __init__(
        self,
        client: DockerClient,
        exec_id: str,
        raw: Any,
        where: str,
        kill: Callable[[int, str], None],
    ) -> None:
        self.client = client
        self.exec_id = exec_id
        self.where = where
        self._kill = kill
        self._closed = False
        self._lock = threading.Lock()
        self._io = _Hijacked(raw)
        self._response = self._io.response
        self._send = self._io.send
        self._shut = self._io.shut

    def read(self, size: int = 65536) -> bytes:
        return self._io.read(size)

    def write(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            self._send(data)
        except (OSError, EOFError) as exc:
            raise translate(exc, self.where) from exc

    def resize(self, cols: int, rows: int) -> None:
        """Resize the TTY. Right after the start the process may not be running yet, and Docker
        refuses: tried again for up to a second, like the docker CLI does."""
        for attempt in range(10):
            try:
                exec_resize(self.client, self.exec_id, self.where, height=rows, width=cols)
                return
            except HostError:
                if attempt == 9 or self._closed:
                    raise
                time.sleep(0.1)

    def inspect(self) -> dict[str, Any]:
        return exec_inspect(self.client, self.exec_id, self.where)

    def exit_code(self, wait: float = 2.0) -> int | None:
        return exit_code_of(self.client, self.exec_id, self.where, wait)

    def close(self) -> None:
        """End the process (and what it started) if it still runs, then close the stream."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            info = self.inspect()
            if info.get("Running") and info.get("Pid"):
                self._kill(int(info["Pid"]), str(info.get("ContainerID") or ""))
        except Exception as exc:  # the stream is closed all the same
            log.warning("could not end exec %s (%s): %s", self.exec_id[:12], self.where, exc)
        finally:
            with contextlib.suppress(Exception):
                self._shut()
            if self._response is not None:
                with contextlib.suppress(Exception):
                    self._response.close()


def tty_open(
    client: DockerClient,
    container: str,
    where: str,
    *,
    kill: Callable[[int, str], None],
    user: str = "",
    shells: tuple[str, ...] = ("/bin/bash", "/bin/sh"),
) -> TtyExec:
    """Start the first of `shells` the container has (the last one if none is found) on a TTY,
    with TERM=xterm-256color."""
    shell = next((s for s in shells[:-1] if path_exists(client, container, s, where)), shells[-1])
    exec_id = exec_create(client, container, [shell], where, user=user, environment=TERMINAL_ENV)
    raw = exec_start(client, exec_id, where)
    return TtyExec(client, exec_id, raw, where, kill)
