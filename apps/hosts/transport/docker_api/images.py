"""Images from a registry on a host through the Docker API: pull (credentials only in that
request) and tag."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from docker.client import DockerClient
from docker.errors import APIError, NotFound

from apps.hosts.transport import ContainerFailed, HostError
from apps.hosts.transport.docker_api.client import translate

# A layer in one of these has come down whole.
LAYER_DOWN = {"Verifying Checksum", "Download complete", "Extracting", "Pull complete"}


def _downloaded(layers: dict[str, tuple[int, int]], message: dict[str, Any]) -> None:
    """Keep each downloading layer's (bytes done, bytes in all) from a pull's progress message."""
    layer = message.get("id")
    status = message.get("status")
    detail = message.get("progressDetail") or {}
    if not isinstance(layer, str):
        return
    if status == "Downloading" and detail.get("total"):
        layers[layer] = (int(detail.get("current") or 0), int(detail["total"]))
    elif status in LAYER_DOWN and layer in layers:
        total = layers[layer][1]
        layers[layer] = (total, total)


@contextlib.contextmanager
def _asking(where: str, doing: str) -> Iterator[None]:
    """Docker's refusals and lost connections as the portal's host errors, saying what was asked."""
    try:
        yield
    except HostError:
        raise
    except APIError as exc:
        raise ContainerFailed(f"{where}: Docker could not {doing}: {exc.explanation or exc}") from exc
    except Exception as exc:
        raise translate(exc, where) from exc


def image_pull(
    client: DockerClient,
    reference: str,
    auth: dict[str, str],
    where: str,
    on_progress: Callable[[int, int], None] | None = None,
) -> str:
    """Pull host:port/name:tag; the image ID the host has under it afterwards. `auth` (username
    and password, or empty) travels only in this request's X-Registry-Auth header: Docker keeps
    it for the pull and writes it nowhere; nothing here logs it. An empty one also keeps
    docker-py from reading a ~/.docker/config.json where the portal runs."""
    repository, _, tag = reference.rpartition(":")
    layers: dict[str, tuple[int, int]] = {}
    with _asking(where, f"pull {reference}"):
        for message in client.api.pull(repository, tag=tag, stream=True, decode=True, auth_config=dict(auth)):
            if message.get("error"):
                detail = str((message.get("errorDetail") or {}).get("message") or message["error"])
                raise ContainerFailed(f"{where}: Docker could not pull {reference}: {detail}")
            _downloaded(layers, message)
            if on_progress is not None and layers:
                on_progress(
                    sum(done for done, _ in layers.values()), sum(total for _, total in layers.values())
                )
        return str(client.api.inspect_image(reference)["Id"])


def image_tag(client: DockerClient, image: str, reference: str, where: str) -> None:
    """Name the image (an ID or a reference) `reference` too (name:tag), as `docker tag` does."""
    repository, _, tag = reference.rpartition(":")
    with _asking(where, f"tag {image} as {reference}"):
        client.api.tag(image, repository, tag=tag, force=True)


def image_untag(client: DockerClient, reference: str, where: str) -> None:
    """Drop the name `reference` (the image stays while another name or a container uses it)."""
    with _asking(where, f"remove the name {reference}"), contextlib.suppress(NotFound):
        client.api.remove_image(reference, noprune=False)
