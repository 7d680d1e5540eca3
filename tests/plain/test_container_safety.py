"""Nothing a user (or ops) can send makes a container privileged or lets it reach outside its
app volume: every path into the container spec is checked on the server, and the create call
itself only ever carries an allow-listed set of host settings."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.test import Client
from rest_framework.test import APIClient

from apps.accounts.models import Team
from apps.applications import services
from apps.applications.models import App, BaseImage
from apps.hosts.models import Host
from apps.hosts.transport.docker_api.containers import _create_args
from apps.instances.models import Instance
from apps.instances.spec import instance_spec
from apps.network.models import IPPool

# What the portal's create call may set on the host side; anything else (Privileged, CapAdd,
# Devices, SecurityOpt, Sysctls, PidMode, IpcMode, UsernsMode, VolumesFrom, ...) is a defect.
ALLOWED_HOST_CONFIG = {
    "Binds",
    "Memory",
    "MemorySwap",
    "NanoCpus",
    "PidsLimit",  # a bound, never lifted: the setting is at least 16
    "LogConfig",  # json-file with rotation
    "RestartPolicy",
    "Init",
    "NetworkMode",
    "PortBindings",
}
CONTAINER_PATHS = [
    "/run/docker.sock",
    "/var/run/docker.sock",
    "/srv/../etc",
    "/proc/1",
    "/",
    "/srv//app",
    "srv",
]


@pytest.fixture
def web(owner: User, alpha: Team, image: BaseImage, hosts: list[Host]) -> App:
    app = services.app_create(user=owner, team=alpha, slug="web", base_image=image, port=8080)
    services.app_scale(user=owner, app=app, instances=2)
    return app


@pytest.mark.parametrize("path", CONTAINER_PATHS)
def test_mount_and_workdir_refuse_system_paths_in_any_spelling(owner: User, web: App, path: str) -> None:
    for field in ("volume_mount", "workdir"):
        with pytest.raises(ValidationError) as caught:
            services.app_update(user=owner, app=web, **{field: path})
        assert field in caught.value.message_dict
    api = APIClient()
    api.force_authenticate(owner)
    response = api.patch("/api/v1/apps/web/", {"volume_mount": path, "workdir": path}, format="json")
    assert response.status_code == 400 and {"volume_mount", "workdir"} <= set(response.data)
    web.refresh_from_db()
    assert web.volume_mount == "" and web.workdir == ""


def test_the_create_call_carries_only_allow_listed_host_settings(web: App, hosts: list[Host]) -> None:
    for instance in Instance.objects.filter(app=web).select_related("app__base_image", "host", "image"):
        args = _create_args(instance_spec(instance), "1.41")
        host_config = dict(args["host_config"])
        assert set(host_config) <= ALLOWED_HOST_CONFIG, set(host_config) - ALLOWED_HOST_CONFIG
        assert host_config.get("Privileged") in (None, False)
        assert host_config.get("NetworkMode") not in ("host", "none") and "container:" not in str(
            host_config.get("NetworkMode")
        )
        # The app's persistent directory read-write and its release's files read-only, both
        # under the host's volume root: nothing else.
        root = instance.host.volume_root.rstrip("/")
        assert host_config["Binds"] == [
            f"{root}/web/state:/srv/data:rw",
            f"{root}/web/releases/1:/srv/app:ro",
        ]
        assert "User" not in args or args["User"] in ("", None)


@pytest.mark.parametrize("network", ["host", "none", "bridge", "container:abc", "HOST", "pub lic"])
def test_a_pool_cannot_name_a_docker_network_mode(network: str, db: None) -> None:
    pool = IPPool(
        name="p", network="10.9.0.0/24", gateway="10.9.0.1", range_start="10.9.0.10", range_end="10.9.0.20"
    )
    pool.docker_network = network
    with pytest.raises(ValidationError) as caught:
        pool.full_clean()
    assert "is not a network a pool can use" in str(caught.value.message_dict["docker_network"])


@pytest.mark.parametrize(
    "root",
    [
        "/",
        "/etc",
        "/etc/slipway",
        "/run",
        "/var/run/docker",
        "/var/lib/docker/volumes",
        "/proc",
        "/srv//x",
        "/srv/../etc",
    ],
)
def test_a_host_volume_root_cannot_be_a_system_directory(root: str, db: None) -> None:
    host = Host(name="h9", address="127.0.0.1", volume_root=root)
    with pytest.raises(ValidationError) as caught:
        host.full_clean(exclude=["host_key"])
    assert "volume_root" in caught.value.message_dict


def test_ops_cannot_change_an_app_through_the_admin(web: App) -> None:
    # Apps change only through the services (the checks above); the admin shows them read-only,
    # even to a superuser.
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.invalid", "pw"))
    assert client.get(f"/admin/catalog/app/{web.pk}/change/").status_code == 200
    response = client.post(
        f"/admin/catalog/app/{web.pk}/change/", {"volume_mount": "/run/docker.sock", "workdir": "/proc/self"}
    )
    assert response.status_code == 403
    web.refresh_from_db()
    assert web.volume_mount == "" and web.workdir == ""
