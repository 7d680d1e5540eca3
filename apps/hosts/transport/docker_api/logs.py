"""A container's logs as Docker keeps them, with stdout and stderr told apart.

docker-py's own `logs()` merges the two streams; the Engine API sends them multiplexed (for a
container without a TTY, as every instance is): frames of an 8-byte header (stream 1 = stdout,
2 = stderr, then the payload's length) and the payload. The frames are passed on as they come,
parsed by `FrameReader`, so a download of everything Docker has never sits whole in memory."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from docker.client import DockerClient
from docker.errors import NotFound

from apps.hosts.transport import HostError
from apps.hosts.transport.docker_api.client import translate

STDOUT, STDERR = 1, 2  # the stream byte of a frame's header
CHUNK = 64 * 1024


@dataclass(frozen=True)
class LogQuery:
    tail: int | None = None  # the last N lines; None: everything Docker has
    # Unix time; only lines written from then on. A Decimal keeps Docker's nanoseconds exactly
    # (a float near 1.8e9 is only good to about 0.24 µs, enough to show a line twice).
    since: float | Decimal | None = None
    until: float | None = None  # unix time; only lines written before it
    timestamps: bool = False  # each line prefixed with Docker's RFC 3339 time and a space


class NoSuchContainer(HostError):
    """The container is gone (removed, or never made)."""


def container_logs(
    client: DockerClient, name: str, where: str, query: LogQuery
) -> Iterator[tuple[str, bytes]]:
    """("stdout" or "stderr", payload) frames of the container's logs, oldest first, as Docker
    sends them."""
    stream = open_logs(client, name, where, query)
    try:
        yield from stream
    finally:
        stream.close()


def open_logs(
    client: DockerClient, name: str, where: str, query: LogQuery, follow: bool = False
) -> LogStream:
    """The logs request, made now (errors are raised here). With `follow`, Docker goes on
    sending lines as the container writes them, with no deadline, until `close()`."""
    api = client.api
    params: dict[str, object] = {
        "stdout": 1,
        "stderr": 1,
        "timestamps": int(query.timestamps),
        "tail": "all" if query.tail is None else str(query.tail),
        "follow": int(follow),
    }
    if query.since is not None:
        params["since"] = f"{query.since:.9f}"
    if query.until is not None:
        params["until"] = f"{query.until:.9f}"
    try:
        # A followed log may be quiet for hours: no read deadline (close() ends it).
        extra = {"timeout": None} if follow else {}
        response = api._get(api._url("/containers/{0}/logs", name), params=params, stream=True, **extra)
        api._raise_for_status(response)
    except NotFound:
        raise NoSuchContainer(f"{where}: no container {name}") from None
    except Exception as exc:
        raise translate(exc, where) from exc
    return LogStream(response, where)


class LogStream:
    """An open logs response: iterate for its frames; `close()` (from any thread) ends it, and
    a reader waiting for the next line then sees the end."""

    def __init__(self, response: Any, where: str) -> None:
        self.response = response
        self.where = where
        self.closed = False

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        for frames in self.batches():
            yield from frames

    def batches(self) -> Iterator[list[tuple[str, bytes]]]:
        """The frames of each read from the host, as it comes: a follower passes them on
        together, and knows that what it holds is all there is for now."""
        reader = FrameReader()
        try:
            for chunk in self._chunks():
                yield list(reader.feed(chunk))
        except Exception as exc:
            if self.closed:
                return  # closed on purpose while a read waited
            raise translate(exc, self.where) from exc
        yield list(reader.end())

    def _chunks(self) -> Iterator[bytes]:
        # What has arrived, as soon as it has: a followed log's new line must not wait for
        # 64 KiB more behind it (iter_content fills its chunk before it yields).
        raw = self.response.raw
        if raw.chunked:
            yield from raw.read_chunked(CHUNK, decode_content=False)
            return
        while chunk := raw.read1(CHUNK):
            yield chunk

    def close(self) -> None:
        self.closed = True
        self.response.close()


class FrameReader:
    """Docker's multiplexed stream, fed in chunks of any size. A stream that does not start
    with a frame header (a container with a TTY) is passed on as stdout."""

    HEADER = struct.Struct(">BxxxL")

    def __init__(self) -> None:
        self.buffer = b""
        self.raw: bool | None = None

    def feed(self, data: bytes) -> Iterator[tuple[str, bytes]]:
        if self.raw is None and data:
            self.raw = data[0] not in (0, STDOUT, STDERR)
        if self.raw:
            yield "stdout", data
            return
        buffer = self.buffer + data if self.buffer else data
        at = 0  # frames are read by offset and the rest kept once: no copy per frame
        while len(buffer) - at >= self.HEADER.size:
            stream, size = self.HEADER.unpack_from(buffer, at)
            end = at + self.HEADER.size + size
            if len(buffer) < end:
                break
            yield ("stderr" if stream == STDERR else "stdout"), buffer[at + self.HEADER.size : end]
            at = end
        self.buffer = buffer[at:]

    def end(self) -> Iterator[tuple[str, bytes]]:
        if self.buffer:  # a cut frame: what arrived of it
            yield "stdout", self.buffer[self.HEADER.size :] if not self.raw else self.buffer
            self.buffer = b""
