"""An instance's logs read from its lab host's real Docker: through the API (text, JSON lines,
one stream, times, since, everything as a download) and on the instance page's logs panel."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from apps.applications.models import App
from apps.instances.models import Instance
from apps.lab import fleet
from tests.conftest import TEST_BROKER_URL, _database_url
from tests.helpers import api_client, api_token, app_prints, serve_asgi


@pytest.fixture
def printed(deploy: Callable[..., App], lab: list[fleet.LabHost]) -> Instance:
    app = deploy("talker", instances=1)
    instance = Instance.objects.select_related("host", "app").get(app=app)
    app_prints(
        lab,
        instance,
        "echo first out; echo first err >&2; printf 'caf\\351 \\033[1mbold\\033[0m <b>x</b>\\n'",
    )
    return instance


def test_the_api_gives_the_lines_with_their_streams_times_and_bounds(
    printed: Instance, owner: User, outsider: User, lab: list[fleet.LabHost]
) -> None:
    api = api_client(owner)
    url = f"/api/v1/instances/{printed.pk}/logs/"
    text = b"".join(api.get(url).streaming_content).decode()  # type: ignore[attr-defined]
    # Docker reads the two pipes apart: lines keep their order within a stream, not across.
    assert sorted(text.splitlines()) == sorted(
        ["first out", "first err", "caf\ufffd \x1b[1mbold\x1b[0m <b>x</b>"]
    )
    assert text.index("first out") < text.index("caf")

    response = api.get(url, {"json": "1", "timestamps": "1"})
    assert response["Content-Type"] == "application/x-ndjson"
    records = [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]  # type: ignore[attr-defined]
    assert {(r["stream"], r["text"]) for r in records} >= {("stdout", "first out"), ("stderr", "first err")}
    assert all(r["time"].startswith("20") and r["time"].endswith("Z") for r in records)

    only_err = b"".join(api.get(url, {"stream": "stderr"}).streaming_content).decode()  # type: ignore[attr-defined]
    assert only_err == "first err\n"
    assert b"".join(api.get(url, {"tail": "1"}).streaming_content).decode().count("\n") == 1  # type: ignore[attr-defined]
    later = time.time() + 3600
    assert b"".join(api.get(url, {"since": str(later)}).streaming_content) == b""  # type: ignore[attr-defined]

    bad = api.get(url, {"tail": "lots"}, HTTP_ACCEPT="application/json")
    assert bad.status_code == 400
    assert bad.json()["tail"] == ["'lots' is not a number of lines from 1 to 10000, or \"all\"."]
    # Another team's developer does not learn the instance exists.
    assert api_client(outsider).get(url).status_code == 404


def test_ten_thousand_lines_and_a_download_of_everything(
    printed: Instance, owner: User, lab: list[fleet.LabHost]
) -> None:
    app_prints(lab, printed, "seq 1 10000")
    api = api_client(owner)
    url = f"/api/v1/instances/{printed.pk}/logs/"
    tail = b"".join(api.get(url, {"tail": "10000"}).streaming_content).decode().splitlines()  # type: ignore[attr-defined]
    assert tail == [str(n) for n in range(1, 10001)]  # the 3 lines before are past the tail
    response = api.get(url, {"tail": "all", "timestamps": "1", "download": "1"})
    assert response["Content-Disposition"] == 'attachment; filename="slw-talker-0.log"'
    everything = b"".join(response.streaming_content).decode().splitlines()  # type: ignore[attr-defined]
    assert len(everything) == 10003
    assert any(line.endswith(" first out") for line in everything[:3]) and everything[-1].endswith(" 10000")


def test_the_logs_panel_filters_marks_stderr_and_shows_a_line_safely(
    printed: Instance, owner: User, outsider: User
) -> None:
    client = Client()
    client.force_login(owner)
    url = reverse("console:logs", args=["talker", 0])
    page = client.get(url).content.decode()
    assert "first out" in page and "3 lines" in page
    assert (
        '<span class="log-line log-stderr"><abbr title="standard error">err</abbr> first err</span>' in page
    )
    # The markup the app printed is text on the page; its escapes are gone.
    assert "caf\ufffd bold &lt;b&gt;x&lt;/b&gt;" in page
    filtered = client.get(url, {"q": "ERR"}).content.decode()
    assert "1 of 3 lines contain “ERR”" in filtered and "first out" not in filtered
    refused = client.get(url, {"tail": "all"})
    assert refused.status_code == 422
    assert "tail: &#x27;all&#x27; is not a number of lines from 1 to 10000." in refused.content.decode()
    other = Client()
    other.force_login(outsider)
    assert other.get(url).status_code == 404


def test_the_app_logs_merge_its_instances_by_time_each_line_marked(
    deploy: Callable[..., App], owner: User, outsider: User, lab: list[fleet.LabHost]
) -> None:
    app = deploy("chorus", instances=2)
    first, second = Instance.objects.select_related("host").filter(app=app).order_by("slot")
    assert first.host_id != second.host_id  # one on each lab host
    for n in range(3):
        app_prints(lab, first, f"echo zero says {n}")
        app_prints(lab, second, f"echo one says {n}")
    api = api_client(owner)
    text = api.get(f"/api/v1/apps/{app.slug}/logs/").content.decode()
    assert text.splitlines() == [
        f"{name} {who} says {n}"
        for n in range(3)
        for name, who in (("slw-chorus-0", "zero"), ("slw-chorus-1", "one"))
    ]
    records = [
        json.loads(line)
        for line in api.get(f"/api/v1/apps/{app.slug}/logs/", {"json": "1", "tail": "2"}).content.splitlines()
    ]
    assert [(r["instance"], r["text"]) for r in records] == [
        ("slw-chorus-0", "zero says 2"),
        ("slw-chorus-1", "one says 2"),
    ]
    bad = api.get(f"/api/v1/apps/{app.slug}/logs/", {"tail": "all"}, HTTP_ACCEPT="application/json")
    assert bad.status_code == 400 and "from 1 to 10000" in bad.json()["tail"][0]
    assert api_client(outsider).get(f"/api/v1/apps/{app.slug}/logs/").status_code == 404


def test_the_api_follows_over_http_with_a_token(
    deploy: Callable[..., App], owner: User, lab: list[fleet.LabHost], transactional_db: None
) -> None:
    """`follow=1` through daphne, as a CLI reads it: chunked text with a token, no websocket."""
    app = deploy("streamer", instances=1)
    instance = Instance.objects.select_related("host", "app").get(app=app)
    app_prints(lab, instance, "echo before")
    token = api_token(owner, scope="read")  # following a log only reads
    with serve_asgi(_database_url(), TEST_BROKER_URL) as base:
        for path, prefix in (
            (f"/api/v1/instances/{instance.pk}/logs/", ""),
            (f"/api/v1/apps/{app.slug}/logs/", f"{instance.container_name} "),
        ):
            request = urllib.request.Request(  # noqa: S310 - our own http URL
                f"{base}{path}?follow=1&tail=10", headers={"Authorization": f"Token {token}"}
            )
            with urllib.request.urlopen(request, timeout=20) as answer:  # noqa: S310 - our own http URL
                assert answer.headers["Content-Type"].startswith("text/plain")
                assert answer.readline().decode() == f"{prefix}before\n"
                app_prints(lab, instance, "echo while followed")
                assert answer.readline().decode() == f"{prefix}while followed\n"
