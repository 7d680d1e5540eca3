"""Publishing through a registry (issue 23), on the lab's real one: Debian's docker-registry on
the bridge, TLS from the lab CA, htpasswd sign-in. A version is pushed once and pulled by both
lab hosts with its digest checked; a registry that cannot be reached, is not trusted or rejects
the credentials is refused when ops save it; a host that pulls another image under the tag is
marked and not offered the version."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.test import override_settings

from apps.applications.models import BaseImage, BuildState
from apps.audit.models import AuditEntry
from apps.hosts import gateway
from apps.hosts.models import Host
from apps.images import imagebuild, publish, recipe, registry, registry_settings, rootfs
from apps.images.models import Registry
from apps.lab import fleet
from apps.lab import registry as lab_registry


@pytest.fixture(scope="session")
def registry_up(lab: list[fleet.LabHost]) -> lab_registry.LabRegistry:
    return lab_registry.up(lab[0].config, log=lambda _: None)


@pytest.fixture
def configured(registry_up: lab_registry.LabRegistry, ops: User, lab_hosts: list[Host]) -> Registry:
    username, password = registry_up.credentials()
    return registry_settings.registry_save(
        user=ops,
        url=registry_up.url,
        username=username,
        password=password,
        ca_pem=registry_up.ca_pem(),
    )


@pytest.fixture
def version(busybox: BaseImage, lab: list[fleet.LabHost]) -> Iterator[BaseImage]:
    """A new busybox version (a tag of its own each run, so the registry has no such tag yet)."""
    image = BaseImage.objects.create(
        name="slipway/busybox",
        tag=f"reg-{secrets.token_hex(3)}",
        runtime="busybox",
        recipe=busybox.recipe,
        state=BuildState.DRAFT,
    )
    yield image
    for lab_host in lab:
        for reference in (
            image.reference,
            f"{lab_registry.LabRegistry.of(lab_host.config).hostport}/{image.reference}",
        ):
            fleet.docker(lab_host, "rmi", reference, check=False)


def _publish(image: BaseImage, ops: User) -> BaseImage:
    publish.image_publish(user=ops, image=image)
    publish.run(image.pk)
    image.refresh_from_db()
    return image


def _image_id(lab_host: fleet.LabHost, reference: str) -> str:
    return fleet.docker(lab_host, "image", "inspect", "-f", "{{.Id}}", reference, check=False).stdout.strip()


def test_a_version_is_pushed_once_and_pulled_by_both_hosts_with_its_digest(
    configured: Registry,
    registry_up: lab_registry.LabRegistry,
    version: BaseImage,
    lab: list[fleet.LabHost],
    lab_hosts: list[Host],
    ops: User,
) -> None:
    image = _publish(version, ops)

    assert image.state == BuildState.PUBLISHED, image.build_error
    assert set(image.hosts.all()) == set(lab_hosts)
    # The outcome is a row of the portal's, after the one of ops asking for it.
    asked, done = AuditEntry.objects.filter(
        object_id=str(image.pk), action__startswith="image.publish"
    ).order_by("id")
    assert (asked.action, asked.actor_name) == ("image.publish", "ops")
    assert (done.action, done.actor, done.data["digest"]) == ("image.published", None, image.digest)
    assert done.summary.endswith(f"on {len(lab_hosts)} host(s)")
    for lab_host in lab:
        assert _image_id(lab_host, image.reference) == image.digest
        row = image.load_progress[lab_host.name]
        assert (row["state"], row["error"], row["note"]) == (
            "loaded",
            "",
            f"pulled from {registry_up.hostport}",
        )
    # The registry holds the version under its tag: its config is the digest the hosts run.
    with registry.Client(registry_settings.access(configured), 10) as client:
        manifest = client.manifest(image.name, image.tag)
    assert manifest is not None and manifest["config"]["digest"] == image.digest
    # Docker on the hosts trusts the lab CA for the registry, through the file the portal wrote.
    ca = Path(gateway.DOCKER_CERTS_DIR) / registry_up.hostport / "ca.crt"
    assert ca.read_text() == registry_up.ca_pem()
    # The password is in no page-facing field, no audit row and no Docker config on the hosts.
    _, password = registry_up.credentials()
    assert password not in f"{image.load_progress} {image.build_error}"
    assert not AuditEntry.objects.filter(data__icontains=password).exists()
    assert not AuditEntry.objects.filter(summary__icontains=password).exists()
    docker_config = Path.home() / ".docker" / "config.json"
    assert not docker_config.exists() or registry_up.hostport not in docker_config.read_text()
    assert password not in configured.password_sealed

    # Published again (a host lost it): the push finds the tag in place, the host pulls again.
    fleet.docker(lab[1], "rmi", image.reference)
    image = _publish(image, ops)
    assert image.state == BuildState.PUBLISHED, image.build_error
    assert _image_id(lab[1], image.reference) == image.digest
    assert image.load_progress[lab[0].name]["note"] == "had it already"


def test_saving_is_refused_for_an_unreachable_untrusted_or_wrong_registry(
    registry_up: lab_registry.LabRegistry, ops: User, silent_listener: int
) -> None:
    username, password = registry_up.credentials()
    ca = registry_up.ca_pem()
    ip = registry_up.config.portal_ip

    def refused(field: str, **given: str) -> str:
        fields: dict[str, Any] = {
            "url": registry_up.url,
            "username": username,
            "password": password,
            "ca_pem": ca,
            **given,
        }
        with pytest.raises(ValidationError) as caught:
            registry_settings.registry_save(user=ops, **fields)
        return " ".join(caught.value.message_dict[field])

    assert "connection refused" in refused("url", url=f"https://{ip}:{registry_up.port + 1}")
    with override_settings(REGISTRY_TIMEOUT=0.3):
        assert "did not answer within 0.3 s" in refused("url", url=f"https://127.0.0.1:{silent_listener}")
    assert "TLS verification failed" in refused("ca_pem", ca_pem="")
    assert f"rejects the credentials for user {username}" in refused("password", password="not-the-password")
    assert "asks for credentials" in refused("username", username="", password="")
    assert not Registry.objects.exists()  # nothing refused was saved


def _tampered(version: BaseImage, out: Path) -> imagebuild.Built:
    """Another image than the version: its recipe with a label more."""
    parsed = recipe.parse(version.recipe + "LABEL tampered=yes\n", list(rootfs.NAMES))
    tree = rootfs.rootfs_tar(parsed.rootfs, Path(settings.ROOTFS_CACHE), lambda _: None)
    return imagebuild.build(parsed, tree, version.reference, out)


def test_a_host_that_pulls_another_image_is_marked_and_not_offered_the_version(
    configured: Registry,
    version: BaseImage,
    lab: list[fleet.LabHost],
    lab_hosts: list[Host],
    ops: User,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The fault: between the first host's pull and the second's, someone pushes another image
    under the version's tag in the registry. The second host really pulls it, from the real
    registry; only the moment is arranged here (hosts pull one after the other)."""
    first, second = lab_hosts
    other = _tampered(version, tmp_path / "other.tar")
    real_pull = gateway.image_pull

    def pull(
        host: Host, reference: str, auth: dict[str, str], on_progress: Callable[[int, int], None]
    ) -> str:
        if host == second:
            registry.push(
                registry_settings.access(configured),
                other.path,
                version.name,
                version.tag,
                timeout=10,
                work_dir=tmp_path,
            )
        return real_pull(host, reference, auth, on_progress)

    monkeypatch.setattr(gateway, "image_pull", pull)
    with override_settings(REGISTRY_PULL_PARALLEL=1):
        image = _publish(version, ops)

    assert image.state == BuildState.FAILED
    assert list(image.hosts.all()) == [first]
    assert list(Host.objects.filter(images=image)) == [first]  # placement's question
    row = image.load_progress[second.name]
    expected = f"pulled {configured.hostport}/{image.reference} but got {other.digest}, not the published {image.digest}"
    assert (row["state"], row["error"]) == ("failed", expected)
    assert expected in image.build_error
    assert image.load_progress[first.name]["state"] == "loaded"
    assert _image_id(lab[0], image.reference) == image.digest
    # Nothing on the second host carries the version's name: not the plain one, not the registry's.
    assert _image_id(lab[1], image.reference) == ""
    assert _image_id(lab[1], f"{configured.hostport}/{image.reference}") == ""
