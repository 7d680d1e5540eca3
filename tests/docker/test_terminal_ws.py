"""The browser terminal's websocket, on a real instance in the lab, through the real ASGI
application (Origin check, session cookie, auth middleware, routing): a shell answers, resizes,
exits with its code; refusals say nothing about instances the user may not see; logout, lost
membership and idle time close it; every session is an audit row."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from apps.accounts.models import Membership
from apps.console.models import ExecSession
from apps.instances.models import Instance
from apps.lab import fleet
from portal.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture
def instance(one_instance: Callable[[str], Instance]) -> Instance:
    return one_instance("term")


def _signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _socket(
    pk: int, client: Client | None = None, origin: str = "http://testserver"
) -> WebsocketCommunicator:
    headers = [(b"host", b"testserver"), (b"origin", origin.encode())]
    if client is not None:
        name = settings.SESSION_COOKIE_NAME
        headers.append((b"cookie", f"{name}={client.cookies[name].value}".encode()))
    return WebsocketCommunicator(application, f"/ws/instances/{pk}/terminal/", headers=headers)


async def _output_until(socket: WebsocketCommunicator, needle: bytes, timeout: float = 15) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        message = await socket.receive_output(timeout=max(0.1, deadline - time.monotonic()))
        if message["type"] == "websocket.send" and message.get("bytes"):
            seen += message["bytes"]
        else:
            raise AssertionError(f"{message} while waiting for {needle!r}; so far {seen!r}")
    return seen


async def _end(socket: WebsocketCommunicator, timeout: float = 15) -> tuple[dict[str, Any], int]:
    """The last text frame and the close code, skipping output still on its way."""
    last: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while True:
        message = await socket.receive_output(timeout=max(0.1, deadline - time.monotonic()))
        if message["type"] == "websocket.close":
            return last, message.get("code", 1000)
        if message.get("text"):
            last = json.loads(message["text"])


async def _shell_pid(socket: WebsocketCommunicator) -> str:
    await socket.send_to(bytes_data=b"echo pid=$$.\r")
    seen = b""
    # The echo of the typed line says pid=$$; the answer has the digits.
    while not (found := re.search(rb"pid=([0-9]+)\.", seen)):
        message = await socket.receive_output(timeout=15)
        assert message["type"] == "websocket.send", message
        seen += message.get("bytes") or b""
    return found.group(1).decode()


def _audit() -> list[ExecSession]:
    return list(ExecSession.objects.filter(kind=ExecSession.Kind.TERMINAL))


def _in_container(instance: Instance, *argv: str) -> int:
    lab_host = next(h for h in fleet.LabConfig.from_settings().all_hosts() if h.name == instance.host.name)
    return fleet.docker(lab_host, "exec", instance.container_name, *argv, check=False).returncode


def _alive(instance: Instance, pid: str) -> bool:
    return _in_container(instance, "sh", "-c", f"kill -0 {pid}") == 0


async def test_a_shell_answers_resizes_and_exits_with_its_code_into_the_audit(
    instance: Instance, owner: User
) -> None:
    client = await sync_to_async(_signed_in)(owner)
    socket = _socket(instance.pk, client)
    connected, _ = await socket.connect()
    assert connected
    await socket.send_to(bytes_data=b"echo hi\r")
    # The TTY echoes the typed line too; the answer is a line of its own.
    await _output_until(socket, b"\nhi\r\n")

    await socket.send_to(text_data=json.dumps({"resize": [123, 45]}))
    await socket.send_to(text_data="stty size\r")  # a text frame that is not a resize is typed
    await _output_until(socket, b"45 123")

    await socket.send_to(bytes_data=b"exit 3\r")
    last, code = await _end(socket)
    assert code == 1000
    assert last == {"end": "The shell exited with code 3.", "exit_code": 3, "code": 1000}
    await socket.wait()

    [row] = await sync_to_async(_audit)()
    assert (row.username, row.instance_name, row.host_name) == ("owner", "slw-term-0", instance.host.name)
    assert row.argv == []
    assert row.ended_at is not None and row.ended_at >= row.started_at
    assert row.exit_code == 3
    assert row.bytes_out > len("hi\r\n45 123\r\n")
    assert row.error == "" and not row.timed_out


async def test_a_foreign_origin_is_refused_at_the_handshake(instance: Instance, owner: User) -> None:
    client = await sync_to_async(_signed_in)(owner)
    socket = _socket(instance.pk, client, origin="http://evil.example")
    connected, _ = await socket.connect()
    assert not connected
    assert await sync_to_async(_audit)() == []


async def test_anonymous_users_are_told_to_sign_in_and_nothing_starts(instance: Instance) -> None:
    socket = _socket(instance.pk)
    connected, _ = await socket.connect()
    assert connected  # accepted only to say why it closes
    last, code = await _end(socket)
    assert code == 4401
    assert last["end"] == "Sign in to open a terminal."
    assert await sync_to_async(_audit)() == []


async def test_another_teams_developer_cannot_tell_the_instance_exists(
    instance: Instance, outsider: User
) -> None:
    client = await sync_to_async(_signed_in)(outsider)
    answers = []
    for pk in (instance.pk, instance.pk + 1000):  # theirs, and one that does not exist
        socket = _socket(pk, client)
        connected, _ = await socket.connect()
        assert connected
        answers.append(await _end(socket))
    assert (
        answers[0]
        == answers[1]
        == ({"end": "There is no such instance.", "exit_code": None, "code": 4404}, 4404)
    )
    assert await sync_to_async(_audit)() == []


async def test_signing_out_closes_the_terminal_and_ends_the_shell(
    instance: Instance, owner: User, settings: Any
) -> None:
    settings.TERMINAL_RECHECK = 0.5
    client = await sync_to_async(_signed_in)(owner)
    socket = _socket(instance.pk, client)
    assert (await socket.connect())[0]
    pid = await _shell_pid(socket)
    assert await sync_to_async(_alive)(instance, pid)

    await sync_to_async(client.logout)()  # deletes the session from the store
    signed_out = time.monotonic()
    last, code = await _end(socket)
    assert time.monotonic() - signed_out < 0.5 + 2
    assert code == 4401
    assert last["end"] == "You signed out, so the terminal was closed."
    await socket.wait()

    [row] = await sync_to_async(_audit)()
    assert row.ended_at is not None and row.bytes_out > 0
    assert row.error == "You signed out, so the terminal was closed."
    # Docker's API cannot stop an exec: the shell is killed in the container, not left behind.
    assert not await sync_to_async(_alive)(instance, pid)


async def test_losing_membership_closes_the_terminal(instance: Instance, owner: User, settings: Any) -> None:
    settings.TERMINAL_RECHECK = 0.5
    client = await sync_to_async(_signed_in)(owner)
    socket = _socket(instance.pk, client)
    assert (await socket.connect())[0]
    await socket.send_to(bytes_data=b"echo hi\r")
    await _output_until(socket, b"\nhi\r\n")

    await sync_to_async(Membership.objects.filter(user=owner).delete)()
    last, code = await _end(socket, timeout=0.5 + 2)
    assert code == 4403
    assert "may no longer use this instance" in last["end"]
    await socket.wait()


async def test_an_idle_terminal_is_closed(instance: Instance, owner: User, settings: Any) -> None:
    settings.TERMINAL_IDLE_TIMEOUT = 1
    client = await sync_to_async(_signed_in)(owner)
    socket = _socket(instance.pk, client)
    assert (await socket.connect())[0]
    opened = time.monotonic()
    last, code = await _end(socket, timeout=5)
    assert 1 <= time.monotonic() - opened < 4
    assert code == 4000
    assert last["end"] == "No input for 1 s, so the terminal was closed."
    await socket.wait()
    [row] = await sync_to_async(_audit)()
    assert row.timed_out and row.ended_at is not None


async def test_the_browser_leaving_ends_the_shell_and_the_audit_row(instance: Instance, owner: User) -> None:
    client = await sync_to_async(_signed_in)(owner)
    socket = _socket(instance.pk, client)
    assert (await socket.connect())[0]
    pid = await _shell_pid(socket)
    assert await sync_to_async(_alive)(instance, pid)
    await socket.disconnect()

    [row] = await sync_to_async(_audit)()
    assert row.ended_at is not None and row.bytes_out > 0 and row.error == ""
    assert not await sync_to_async(_alive)(instance, pid)


async def test_the_team_lead_and_ops_get_a_shell_each_audited_under_their_name(
    instance: Instance, lead: User, ops: User
) -> None:
    # The websocket's side of the route x role matrix: owner (above), lead and ops get a shell;
    # another team's developer and anonymous users are refused (above).
    for user in (lead, ops):
        client = await sync_to_async(_signed_in)(user)
        socket = _socket(instance.pk, client)
        assert (await socket.connect())[0]
        assert await _shell_pid(socket)
        await socket.disconnect()
    names = await sync_to_async(
        lambda: sorted(
            ExecSession.objects.filter(kind=ExecSession.Kind.TERMINAL).values_list(
                "user__username", flat=True
            )
        )
    )()
    assert names == ["lead", "ops"]
