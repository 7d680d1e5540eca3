"""Following an instance's log over its websocket, on a real instance in the lab, through the real
ASGI application: the last lines, then new ones as the app writes them; a fast writer against a
browser that reads nothing yet drops lines and says how many; refusals; the end when the
container goes; the follow stream closed when the browser leaves."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from apps.applications.models import App
from apps.instances.models import Instance
from apps.lab import fleet
from portal.asgi import application
from tests.helpers import app_prints

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture
def instance(one_instance: Callable[[str], Instance]) -> Instance:
    return one_instance("tail")


def _socket(
    pk: int | str, user: User | None, query: str = "", path: str = "instances"
) -> WebsocketCommunicator:
    headers = [(b"host", b"testserver"), (b"origin", b"http://testserver")]
    if user is not None:
        client = Client()
        client.force_login(user)
        name = settings.SESSION_COOKIE_NAME
        headers.append((b"cookie", f"{name}={client.cookies[name].value}".encode()))
    return WebsocketCommunicator(application, f"/ws/{path}/{pk}/logs/?{query}", headers=headers)


async def _frames_until(
    socket: WebsocketCommunicator, done: Any, timeout: float = 20
) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while not done(frames):
        frames.append(json.loads(await socket.receive_from(timeout=timeout)))
    return frames


def _texts(frames: list[dict[str, Any]]) -> list[str]:
    return [line[2] for frame in frames for line in frame.get("lines", [])]


async def test_the_last_lines_then_new_ones_as_they_are_written(
    instance: Instance, owner: User, lab: list[fleet.LabHost]
) -> None:
    await sync_to_async(app_prints)(lab, instance, "echo before one; echo before two >&2")
    socket = await sync_to_async(_socket)(instance.pk, owner, "tail=50&timestamps=1")
    connected, _ = await socket.connect()
    assert connected
    frames = await _frames_until(socket, lambda f: {"before one", "before two"} <= set(_texts(f)))
    streams = {line[2]: line[0] for frame in frames for line in frame["lines"]}
    assert streams["before two"] == "stderr" and streams["before one"] == "stdout"
    assert all(line[1].endswith("Z") for frame in frames for line in frame["lines"])
    # Written after the socket opened: it arrives without asking again.
    await sync_to_async(app_prints)(lab, instance, "echo after \033[32mgreen\033[0m")
    frames = await _frames_until(socket, lambda f: "after green" in _texts(f))
    await socket.disconnect()


async def test_a_browser_that_reads_nothing_costs_a_bounded_backlog_and_is_told_what_it_missed(
    instance: Instance, owner: User, lab: list[fleet.LabHost], settings: Any
) -> None:
    settings.LOG_FOLLOW_BACKLOG = 100
    socket = await sync_to_async(_socket)(instance.pk, owner, "tail=1")
    connected, _ = await socket.connect()
    assert connected
    writer = threading.Thread(target=app_prints, args=(lab, instance, "seq 1 20000"))
    writer.start()
    await sync_to_async(writer.join)()
    frames = await _frames_until(socket, lambda f: "20000" in _texts(f), timeout=30)
    got = [t for t in _texts(frames) if t.isdigit()]
    dropped = sum(frame["dropped"] for frame in frames)
    assert dropped > 0
    # Every line was either delivered or counted as dropped; the newest always arrive.
    assert len(got) + dropped >= 20000 - 1
    assert got[-1] == "20000"
    await socket.disconnect()


async def test_refusals_say_why_and_start_nothing(instance: Instance, owner: User, outsider: User) -> None:
    for user, query, code, text in [
        (None, "", 4401, "Sign in"),
        (outsider, "", 4404, "No such instance."),
        (owner, "tail=all", 4400, "tail: 'all' is not a number of lines from 1 to 10000."),
    ]:
        socket = await sync_to_async(_socket)(instance.pk, user, query)
        connected, _ = await socket.connect()
        assert connected
        said = json.loads(await socket.receive_from(timeout=10))
        assert said["code"] == code and text in said["end"], said
        assert (await socket.receive_output(timeout=10))["code"] == code
        await socket.disconnect()


async def test_the_follow_ends_with_the_container(
    instance: Instance, owner: User, lab: list[fleet.LabHost]
) -> None:
    socket = await sync_to_async(_socket)(instance.pk, owner, "tail=1")
    connected, _ = await socket.connect()
    assert connected
    lab_host = next(h for h in lab if h.name == instance.host.name)
    await sync_to_async(fleet.docker)(lab_host, "rm", "-f", instance.container_name)
    frames = await _frames_until(socket, lambda f: bool(f) and "end" in f[-1])
    assert frames[-1]["code"] == 1000 and "ended" in frames[-1]["end"]


async def test_an_apps_log_merged_then_every_instances_new_lines_marked_with_it(
    deploy: Callable[..., App], owner: User, outsider: User, lab: list[fleet.LabHost]
) -> None:
    app = await sync_to_async(deploy)("chorus", instances=2)
    first, second = await sync_to_async(
        lambda: list(Instance.objects.filter(app=app).select_related("host", "app").order_by("slot"))
    )()
    await sync_to_async(app_prints)(lab, first, "echo one says hello")
    await sync_to_async(app_prints)(lab, second, "echo two says hello")
    socket = await sync_to_async(_socket)(app.slug, owner, "tail=50", "apps")
    connected, _ = await socket.connect()
    assert connected
    frames = await _frames_until(socket, lambda f: {"one says hello", "two says hello"} <= set(_texts(f)))
    said = {line[2]: line[3] for frame in frames for line in frame["lines"]}
    assert said["one says hello"] == first.container_name
    assert said["two says hello"] == second.container_name
    # New lines of either instance arrive as they are written, each once, marked with it.
    await sync_to_async(app_prints)(lab, second, "echo two again")
    await sync_to_async(app_prints)(lab, first, "echo one again")
    frames += await _frames_until(socket, lambda f: {"one again", "two again"} <= set(_texts(f)))
    marked = [(line[2], line[3]) for frame in frames for line in frame["lines"]]
    assert marked.count(("two again", second.container_name)) == 1
    assert marked.count(("one again", first.container_name)) == 1
    assert marked.count(("one says hello", first.container_name)) == 1  # not again from the follow
    await socket.disconnect()

    refused = await sync_to_async(_socket)(app.slug, outsider, "", "apps")
    connected, _ = await refused.connect()
    assert connected
    answer = json.loads(await refused.receive_from(timeout=10))
    assert answer["code"] == 4404 and answer["end"] == "No such app."
    await refused.disconnect()
