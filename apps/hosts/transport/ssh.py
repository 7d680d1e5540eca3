"""SSH to hosts with paramiko: pinned host keys, deadlines on every step, argv only.

One connection per host is kept per worker process and made after fork (a paramiko
Transport runs a thread, which does not survive fork). The portal has its own key and
its own known-hosts data (the Host rows); the user's ~/.ssh is never read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shlex
import socket
import threading
import time
from pathlib import Path
from typing import Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings

from apps.hosts.transport import (
    CommandFailed,
    CommandResult,
    CommandTimeout,
    Endpoint,
    HostKeyChanged,
    HostKeyUnknown,
    HostUnreachable,
    fingerprint,
)

log = logging.getLogger(__name__)

TRUNCATED_MARKER = b"\n[... output cut by Slipway: over the limit ...]\n"


# --- the portal's own key -------------------------------------------------------------


def ensure_portal_key(path: Path | None = None) -> Path:
    """Create the portal's ed25519 key pair if it does not exist; return the private key path."""
    path = path or settings.SSH_KEY_PATH
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(private)
    tmp.chmod(0o600)
    path.with_name(path.name + ".pub").write_bytes(public + b" slipway-portal\n")
    tmp.rename(path)
    return path


def portal_public_key() -> str:
    path = ensure_portal_key()
    return path.with_name(path.name + ".pub").read_text().strip()


def _portal_pkey() -> paramiko.PKey:
    return paramiko.Ed25519Key.from_private_key_file(str(ensure_portal_key()))


# --- host keys ----------------------------------------------------------------------------


def _key_string(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


def _algorithms_for(key_type: str) -> list[str]:
    # Ask the server for the pinned key's type, so a host with several keys shows the one we pinned.
    if key_type == "ssh-rsa":
        return ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]
    return [key_type]


def _open_transport(address: str, port: int, pinned_type: str | None) -> paramiko.Transport:
    try:
        sock = socket.create_connection((address, port), timeout=settings.SSH_CONNECT_TIMEOUT)
    except OSError as exc:
        raise HostUnreachable(f"host unreachable: cannot connect to {address}:{port}: {exc}") from exc
    transport = paramiko.Transport(sock)
    transport.banner_timeout = settings.SSH_BANNER_TIMEOUT
    transport.handshake_timeout = settings.SSH_BANNER_TIMEOUT
    transport.auth_timeout = settings.SSH_AUTH_TIMEOUT
    if pinned_type:
        transport.get_security_options().key_types = _algorithms_for(pinned_type)
    try:
        # start_client's own timeout bounds banner plus key exchange.
        transport.start_client(timeout=settings.SSH_BANNER_TIMEOUT * 2)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        transport.close()
        raise HostUnreachable(f"SSH handshake with {address}:{port} failed: {exc or 'timed out'}") from exc
    if not transport.is_active() or not transport.initial_kex_done:
        # start_client can return at its deadline without raising; the session is not usable.
        transport.close()
        raise HostUnreachable(
            f"SSH handshake with {address}:{port} failed: no answer within {settings.SSH_BANNER_TIMEOUT:g} s"
        )
    return transport


def fetch_host_key(address: str, port: int = 22) -> str:
    """Connect without authenticating and return the server's host key, for confirmation."""
    transport = _open_transport(address, port, None)
    try:
        return _key_string(transport.get_remote_server_key())
    finally:
        transport.close()


# --- sessions -----------------------------------------------------------------------------


class ChannelRefused(HostUnreachable):
    """The server said no to a channel type (for example streamlocal forwarding is disabled)."""


def open_streamlocal(transport: paramiko.Transport, socket_path: str, timeout: float) -> paramiko.Channel:
    """A channel to a unix socket on the host ("direct-streamlocal@openssh.com", OpenSSH's
    PROTOCOL 2.4). paramiko only knows tcpip and x11 channels, so the open request is built
    here the way Transport.open_channel builds its own; the channel it returns is ordinary."""
    from paramiko.channel import Channel
    from paramiko.common import cMSG_CHANNEL_OPEN
    from paramiko.message import Message

    if not transport.is_active():
        raise HostUnreachable("SSH session not active")
    t: Any = transport  # private members below, as open_channel uses them
    with t.lock:
        window = t._sanitize_window_size(None)
        packet = t._sanitize_packet_size(None)
        chanid = t._next_channel()
        m = Message()
        m.add_byte(cMSG_CHANNEL_OPEN)
        m.add_string("direct-streamlocal@openssh.com")
        m.add_int(chanid)
        m.add_int(window)
        m.add_int(packet)
        m.add_string(socket_path)
        m.add_string("")  # reserved
        m.add_int(0)  # reserved
        chan: Any = Channel(chanid)
        t._channels.put(chanid, chan)
        t.channel_events[chanid] = event = threading.Event()
        t.channels_seen[chanid] = True
        chan._set_transport(t)
        chan._set_window(window, packet)
    t._send_user_message(m)
    deadline = time.monotonic() + timeout
    while not event.wait(0.05):
        if not t.active:
            raise HostUnreachable(f"SSH session ended while opening a channel to {socket_path}")
        if time.monotonic() > deadline:
            raise HostUnreachable(f"no answer within {timeout:g} s opening a channel to {socket_path}")
    opened = t._channels.get(chanid)
    if opened is None:
        raise ChannelRefused(f"the host refused a channel to {socket_path}: {t.get_exception() or 'refused'}")
    return opened  # type: ignore[no-any-return]


class ChannelOpenFailed(HostUnreachable):
    """No channel could be opened: the command never started, so a retry is safe."""


class SSHSession:
    """An authenticated connection to one host; channels are opened on it per command."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.transport = self._connect()

    def _connect(self) -> paramiko.Transport:
        ep = self.endpoint
        if not ep.host_key:
            raise HostKeyUnknown(
                f"{ep.address}: the host key is not confirmed; confirm its fingerprint first"
            )
        pinned_type = ep.host_key.split()[0]
        transport = _open_transport(ep.address, ep.port, pinned_type)
        try:
            offered = _key_string(transport.get_remote_server_key())
            if offered != ep.host_key:
                raise HostKeyChanged(
                    f"{ep.address}: host key changed (pinned {fingerprint(ep.host_key)}, "
                    f"offered {fingerprint(offered)}); refusing to connect"
                )
            try:
                transport.auth_publickey(ep.user, _portal_pkey())
            except (paramiko.SSHException, EOFError) as exc:
                raise HostUnreachable(f"{ep}: authentication failed: {exc}") from exc
            transport.set_keepalive(15)
        except BaseException:
            transport.close()
            raise
        return transport

    @property
    def alive(self) -> bool:
        return self.transport.is_active()

    def open_channel(self, command: str, timeout: float | None = None) -> paramiko.Channel:
        try:
            channel = self.transport.open_session(timeout=settings.SSH_CONNECT_TIMEOUT)
            channel.settimeout(timeout)
            channel.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ChannelOpenFailed(f"{self.endpoint}: cannot open a channel: {exc}") from exc
        return channel

    def run(
        self,
        argv: list[str],
        *,
        timeout: float | None = None,
        stdin: bytes | None = None,
        max_output: int | None = None,
    ) -> CommandResult:
        """Run argv on the host; bound the output; kill it at the deadline.

        The remote side enforces the deadline too (coreutils `timeout`), so a command that
        never ends is killed on the host even if our channel is gone.
        """
        if not argv or not all(isinstance(part, str) for part in argv):
            raise TypeError("argv must be a non-empty list of strings")
        timeout = settings.SSH_COMMAND_TIMEOUT if timeout is None else timeout
        limit = settings.SSH_MAX_OUTPUT if max_output is None else max_output
        remote = ["timeout", "--kill-after=2", f"{timeout:g}", *argv]
        started = time.monotonic()
        deadline = started + timeout + 3
        channel = self.open_channel(shlex.join(remote), timeout=0)
        out, err = bytearray(), bytearray()
        truncated = False
        try:
            if stdin:
                channel.setblocking(True)
                channel.settimeout(max(0.1, deadline - time.monotonic()))
                channel.sendall(stdin)
                channel.setblocking(False)
            channel.shutdown_write()
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CommandTimeout(
                        f"{self.endpoint}: {argv[0]} did not finish within {timeout:g} s; killed"
                    )
                select.select([channel], [], [], min(remaining, 1.0))
                got = False
                while channel.recv_ready():
                    chunk = channel.recv(65536)
                    got = True
                    truncated |= _append_bounded(out, chunk, limit)
                while channel.recv_stderr_ready():
                    chunk = channel.recv_stderr(65536)
                    got = True
                    truncated |= _append_bounded(err, chunk, limit)
                if not got and channel.exit_status_ready() and not channel.recv_ready():
                    break
                if channel.closed and not got:
                    break
            exit_code = channel.recv_exit_status()
        except OSError as exc:
            raise HostUnreachable(f"{self.endpoint}: connection lost: {exc}") from exc
        finally:
            channel.close()
        if exit_code == 124:
            raise CommandTimeout(f"{self.endpoint}: {argv[0]} did not finish within {timeout:g} s; killed")
        if truncated:
            out += TRUNCATED_MARKER
        return CommandResult(
            exit_code=exit_code,
            stdout=bytes(out),
            stderr=bytes(err),
            duration=time.monotonic() - started,
            truncated=truncated,
        )

    def close(self) -> None:
        self.transport.close()


def _append_bounded(buffer: bytearray, chunk: bytes, limit: int) -> bool:
    room = limit - len(buffer)
    if room >= len(chunk):
        buffer += chunk
        return False
    if room > 0:
        buffer += chunk[:room]
    return True


# --- per-process connection cache ---------------------------------------------------------

_sessions: dict[Endpoint, SSHSession] = {}
_sessions_pid = os.getpid()
_sessions_lock = threading.Lock()


def session_for(endpoint: Endpoint) -> SSHSession:
    """The live session for this endpoint in this process, connecting if needed."""
    global _sessions_pid
    with _sessions_lock:
        if _sessions_pid != os.getpid():
            # Forked: the parent's transports belong to threads that no longer exist here.
            _sessions.clear()
            _sessions_pid = os.getpid()
        session = _sessions.get(endpoint)
        if session is not None and session.alive:
            return session
        if session is not None:
            session.close()
        session = SSHSession(endpoint)
        _sessions[endpoint] = session
        return session


def drop_session(endpoint: Endpoint) -> None:
    with _sessions_lock:
        session = _sessions.pop(endpoint, None)
    if session is not None:
        session.close()


def run(
    endpoint: Endpoint,
    argv: list[str],
    *,
    timeout: float | None = None,
    stdin: bytes | None = None,
    max_output: int | None = None,
) -> CommandResult:
    """Run argv on a host over the cached session.

    A cached connection may have died since its last use (host rebooted, link flapped);
    if no channel could be opened, reconnect once. A command that had started is never re-run.
    """
    session = session_for(endpoint)
    try:
        return session.run(argv, timeout=timeout, stdin=stdin, max_output=max_output)
    except ChannelOpenFailed:
        drop_session(endpoint)
        session = session_for(endpoint)
        return session.run(argv, timeout=timeout, stdin=stdin, max_output=max_output)


# --- a long-lived hostagent per host ----------------------------------------------------------


class AgentChannel:
    """`hostagent serve` on the host, kept open on the session: one JSON line each way per
    request, so asking the agent costs a round trip instead of a new channel and a Python start."""

    def __init__(self, session: SSHSession, argv: list[str]) -> None:
        self.session = session
        self.channel = session.open_channel(shlex.join([*argv, "serve"]), timeout=None)
        self.reader = self.channel.makefile("rb")
        self.lock = threading.Lock()
        self.next_id = 0

    @property
    def alive(self) -> bool:
        return self.session.alive and not self.channel.closed and not self.channel.exit_status_ready()

    def call(self, command: str, args: dict[str, object], timeout: float) -> object:
        with self.lock:
            self.next_id += 1
            request = {"id": self.next_id, "cmd": command, "args": args}
            self.channel.settimeout(timeout)
            try:
                self.channel.sendall((json.dumps(request) + "\n").encode())
                line = self.reader.readline(settings.SSH_MAX_OUTPUT)
            except TimeoutError as exc:
                self.close()
                raise CommandTimeout(
                    f"{self.session.endpoint}: hostagent {command} did not answer within {timeout:g} s"
                ) from exc
            except (OSError, EOFError, paramiko.SSHException) as exc:
                self.close()
                raise HostUnreachable(f"{self.session.endpoint}: hostagent connection lost: {exc}") from exc
            if not line:
                stderr = (
                    self.channel.recv_stderr(4096).decode(errors="replace").strip()
                    if self.channel.recv_stderr_ready()
                    else ""
                )
                self.close()
                raise AgentGone(f"{self.session.endpoint}: hostagent serve ended: {stderr or 'no answer'}")
            try:
                reply = json.loads(line)
            except ValueError:
                self.close()
                raise HostUnreachable(
                    f"{self.session.endpoint}: hostagent sent something that is not JSON"
                ) from None
        if reply.get("id") != request["id"]:
            self.close()
            raise HostUnreachable(f"{self.session.endpoint}: hostagent answered out of turn")
        if not reply.get("ok"):
            raise CommandFailed(f"{self.session.endpoint}: hostagent {command}: {reply.get('error')}")
        return reply.get("result")

    def close(self) -> None:
        self.channel.close()


class AgentGone(HostUnreachable):
    """The agent process ended (an old agent without `serve`, or it crashed)."""


_agents: dict[Endpoint, AgentChannel] = {}
_agents_pid = os.getpid()
_agents_lock = threading.Lock()


def agent_call(
    endpoint: Endpoint, argv: list[str], command: str, args: dict[str, object], timeout: float
) -> object:
    global _agents_pid
    with _agents_lock:
        if _agents_pid != os.getpid():
            _agents.clear()
            _agents_pid = os.getpid()
        channel = _agents.get(endpoint)
        if channel is None or not channel.alive:
            channel = AgentChannel(session_for(endpoint), argv)
            _agents[endpoint] = channel
    return channel.call(command, args, timeout)


def agent_forget(endpoint: Endpoint) -> None:
    """End the agent kept for the endpoint: the next call starts the one installed now."""
    with _agents_lock:
        channel = _agents.pop(endpoint, None)
    if channel is not None:
        channel.close()


def put_file(endpoint: Endpoint, path: str, data: bytes, *, mode: int = 0o644, timeout: float = 60) -> None:
    """Write `data` to `path` on the host over SFTP (no shell, no command line), with a deadline
    on every step."""
    session = session_for(endpoint)
    try:
        sftp = paramiko.SFTPClient.from_transport(session.transport)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise HostUnreachable(f"{endpoint}: cannot open SFTP (is the sftp subsystem on?): {exc}") from exc
    if sftp is None:
        raise HostUnreachable(f"{endpoint}: cannot open SFTP (is the sftp subsystem on?)")
    try:
        sftp.get_channel().settimeout(timeout)  # type: ignore[union-attr]
        with sftp.open(path, "wb") as handle:
            handle.set_pipelined(True)
            handle.write(data)
        sftp.chmod(path, mode)
    except TimeoutError as exc:
        raise HostUnreachable(f"{endpoint}: writing {path} stalled for {timeout:g} s") from exc
    except OSError as exc:
        raise CommandFailed(f"{endpoint}: cannot write {path}: {exc}", exit_code=1) from exc
    except (paramiko.SSHException, EOFError) as exc:
        raise HostUnreachable(f"{endpoint}: connection lost while writing {path}: {exc}") from exc
    finally:
        sftp.close()


def agent_channel(endpoint: Endpoint) -> AgentChannel | None:
    """The agent channel kept for the endpoint in this process, if any (for tests and status)."""
    return _agents.get(endpoint)


# --- streams (large transfers pumped by the caller) -------------------------------------------


class Stream:
    """A remote command whose stdin and stdout the caller pumps (a tar of an app's files).

    Every read and write has the stall deadline: a cut link or a peer that stops reading
    ends the transfer with HostUnreachable instead of hanging."""

    def __init__(self, session: SSHSession, argv: list[str], stall: float) -> None:
        if not argv or not all(isinstance(part, str) for part in argv):
            raise TypeError("argv must be a non-empty list of strings")
        self.endpoint = session.endpoint
        self.stall = stall
        self.what = argv[0]
        self.channel = session.open_channel(shlex.join(argv), timeout=stall)

    def write(self, data: bytes) -> None:
        try:
            self.channel.sendall(data)
        except TimeoutError as exc:
            raise HostUnreachable(
                f"{self.endpoint}: {self.what} took no data for {self.stall:g} s; the connection stalled"
            ) from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise HostUnreachable(
                f"{self.endpoint}: connection lost while sending: {exc or 'closed'}"
            ) from exc

    def read(self, size: int = 1 << 20) -> bytes:
        """Up to size bytes; b"" at the end of the output."""
        try:
            return bytes(self.channel.recv(size))
        except TimeoutError as exc:
            raise HostUnreachable(
                f"{self.endpoint}: no data from {self.what} for {self.stall:g} s; the connection stalled"
            ) from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise HostUnreachable(
                f"{self.endpoint}: connection lost while receiving: {exc or 'closed'}"
            ) from exc

    def close_input(self) -> None:
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            self.channel.shutdown_write()

    def finish(self, timeout: float) -> tuple[int, str]:
        """Wait for the command's exit; its exit code and the end of what it wrote to stderr."""
        deadline = time.monotonic() + timeout
        while not self.channel.exit_status_ready():
            if time.monotonic() > deadline or not self.channel.get_transport().is_active():
                raise HostUnreachable(f"{self.endpoint}: {self.what} did not finish within {timeout:g} s")
            # Drain stdout so a command blocked on a full window can still exit.
            if self.channel.recv_ready():
                self.channel.recv(65536)
            time.sleep(0.02)
        err = bytearray()
        while self.channel.recv_stderr_ready():
            _append_bounded(err, self.channel.recv_stderr(65536), 8192)
        return self.channel.recv_exit_status(), err.decode(errors="replace").strip()

    def close(self) -> None:
        self.channel.close()


def stream(endpoint: Endpoint, argv: list[str], stall: float) -> Stream:
    session = session_for(endpoint)
    try:
        return Stream(session, argv, stall)
    except ChannelOpenFailed:
        drop_session(endpoint)
        return Stream(session_for(endpoint), argv, stall)


# --- installing the portal's key with a one-time password ---------------------------------------

# Appends the key once; the key travels as an argument, never inside the script text.
_INSTALL_KEY_SCRIPT = (
    'umask 077; mkdir -p "$HOME/.ssh" && touch "$HOME/.ssh/authorized_keys" && '
    '{ grep -qxF "$1" "$HOME/.ssh/authorized_keys" || printf "%s\\n" "$1" >> "$HOME/.ssh/authorized_keys"; }'
)


def install_portal_key(endpoint: Endpoint, password: str) -> None:
    """Log in once with a password (the pinned host key checked first) and add the portal's
    public key to the user's authorized_keys. The password is used for this and forgotten."""
    if not endpoint.host_key:
        raise HostKeyUnknown(
            f"{endpoint.address}: the host key is not confirmed; confirm its fingerprint first"
        )
    transport = _open_transport(endpoint.address, endpoint.port, endpoint.host_key.split()[0])
    try:
        offered = _key_string(transport.get_remote_server_key())
        if offered != endpoint.host_key:
            raise HostKeyChanged(
                f"{endpoint.address}: host key changed (pinned {fingerprint(endpoint.host_key)}, "
                f"offered {fingerprint(offered)}); refusing to send the password"
            )
        try:
            transport.auth_password(endpoint.user, password)
        except paramiko.AuthenticationException as exc:
            raise CommandFailed(f"{endpoint}: the password was refused") from exc
        except (paramiko.SSHException, EOFError) as exc:
            raise HostUnreachable(f"{endpoint}: password login failed: {exc}") from exc
        channel = transport.open_session(timeout=settings.SSH_CONNECT_TIMEOUT)
        channel.settimeout(settings.SSH_COMMAND_TIMEOUT)
        channel.exec_command(shlex.join(["sh", "-c", _INSTALL_KEY_SCRIPT, "sh", portal_public_key()]))
        code = channel.recv_exit_status()
        err = (
            channel.recv_stderr(4096).decode(errors="replace").strip() if channel.recv_stderr_ready() else ""
        )
        if code != 0:
            raise CommandFailed(
                f"{endpoint}: installing the portal's key failed: {err or f'exit code {code}'}", code
            )
    finally:
        transport.close()
