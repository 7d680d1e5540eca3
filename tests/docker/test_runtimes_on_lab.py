"""The ready-made runtimes on the lab fleet, as ops and developers use them: the Java image (JRE 17
and Tomcat 10 from Debian) is made from its ready-made recipe, built and published to both hosts;
the example WAR of docs/runtimes.md is deployed through a release, scaled to 2, and rolled onto a
version with a newer JRE, published through the lab's registry (pushed once, pulled by both hosts,
the digest checked on each); the Node.js and Python examples answer their health checks.

The trees are built with mmdebstrap from the distribution's packages (tests/builds builds them
first, beside the lab tests, and checks the builds themselves; here they are reused when there)."""

from __future__ import annotations

import re
import shutil
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User

from apps.accounts.models import Team
from apps.applications import services
from apps.applications.models import App, BaseImage, BuildState
from apps.hosts.models import Host
from apps.images import publish, registry_settings, starters, versions
from apps.instances.models import Instance, Operation
from apps.lab import fleet
from apps.lab import registry as lab_registry
from apps.network.models import IPPool
from tests.docker import releases_support
from tests.helpers import eventually
from tests.runtimes_support import example_files, java_recipe, jre_versions


def _get(address: str, port: int, path: str) -> str | None:
    try:
        with urllib.request.urlopen(f"http://{address}:{port}{path}", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return None


def _publish(ops: User, image: BaseImage, lab: list[fleet.LabHost]) -> BaseImage:
    for lab_host in lab:  # loaded by an earlier run: take it away, so the load is exercised
        fleet.docker(lab_host, "rmi", "-f", image.reference, check=False)
    publish.image_publish(user=ops, image=image)
    publish.run(image.pk)
    image.refresh_from_db()
    assert image.state == BuildState.PUBLISHED, (image.build_error, image.build_log)
    assert {h.name for h in image.hosts.all()} == {h.name for h in lab}
    return image


@pytest.fixture
def images(lab: list[fleet.LabHost]) -> Iterator[list[BaseImage]]:
    made: list[BaseImage] = []
    yield made
    hostport = lab_registry.LabRegistry.of(lab[0].config).hostport
    for image in made:
        for lab_host in lab:
            fleet.docker(lab_host, "rmi", "-f", image.reference, f"{hostport}/{image.reference}", check=False)


def _app(
    owner: User, alpha: Team, image: BaseImage, slug: str, lab: list[fleet.LabHost], **kwargs: Any
) -> App:
    for lab_host in lab:
        shutil.rmtree(lab_host.volume_root / slug, ignore_errors=True)
    return services.app_create(
        user=owner,
        team=alpha,
        slug=slug,
        base_image=image,
        health_check="http",
        health_path="/health",
        **kwargs,
    )


def _says(instance: Instance, port: int, pattern: str) -> str:
    return eventually(
        lambda: (lambda text: text if text and re.search(pattern, text) else None)(
            _get(str(instance.address), port, "/")
        ),
        30,
        f"{instance.container_name} answering {pattern!r}",
    )


def test_the_java_example_war_deploys_scales_and_rolls_onto_a_newer_jre(
    ops: User,
    owner: User,
    alpha: Team,
    lab: list[fleet.LabHost],
    lab_hosts: list[Host],
    lab_pool: IPPool,
    remove_apps: list[str],
    images: list[BaseImage],
) -> None:
    found = jre_versions()
    if len(found) < 2:
        pytest.skip(f"the package lists have one JRE 17 build only ({found}): nothing newer to roll onto")
    old, new = found[0], found[-1]
    java = starters.JAVA
    # Ops make the image from the ready-made recipe (pinned to the older JRE, as it was when first
    # published), then a new version of it that takes the newer JRE.
    v1 = versions.image_create(
        user=ops,
        name=java.name,
        tag="17-test",
        runtime=java.runtime,
        recipe=java_recipe(old),
        default_port=java.port,
    )
    images.append(v1)
    v1 = _publish(ops, v1, lab)
    assert v1.size and v1.size > 100_000_000  # a JRE and a servlet container, not a stub

    remove_apps.append("hello-java")
    app = _app(owner, alpha, v1, "hello-java", lab, memory_mb=384, cpus="0.5", port=8080, health_timeout=90)
    release, op = releases_support.ship(owner, app, example_files("java"))
    assert op is None and release.number == 2  # no instances yet: they start on it
    scaled = releases_support.run(services.app_scale(user=owner, app=app, instances=2))
    assert scaled.status == Operation.Status.SUCCEEDED, scaled.error
    instances = list(Instance.objects.filter(app=app).order_by("slot"))
    assert len(instances) == 2 and len({i.host_id for i in instances}) == 2  # one per host
    old_build = re.escape(old.split("+")[0])
    for instance in instances:
        said = _says(instance, 8080, rf"on Java {old_build}\+")
        assert f"Hello from {instance.container_name} " in said and "Apache Tomcat/10" in said
        assert _get(str(instance.address), 8080, "/health") == "ok\n"

    # The new version goes out through the registry: pushed once, pulled by both hosts.
    registry = lab_registry.up(lab[0].config, log=lambda _: None)
    username, password = registry.credentials()
    registry_settings.registry_save(
        user=ops, url=registry.url, username=username, password=password, ca_pem=registry.ca_pem()
    )
    v2 = versions.version_create(
        user=ops, base=v1, tag="17-test-2", recipe=java_recipe(), default_port=java.port
    )
    images.append(v2)
    v2 = _publish(ops, v2, lab)
    assert v2.digest != v1.digest
    for name, row in v2.load_progress.items():
        assert (row["state"], row["note"]) == ("loaded", f"pulled from {registry.hostport}"), name
    started, refused = services.apps_upgrade(user=ops, target=v2, apps=[app])
    assert refused == [] and len(started) == 1
    rolled = releases_support.run(started[0])
    assert rolled.status == Operation.Status.SUCCEEDED, rolled.error
    new_build = re.escape(new.split("+")[0])
    hosts = {h.name: h for h in lab}
    for instance in Instance.objects.filter(app=app).select_related("host").order_by("slot"):
        running = fleet.docker(
            hosts[instance.host.name], "inspect", "-f", "{{.Image}}", instance.container_name
        )
        assert running.stdout.strip() == v2.digest
        _says(instance, 8080, rf"on Java {new_build}\+")


@pytest.mark.parametrize(("key", "says"), [("node", r"on Node\.js v18\."), ("python", r"on Python 3\.11\.")])
def test_the_node_and_python_examples_answer_their_health_checks(
    key: str,
    says: str,
    ops: User,
    owner: User,
    alpha: Team,
    lab: list[fleet.LabHost],
    lab_hosts: list[Host],
    lab_pool: IPPool,
    remove_apps: list[str],
    images: list[BaseImage],
) -> None:
    starter = starters.STARTERS[key]
    image = versions.image_create(
        user=ops,
        name=starter.name,
        tag=f"{starter.tag}-test",
        runtime=starter.runtime,
        recipe=starter.recipe,
        default_port=starter.port,
    )
    images.append(image)
    image = _publish(ops, image, lab)
    slug = f"hello-{key}"
    remove_apps.append(slug)
    app = _app(
        owner, alpha, image, slug, lab, memory_mb=128, cpus="0.25", port=starter.port, health_timeout=30
    )
    releases_support.ship(owner, app, example_files(key))
    scaled = releases_support.run(services.app_scale(user=owner, app=app, instances=1))
    assert scaled.status == Operation.Status.SUCCEEDED, scaled.error
    instance = Instance.objects.get(app=app)
    said = _says(instance, starter.port, says)
    assert f"Hello from {instance.container_name} " in said
    assert _get(str(instance.address), starter.port, "/health") == "ok\n"
