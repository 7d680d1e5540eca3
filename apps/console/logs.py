"""An instance's logs: what its app printed, as Docker keeps it (rotated, see
CONTAINER_LOG_MAX_SIZE), read from the instance's host with stdout and stderr told apart.

Lines are passed on as they are read, never gathered whole: a download of everything Docker has
(up to size x files per container) streams through. What a page shows is made safe here: ANSI
escapes and other control characters are taken out, invalid UTF-8 is replaced, and a line past
LOG_DISPLAY_LINE_MAX characters is cut with a note of how much more it had (the API and the
download give every line whole)."""

from __future__ import annotations

import heapq
import itertools
import queue
import re
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

from apps.applications import selectors
from apps.console.terminal import Close
from apps.hosts import gateway
from apps.hosts.gateway import LogQuery
from apps.hosts.transport import HostError
from apps.instances.models import Instance

STREAMS = ("both", "stdout", "stderr")
# CSI sequences (colours, cursor moves), OSC sequences (titles, links) and lone escapes.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class LogLine:
    stream: str  # "stdout" or "stderr"
    time: str  # Docker's RFC 3339 time; "" when not asked for
    text: str  # decoded; invalid UTF-8 replaced

    def display(self) -> str:
        return for_display(self.text)

    def as_dict(self) -> dict[str, str]:
        return {"stream": self.stream, "time": self.time, "text": self.text}


def is_yes(value: str) -> bool:
    """A yes/no query parameter's yes (1, true, yes, on)."""
    return value.strip().lower() in ("1", "true", "yes", "on")


def for_display(text: str, limit: int | None = None) -> str:
    limit = settings.LOG_DISPLAY_LINE_MAX if limit is None else limit
    clean = _CONTROL.sub("", _ANSI.sub("", text.replace("\t", "    ")))
    if len(clean) > limit:
        return f"{clean[:limit]} … ({len(clean) - limit:,} more characters; the download has the whole line)"
    return clean


def parse_query(params: dict[str, str], *, allow_all: bool = True) -> tuple[LogQuery, str]:
    """The query string of a logs request: (query, stream). Every bad value is a
    ValidationError that says what is allowed."""
    errors: dict[str, str] = {}
    most = settings.LOG_TAIL_MAX
    tail_text = (params.get("tail") or str(settings.LOG_TAIL_DEFAULT)).strip()
    tail: int | None = None
    if tail_text == "all" and allow_all:
        tail = None
    elif re.fullmatch(r"[0-9]{1,9}", tail_text) and 1 <= int(tail_text) <= most:
        tail = int(tail_text)
    else:
        allowed = f"a number of lines from 1 to {most}" + (', or "all"' if allow_all else "")
        errors["tail"] = f"{tail_text!r} is not {allowed}."
    since: float | None = None
    since_text = (params.get("since") or "").strip()
    if since_text:
        try:
            since = float(since_text)
        except ValueError:
            try:
                since = datetime.fromisoformat(since_text.replace("Z", "+00:00")).timestamp()
            except ValueError:
                errors["since"] = (
                    f"{since_text!r} is neither seconds since 1970 nor an ISO 8601 time (2026-12-04T10:00:00Z)."
                )
    flag = (params.get("timestamps") or "0").strip().lower()
    if flag not in ("0", "1", "true", "false", "on", "off", "yes", "no", ""):
        errors["timestamps"] = f"{flag!r} is not a yes or no: use 1 or 0."
    stream = (params.get("stream") or "both").strip()
    if stream not in STREAMS:
        errors["stream"] = f"{stream!r} is not one of {', '.join(STREAMS)}."
    if errors:
        raise ValidationError(errors)
    query = LogQuery(tail=tail, since=since, timestamps=is_yes(flag))
    return query, stream


def read(instance: Instance, query: LogQuery, stream: str = "both") -> Iterator[LogLine]:
    """The instance's log lines, oldest first. Raises ValidationError before the first line if
    the host or the container cannot be read (the caller answers with an error, not half a page)."""
    if not instance.container_id:
        raise ValidationError("The instance has no container yet, so nothing has been logged.")
    frames = gateway.container_logs(instance.host, instance.container_id, query)
    try:
        first = next(frames, None)  # the request is made here: errors surface before any output
    except HostError as exc:
        raise ValidationError(f"Cannot read the logs of {instance.container_name}: {exc}") from exc
    if first is None:
        return iter(())
    return _lines(itertools.chain([first], frames), query.timestamps, stream)


def follow(
    instance: Instance, query: LogQuery, stream: str = "both"
) -> tuple[gateway.LogStream, Iterator[list[LogLine]]]:
    """The last lines, then the new ones as the app writes them, in batches as they arrive,
    until the returned stream is closed (from any thread: the iterator then ends). Iterating
    blocks while the app is quiet."""
    if not instance.container_id:
        raise ValidationError("The instance has no container yet, so nothing has been logged.")
    try:
        handle = gateway.container_logs_follow(instance.host, instance.container_id, query)
    except HostError as exc:
        raise ValidationError(f"Cannot read the logs of {instance.container_name}: {exc}") from exc
    return handle, _batches(handle, query.timestamps, stream)


def kept_lines(frames: Iterable[tuple[str, bytes]]) -> list[list[str]]:
    """Frames read with timestamps, as the portal keeps them: [stream, time, text] per line,
    each line cut to LOG_DISPLAY_LINE_MAX characters (what is kept is for reading)."""
    splitter = LineSplitter(True, "both")
    lines = splitter.feed(frames) + splitter.end()
    most = settings.LOG_DISPLAY_LINE_MAX
    return [[line.stream, line.time, line.text[:most]] for line in lines]


def last_lines(host: Any, container_id: str, *, until: float | None = None) -> list[list[str]]:
    """The last EVENTS_KEEP_LINES lines a container printed (before `until`), to keep: a
    container that cannot be read gives one line saying why."""
    if not settings.EVENTS_KEEP_LINES:
        return []
    query = LogQuery(tail=settings.EVENTS_KEEP_LINES, until=until, timestamps=True)
    try:
        return kept_lines(gateway.container_logs(host, container_id, query))
    except HostError as exc:
        return [["stderr", "", f"[slipway: the last lines could not be read: {exc}]"]]


def _batches(handle: gateway.LogStream, timestamps: bool, stream: str) -> Iterator[list[LogLine]]:
    splitter = LineSplitter(timestamps, stream)
    for frames in handle.batches():
        yield splitter.feed(frames)
    yield splitter.end()


def app_read(app: Any, query: LogQuery, stream: str = "both") -> list[tuple[str, LogLine]]:
    """The app's instances' last lines merged by Docker's time: (instance name, line), oldest
    first, at most `query.tail` in all. The instances are read at once; one that cannot be read
    gives one line saying why, and the others still show."""
    rows = Instance.objects.filter(app=app).select_related("host", "app").order_by("slot")
    instances = [i for i in rows if i.container_id]
    asked = LogQuery(tail=query.tail, since=query.since, timestamps=True)  # times to merge by

    def one(instance: Instance) -> list[tuple[str, str, LogLine]]:
        try:
            return [
                (_sortable(line.time), instance.container_name, line)
                for line in read(instance, asked, stream)
            ]
        except (ValidationError, HostError) as exc:
            text = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
            return [("", instance.container_name, LogLine("stderr", "", f"[slipway: {text}]"))]

    with ThreadPoolExecutor(max_workers=max(1, min(len(instances), 8))) as pool:
        per_instance = list(pool.map(one, instances))
    merged = [(name, line) for _, name, line in heapq.merge(*per_instance, key=lambda item: item[0])]
    return merged[-query.tail :] if query.tail else merged


def _sortable(time: str) -> str:
    """Docker's RFC 3339 time with its fraction padded to 9 digits: Docker drops trailing zeros
    ("…01.9365Z"), which would sort after "…01.936555626Z" as text."""
    if not time:
        return time
    head, _, rest = time.removesuffix("Z").partition(".")
    return f"{head}.{rest:0<9}Z"


def epoch(time: str) -> float:
    """Docker's RFC 3339 time as seconds since 1970 (to the microsecond)."""
    head, _, rest = _sortable(time).removesuffix("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{rest[:6]}+00:00").timestamp()


def just_after(time: str) -> Decimal:
    """One nanosecond after Docker's RFC 3339 time, exactly: Docker's `since` keeps a line
    written at or after it, so a follow from here starts with the next line."""
    head, _, rest = _sortable(time).removesuffix("Z").partition(".")
    seconds = int(datetime.fromisoformat(f"{head}+00:00").timestamp())
    return Decimal(seconds) + (Decimal(int(rest[:9])) + 1) / Decimal(10**9)


class FollowRefused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def follow_target(user: Any, instance_pk: int, params: dict[str, str]) -> tuple[Instance, LogQuery, str]:
    """Who may follow which instance's log, and how: the app's team and ops (another team's
    instance is "not found", as on the page)."""
    if not user.is_authenticated:
        raise FollowRefused(Close.SIGNED_OUT, "Sign in to follow the logs.")
    instance = (
        Instance.objects.filter(pk=instance_pk, app__in=selectors.apps_visible_to(user))
        .select_related("host", "app")
        .first()
    )
    if instance is None:
        raise FollowRefused(Close.NOT_FOUND, "No such instance.")
    return (instance, *_follow_query(params))


def app_follow_target(user: Any, slug: str, params: dict[str, str]) -> tuple[Any, LogQuery, str]:
    """Who may follow which app's merged log (its team and ops; another team's app is "not
    found"), and how."""
    if not user.is_authenticated:
        raise FollowRefused(Close.SIGNED_OUT, "Sign in to follow the logs.")
    app = selectors.apps_visible_to(user).filter(slug=slug).first()
    if app is None:
        raise FollowRefused(Close.NOT_FOUND, "No such app.")
    return (app, *_follow_query(params))


def _follow_query(params: dict[str, str]) -> tuple[LogQuery, str]:
    try:
        return parse_query(params, allow_all=False)
    except ValidationError as exc:
        raise FollowRefused(
            Close.BAD_REQUEST, " ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
        ) from exc


@dataclass
class AppFollow:
    """An app's merged log, followed: the last lines of all its instances merged by time, then
    each instance's new lines as they come, marked with the instance's name."""

    snapshot: list[tuple[str, LogLine]]
    streams: list[gateway.LogStream]
    followed: list[tuple[str, Iterator[list[LogLine]]]]
    refused: list[tuple[str, str]]  # (instance, why) for instances that cannot be followed


def app_follow(app: Any, query: LogQuery, stream: str) -> AppFollow:
    """Each instance is followed from just after its last line in the snapshot (or from the
    moment the snapshot was read, for one that had none), so no line shows twice or goes
    missing between the two."""
    asked_at = time.time()
    snapshot = app_read(app, query, stream)
    last: dict[str, Decimal] = {}
    for name, line in snapshot:
        if line.time:
            last[name] = just_after(line.time)
    followed: list[tuple[str, Iterator[list[LogLine]]]] = []
    streams: list[gateway.LogStream] = []
    refused: list[tuple[str, str]] = []
    rows = Instance.objects.filter(app=app).select_related("host", "app").order_by("slot")
    for instance in [i for i in rows if i.container_id]:
        name = instance.container_name
        since = last.get(name, asked_at)
        try:
            handle, batches = follow(instance, LogQuery(since=since, timestamps=query.timestamps), stream)
        except ValidationError as exc:
            refused.append((name, " ".join(exc.messages)))
            continue
        streams.append(handle)
        followed.append((name, batches))
    return AppFollow(snapshot, streams, followed, refused)


class Merged:
    """Followed logs read by a thread each into one bounded queue: a reader that falls behind
    holds the threads back (and Docker's stream behind them), so nothing piles up in the portal.
    `close()` ends the reading; `next()` gives (label, lines) or (label, error) ends, and None
    once every stream has ended or the merge was closed."""

    def __init__(
        self, followed: list[tuple[str, Iterator[list[LogLine]]]], streams: list[gateway.LogStream]
    ) -> None:
        self.queue: queue.Queue[tuple[str, list[LogLine] | None, str]] = queue.Queue(maxsize=64)
        self.streams = streams
        self.closed = threading.Event()
        self.running = len(followed)
        for label, batches in followed:
            threading.Thread(target=self._read, args=(label, batches), name="log-merge", daemon=True).start()

    def _read(self, label: str, batches: Iterator[list[LogLine]]) -> None:
        why = "the container's log ended (the container was removed)"
        try:
            for lines in batches:
                if lines and not self._put((label, lines, "")):
                    return
        except HostError as exc:
            why = str(exc)
        self._put((label, None, why))

    def _put(self, item: tuple[str, list[LogLine] | None, str]) -> bool:
        while not self.closed.is_set():
            try:
                self.queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    IDLE: tuple[str, list[LogLine] | None, str] = ("", [], "")

    def next(self, wait: float | None = None) -> tuple[str, list[LogLine] | None, str] | None:
        """Blocks (in a worker thread) until something comes; polls so a closed merge ends it.
        With `wait`, gives IDLE (no lines) once that long has passed with nothing: the thread
        calling it is then never held for longer, so a server shutting down while a follower's
        request is cancelled (its `close()` never run) does not wait on that thread forever."""
        deadline = None if wait is None else time.monotonic() + wait
        while self.running and not self.closed.is_set():
            try:
                item = self.queue.get(timeout=0.5 if wait is None else min(0.5, wait))
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    return self.IDLE
                continue
            if item[1] is None:
                self.running -= 1
            return item
        return None

    def close(self) -> None:
        self.closed.set()
        for stream in self.streams:
            stream.close()


class LineSplitter:
    """Frames in, whole lines out; a line's start and end may come in different frames (each
    stream has its own partial line)."""

    def __init__(self, timestamps: bool, stream: str) -> None:
        self.timestamps = timestamps
        self.stream = stream
        self.pending = {"stdout": b"", "stderr": b""}

    def _made(self, name: str, raw: bytes) -> LogLine | None:
        if self.stream != "both" and self.stream != name:
            return None
        text = raw.decode("utf-8", errors="replace")
        time = ""
        if self.timestamps:
            time, _, text = text.partition(" ")
        return LogLine(name, time, text.removesuffix("\r"))

    def feed(self, frames: Iterable[tuple[str, bytes]]) -> list[LogLine]:
        out: list[LogLine] = []
        for kind, payload in frames:
            *complete, self.pending[kind] = (self.pending[kind] + payload).split(b"\n")
            out += [line for raw in complete if (line := self._made(kind, raw)) is not None]
        return out

    def end(self) -> list[LogLine]:
        rest = [self._made(kind, raw) for kind, raw in self.pending.items() if raw]
        self.pending = {"stdout": b"", "stderr": b""}
        return [line for line in rest if line is not None]


def _lines(frames: Iterator[tuple[str, bytes]], timestamps: bool, stream: str) -> Iterator[LogLine]:
    splitter = LineSplitter(timestamps, stream)
    for frame in frames:
        yield from splitter.feed([frame])
    yield from splitter.end()


def as_text(lines: Iterator[LogLine], timestamps: bool) -> Iterator[bytes]:
    """Plain text, one line each (with Docker's time first when asked), in chunks of about
    64 KiB: what the API and the download send."""
    chunk: list[str] = []
    size = 0
    try:
        for line in lines:
            text = f"{line.time} {line.text}\n" if timestamps else f"{line.text}\n"
            chunk.append(text)
            size += len(text)
            if size >= 64 * 1024:
                yield "".join(chunk).encode()
                chunk, size = [], 0
    except HostError as exc:
        # Mid-way the status is sent already: the text itself says it is cut, and why.
        chunk.append(f"[slipway: the logs end here, cut: {exc}]\n")
    if chunk:
        yield "".join(chunk).encode()
