"""A directory user's open terminal on a real lab instance, through the real ASGI application,
closes at the next recheck after they are removed from the team's group in a real slapd
(tests/ldap_server.py), without signing in again."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import BACKEND_SESSION_KEY
from django.core.cache import cache
from django.test import Client

from apps.accounts import directory as directory_signin
from apps.accounts.models import Membership
from apps.instances.models import Instance
from tests.docker.test_terminal_ws import _end, _output_until, _socket
from tests.ldap_server import Directory, running_slapd

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture(scope="module")
def directory() -> Iterator[Directory]:
    with running_slapd() as running:
        yield running


@pytest.fixture
def ldap_on(directory: Directory, settings: Any) -> Directory:
    for name, value in directory.settings().items():
        setattr(settings, name, value)
    directory.reset()
    cache.clear()
    return directory


@pytest.fixture
def instance(one_instance: Callable[[str], Instance]) -> Instance:
    return one_instance("ldapterm")


def _directory_sign_in(username: str, password: str) -> Client:
    client = Client()
    assert client.login(username=username, password=password)
    assert client.session[BACKEND_SESSION_KEY] == directory_signin.BACKEND
    return client


async def test_a_directory_users_terminal_closes_at_the_next_recheck_after_they_leave_the_group(
    instance: Instance, ldap_on: Directory, settings: Any
) -> None:
    settings.TERMINAL_RECHECK = 0.5
    client = await sync_to_async(_directory_sign_in)("alice", "alice-pw")  # alpha-devs: alpha's developer
    socket = _socket(instance.pk, client)
    assert (await socket.connect())[0]
    await socket.send_to(bytes_data=b"echo hi\r")
    await _output_until(socket, b"\nhi\r\n")

    await sync_to_async(ldap_on.remove_member)("alpha-devs", "alice")
    last, code = await _end(socket, timeout=0.5 + 5)
    assert code == 4403
    assert "may no longer use this instance" in last["end"]
    await socket.wait()
    roles = await sync_to_async(lambda: list(Membership.objects.filter(user__username="alice")))()
    assert roles == []  # the recheck applied the directory's groups, as a sign-in would
