"""Loading a version onto several hosts at once (distribute._each_host, under both the SSH
streaming and the registry's pulls). The loads themselves are real on the lab (tests/docker);
here a stand-in for one host's load, which the lab cannot hold still on demand, shows the
limit, a failure kept to its host, and a cancel that starts no further host."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from apps.applications.models import BaseImage
from apps.hosts.models import Host
from apps.hosts.transport import HostError
from apps.images import distribute


@pytest.fixture
def four(hosts: list[Host]) -> list[Host]:
    more = [
        Host.objects.create(name=f"h{i}", address="127.0.0.1", ssh_port=i, host_key="ssh-ed25519 AAAA")
        for i in (3, 4)
    ]
    return [*hosts, *more]


def _progress(image: BaseImage, hosts: list[Host]) -> distribute._Progress:
    return distribute._Progress(image, {h.name: {"state": "waiting", "error": ""} for h in hosts})


def test_hosts_load_side_by_side_up_to_the_limit_and_a_failure_stays_with_its_host(
    image: BaseImage, four: list[Host]
) -> None:
    image.hosts.clear()
    pairs = threading.Barrier(2, timeout=10)  # passed only by two loads under way together
    lock = threading.Lock()
    running, most = [0], [0]

    def work(host: Host) -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            pairs.wait()
            if host.name == "h3":
                raise HostError("the host's disk is full")
        finally:
            with lock:
                running[0] -= 1

    progress = _progress(image, four)
    failed = distribute._each_host(image, four, progress, work, 2, lambda: True)
    assert failed == ["h3: the host's disk is full"]
    assert most[0] == 2
    assert sorted(image.hosts.values_list("name", flat=True)) == ["h1", "h2", "h4"]
    saved: dict[str, Any] = BaseImage.objects.get(pk=image.pk).load_progress
    assert saved["h3"] == {"state": "failed", "error": "the host's disk is full"}


def test_a_cancel_starts_no_further_host_and_the_one_under_way_finishes(
    image: BaseImage, four: list[Host]
) -> None:
    image.hosts.clear()
    started: list[str] = []
    cancelled = threading.Event()

    def work(host: Host) -> None:
        started.append(host.name)
        assert cancelled.wait(10)  # the load under way when the publish is cancelled

    def keep_going() -> bool:
        cancelled.set()
        return False

    progress = _progress(image, four)
    assert distribute._each_host(image, four, progress, work, 1, keep_going) == []
    assert started == ["h1"]
    assert list(image.hosts.values_list("name", flat=True)) == ["h1"]
    saved = BaseImage.objects.get(pk=image.pk).load_progress
    assert [saved[name]["state"] for name in ("h2", "h3", "h4")] == ["waiting"] * 3
