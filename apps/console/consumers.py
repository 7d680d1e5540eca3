"""The browser terminal's websocket: keystrokes in, TTY output out.

From the browser: binary frames (or text frames that are not a resize) are keystrokes; a text
frame {"resize": [cols, rows]} resizes the TTY. To the browser: binary frames of output, and one
last text frame {"end": why, "exit_code": N or null, "code": close code} before the socket
closes.

The TTY is read by a thread of its own (docker-py and paramiko are synchronous) and written by
another, so a shell that does not read its input never holds up the event loop. A watch task
ends the session when it has been idle (no keystrokes) longer than TERMINAL_IDLE_TIMEOUT, open
longer than TERMINAL_MAX_SESSION, or when a check every TERMINAL_RECHECK seconds finds its
user signed out or no longer allowed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import queue
import threading
import time
from typing import Any
from urllib.parse import parse_qsl

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.core.exceptions import ValidationError

from apps.audit.context import acting, socket_address
from apps.audit.models import Source
from apps.console import logs, terminal
from apps.console.terminal import Close, Refused
from apps.hosts import gateway
from apps.hosts.transport import HostError

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
# Output chunks waiting for the browser; when full, the reader stops reading and the SSH
# channel's window stops the shell, instead of memory growing without bound.
OUTPUT_BACKLOG = 64
MAX_COLS_ROWS = 1000


class TerminalConsumer(AsyncWebsocketConsumer):
    tty: gateway.TtyExec | None = None
    audit_pk: int | None = None
    ending = False
    browser_gone = False
    bytes_out = 0
    # Set in connect once the shell runs.
    user_pk: Any
    instance_pk: int
    session_key: str | None
    started: float
    last_input: float
    output: asyncio.Queue[bytes]
    input: queue.SimpleQueue[bytes | None]
    pump_task: asyncio.Task[None]
    watch_task: asyncio.Task[None]

    async def connect(self) -> None:
        # Accepted first, so a refusal can say why (a handshake refused before accepting
        # reaches the browser only as a failed connection). Origin was checked already.
        await self.accept()
        user = self.scope["user"]
        try:
            # The session's audit row comes from the page, with the browser's address (the
            # database call runs in a thread that copies this context).
            with acting(Source.PAGE, socket_address(self.scope)):
                audit, instance = await database_sync_to_async(terminal.terminal_start)(
                    user=user, instance_pk=int(self.scope["url_route"]["kwargs"]["pk"])
                )
        except Refused as refusal:
            await self._say_and_close(refusal.code, refusal.message, None)
            return
        self.audit_pk = audit.pk
        self.user_pk = user.pk
        self.instance_pk = instance.pk
        self.session_key = self.scope["session"].session_key
        try:
            self.tty = await asyncio.to_thread(terminal.terminal_attach, instance)
        except Exception as exc:
            if isinstance(exc, HostError):
                message = str(exc)  # written to be shown
            else:
                log.exception("terminal %s: the shell did not start", audit.pk)
                message = f"Something went wrong starting the shell (ref {audit.pk})."
            await database_sync_to_async(terminal.terminal_end)(
                audit.pk, exit_code=None, bytes_out=0, why=message
            )
            await self._say_and_close(Close.HOST_ERROR, message, None)
            return
        self.started = self.last_input = time.monotonic()
        self.output = asyncio.Queue(maxsize=OUTPUT_BACKLOG)
        self.input = queue.SimpleQueue()
        loop = asyncio.get_running_loop()
        threading.Thread(
            target=self._read, args=(self.tty, loop), name=f"tty-read-{audit.pk}", daemon=True
        ).start()
        threading.Thread(
            target=self._write, args=(self.tty,), name=f"tty-write-{audit.pk}", daemon=True
        ).start()
        self.pump_task = asyncio.create_task(self._pump())
        self.watch_task = asyncio.create_task(self._watch())

    # --- threads: the TTY's two directions ---------------------------------------------------

    def _read(self, tty: gateway.TtyExec, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            chunk = tty.read(READ_SIZE)
            try:
                # Waits while the backlog is full: backpressure down to the shell.
                asyncio.run_coroutine_threadsafe(self.output.put(chunk), loop).result()
            except RuntimeError:
                return  # the event loop is gone (server shutting down)
            if not chunk:
                return

    def _write(self, tty: gateway.TtyExec) -> None:
        while True:
            data = self.input.get()
            if data is None:
                return
            try:
                tty.write(data)
            except HostError:
                return  # the stream is gone; the reader sees its end

    # --- tasks ---------------------------------------------------------------------------------

    async def _pump(self) -> None:
        while True:
            chunk = await self.output.get()
            if not chunk:
                await self._end(Close.EXITED, "")
                return
            if self.ending or self.browser_gone:
                continue  # drained until the end of the stream, so the reader thread ends
            self.bytes_out += len(chunk)
            try:
                await self.send(bytes_data=chunk)
            except Exception:  # the browser is gone; disconnect() ends the session
                self.browser_gone = True

    async def _watch(self) -> None:
        try:
            await self._watch_limits()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Unchecked, a session could outlive a logout: end it rather than go on blind.
            log.exception("terminal %s: checking the session failed", self.audit_pk)
            await self._end(Close.ERROR, f"Something went wrong checking the session (ref {self.audit_pk}).")

    async def _watch_limits(self) -> None:
        idle = float(settings.TERMINAL_IDLE_TIMEOUT)
        longest = float(settings.TERMINAL_MAX_SESSION)
        recheck = float(settings.TERMINAL_RECHECK)
        next_check = time.monotonic() + recheck
        while not self.ending:
            now = time.monotonic()
            if now - self.last_input >= idle:
                await self._end(
                    Close.IDLE,
                    f"No input for {terminal.duration_text(idle)}, so the terminal was closed.",
                    timed_out=True,
                )
                return
            if now - self.started >= longest:
                await self._end(
                    Close.TOO_LONG,
                    f"The terminal was closed after {terminal.duration_text(longest)}, the longest a session may last.",
                    timed_out=True,
                )
                return
            if now >= next_check:
                refusal = await database_sync_to_async(terminal.terminal_check)(
                    session_key=self.session_key, user_pk=self.user_pk, instance_pk=self.instance_pk
                )
                if refusal is not None:
                    await self._end(refusal.code, refusal.message)
                    return
                next_check = time.monotonic() + recheck
            wake = min(next_check, self.last_input + idle, self.started + longest)
            await asyncio.sleep(max(0.01, wake - time.monotonic()))

    # --- the browser ---------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.tty is None or self.ending:
            return
        if text_data is not None:
            control = self._control(text_data)
            if control is None:
                bytes_data = text_data.encode()
            else:
                size = self._size(control)
                if size is not None:
                    try:
                        await asyncio.to_thread(self.tty.resize, *size)
                    except HostError as exc:
                        log.info("terminal %s: resize to %s refused: %s", self.audit_pk, size, exc)
                return
        if bytes_data:
            self.last_input = time.monotonic()
            self.input.put(bytes_data)

    @staticmethod
    def _control(text: str) -> dict[str, Any] | None:
        """A control message ({"resize": ...}), or None: then the frame is typed."""
        if not text.startswith("{"):
            return None
        try:
            message = json.loads(text)
        except ValueError:
            return None
        return message if isinstance(message, dict) and "resize" in message else None

    @staticmethod
    def _size(control: dict[str, Any]) -> tuple[int, int] | None:
        size = control["resize"]
        if (
            isinstance(size, list)
            and len(size) == 2
            and all(type(n) is int and 1 <= n <= MAX_COLS_ROWS for n in size)
        ):
            return size[0], size[1]
        return None  # a bad size is ignored, not typed

    async def disconnect(self, code: int) -> None:
        self.browser_gone = True
        await self._end(Close.EXITED, "")
        task = getattr(self, "pump_task", None)
        if task is not None:
            # The reader has seen the end of the closed stream; let the pump drain it.
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=5)

    # --- the end, whatever brought it ----------------------------------------------------------

    async def _end(self, code: Close, why: str, *, timed_out: bool = False) -> None:
        if self.ending or self.tty is None or self.audit_pk is None:
            return
        self.ending = True
        tty = self.tty
        current = asyncio.current_task()
        if self.watch_task is not current:
            self.watch_task.cancel()
        self.input.put(None)
        exit_code: int | None = None
        try:
            # The shell still running (Slipway ends it, or the browser left) is killed first.
            await asyncio.to_thread(tty.close)
            exit_code = await asyncio.to_thread(tty.exit_code)
        except HostError as exc:
            log.warning("terminal %s: %s", self.audit_pk, exc)
        await database_sync_to_async(terminal.terminal_end)(
            self.audit_pk, exit_code=exit_code, bytes_out=self.bytes_out, why=why, timed_out=timed_out
        )
        if not self.browser_gone:
            message = why or (
                f"The shell exited with code {exit_code}." if exit_code is not None else "The shell ended."
            )
            await self._say_and_close(code, message, exit_code)

    async def _say_and_close(self, code: Close, message: str, exit_code: int | None) -> None:
        await self.send(text_data=json.dumps({"end": message, "exit_code": exit_code, "code": int(code)}))
        await self.close(code=int(code))


class LogTailConsumer(AsyncWebsocketConsumer):
    """An instance's log, followed: `?tail=&stream=&timestamps=` as the logs API takes them.

    To the browser, text frames only: {"lines": [[stream, time, text], ...], "dropped": N} every
    LOG_FOLLOW_INTERVAL while lines come (text made safe to show, as on the page), and one last
    {"end": why, "code": N} before the socket closes. Docker's follow stream is read by a thread
    of its own; lines wait for the browser in a backlog of at most LOG_FOLLOW_BACKLOG: past it,
    the oldest waiting go and the next frame says how many, so a browser that falls behind a
    fast writer costs the portal no memory."""

    streams: list[gateway.LogStream] = []
    closing = False

    async def connect(self) -> None:
        await self.accept()
        user = self.scope["user"]
        params = dict(parse_qsl(self.scope.get("query_string", b"").decode(errors="replace")))
        try:
            first, followed = await self._open(user, params)
        except logs.FollowRefused as refusal:
            await self._end(refusal.code, refusal.message)
            return
        except ValidationError as exc:
            await self._end(Close.HOST_ERROR, " ".join(exc.messages))
            return
        self.backlog: collections.deque[list[str]] = collections.deque(first)
        self.dropped = 0
        self.ended: str | None = None
        self.running = len(followed)
        self.wake = asyncio.Event()
        if first or not followed:
            self.wake.set()
        if not followed:
            self.ended = "Nothing to follow: no instance has a container."
        loop = asyncio.get_running_loop()
        for label, batches in followed:
            threading.Thread(
                target=self._read, args=(batches, loop, label), name="log-follow", daemon=True
            ).start()
        self.send_task = asyncio.create_task(self._send_batches())

    async def _open(self, user: Any, params: dict[str, str]) -> tuple[list[list[str]], list[tuple[str, Any]]]:
        """(lines to send first, [(label, batches)] to follow): one instance, no label."""
        instance, query, which = await database_sync_to_async(logs.follow_target)(
            user, int(self.scope["url_route"]["kwargs"]["pk"]), params
        )
        stream, batches = await asyncio.to_thread(logs.follow, instance, query, which)
        self.streams = [stream]
        return [], [("", batches)]

    def _read(self, batches: Any, loop: asyncio.AbstractEventLoop, label: str = "") -> None:
        """A reading thread: each read from the host goes to the loop as one batch (a fast
        writer would otherwise wake it once per line)."""
        why = "The container's log ended (the container was removed)."
        tag = [label] if label else []
        try:
            for lines in batches:
                if lines:
                    batch = [[line.stream, line.time, line.display(), *tag] for line in lines]
                    loop.call_soon_threadsafe(self._take, batch, None)
        except HostError as exc:
            why = str(exc)
        except RuntimeError:
            return  # the event loop is gone
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._finished, label, why)

    def _finished(self, label: str, why: str) -> None:
        self.running -= 1
        if self.running > 0:  # the others go on: this one's end is said among the lines
            self._take([["stderr", "", f"[slipway: {label}: {why}]", label]], None)
            return
        self._take([], why)

    def _take(self, batch: list[list[str]], ended: str | None) -> None:
        self.backlog.extend(batch)
        over = len(self.backlog) - settings.LOG_FOLLOW_BACKLOG
        for _ in range(max(over, 0)):
            self.backlog.popleft()
        self.dropped += max(over, 0)
        if ended is not None and self.ended is None:
            self.ended = ended
        self.wake.set()

    async def _send_batches(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.backlog or self.dropped:
                lines = [self.backlog.popleft() for _ in range(min(len(self.backlog), 1000))]
                frame = {"lines": lines, "dropped": self.dropped}
                self.dropped = 0
                try:
                    await self.send(text_data=json.dumps(frame))
                except Exception:
                    return  # the browser is gone; disconnect() closes the stream
            if self.ended is not None:
                if not self.closing:
                    await self._end(Close.EXITED, self.ended)
                return
            await asyncio.sleep(settings.LOG_FOLLOW_INTERVAL)

    async def _end(self, code: int, why: str) -> None:
        self.closing = True
        with contextlib.suppress(Exception):
            await self.send(text_data=json.dumps({"end": why, "code": code}))
            await self.close(code=code)

    async def disconnect(self, code: int) -> None:
        self.closing = True
        for stream in self.streams:
            await asyncio.to_thread(stream.close)


class AppLogTailConsumer(LogTailConsumer):
    """An app's log, followed: first the last lines of all its instances merged by time, then
    every instance's new lines as they come, each line's fourth element its instance's name.
    Instances added later are not followed (the page says to follow again)."""

    async def _open(self, user: Any, params: dict[str, str]) -> tuple[list[list[str]], list[tuple[str, Any]]]:
        app, query, which = await database_sync_to_async(logs.app_follow_target)(
            user, self.scope["url_route"]["kwargs"]["slug"], params
        )
        opened = await asyncio.to_thread(logs.app_follow, app, query, which)
        self.streams = opened.streams
        first = [[line.stream, line.time, line.display(), name] for name, line in opened.snapshot]
        first += [["stderr", "", f"[slipway: {name}: {why}]", name] for name, why in opened.refused]
        return first, opened.followed
