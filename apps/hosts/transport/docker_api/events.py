"""What happens to a host's containers, as Docker says it happens: its event stream.

The stream is asked for one window at a time (`since` the last event seen, `until` a minute
on): Docker then ends it itself, so a host that froze is noticed when the read deadline past
the window passes, and no event is lost between windows (the next one starts where this one
ended; Docker keeps its recent events in memory to replay)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from docker.client import DockerClient

from apps.hosts.transport.docker_api.client import translate
from apps.hosts.transport.docker_api.logs import CHUNK

# What the portal acts on: a start, a death (with its exit code), an OOM kill, and a kill or
# stop sent through the API (so the death after it is a stop, not a crash).
ACTIONS = ("start", "die", "oom", "kill", "stop")


@dataclass(frozen=True)
class DockerEvent:
    action: str  # one of ACTIONS
    container_id: str
    name: str
    time_ns: int  # the daemon's clock, nanoseconds since the epoch
    labels: dict[str, str] = field(default_factory=dict)  # the container's io.slipway.* labels
    exit_code: int | None = None  # die
    signal: int | None = None  # kill

    @property
    def time(self) -> float:
        return self.time_ns / 1e9

    @classmethod
    def of(cls, message: dict[str, Any]) -> DockerEvent | None:
        action = str(message.get("Action") or message.get("status") or "")
        # Docker names an exec's events "exec_start: sh -c ..." and a health check's
        # "health_status: healthy": only the plain ones are ours.
        if action not in ACTIONS:
            return None
        actor = message.get("Actor") or {}
        attributes: dict[str, str] = actor.get("Attributes") or {}
        time_ns = int(message.get("timeNano") or int(message.get("time") or 0) * 1_000_000_000)

        def number(key: str) -> int | None:
            value = attributes.get(key)
            return int(value) if value is not None and value.lstrip("-").isdigit() else None

        return cls(
            action=action,
            container_id=str(actor.get("ID") or message.get("id") or ""),
            name=str(attributes.get("name", "")),
            time_ns=time_ns,
            labels={k: v for k, v in attributes.items() if k.startswith("io.slipway.")},
            exit_code=number("exitCode"),
            signal=number("signal"),
        )


def container_events(
    client: DockerClient, where: str, *, label: str, since_ns: int, until: float, read_timeout: float
) -> Iterator[DockerEvent]:
    """The events of containers with `label` from `since_ns` (inclusive, nanoseconds) until
    `until` (seconds), oldest first, as they happen. Errors are raised as HostErrors; a read
    that waits longer than `read_timeout` is one (Docker ends the stream at `until`)."""
    api = client.api
    filters = {"type": ["container"], "label": [label], "event": list(ACTIONS)}
    params = {
        "since": f"{since_ns // 1_000_000_000}.{since_ns % 1_000_000_000:09d}",
        "until": f"{until:.9f}",
        "filters": json.dumps(filters),
    }
    try:
        response = api._get(api._url("/events"), params=params, stream=True, timeout=read_timeout)
        api._raise_for_status(response)
    except Exception as exc:
        raise translate(exc, where) from exc
    try:
        pending = b""
        raw = response.raw
        chunks = (
            raw.read_chunked(CHUNK, decode_content=False)
            if raw.chunked
            else iter(lambda: raw.read1(CHUNK), b"")
        )
        for chunk in chunks:
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if line.strip() and (event := DockerEvent.of(json.loads(line))) is not None:
                    yield event
    except Exception as exc:
        raise translate(exc, where) from exc
    finally:
        response.close()
