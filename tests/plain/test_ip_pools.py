"""IP pools and allocations: every refusal says why; the database decides races."""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import connection

from apps.accounts.models import Team
from apps.applications import services
from apps.applications.models import App, BaseImage
from apps.hosts.models import Host
from apps.instances.models import Instance
from apps.network import services as network
from apps.network.models import IPAllocation, IPPool


@pytest.fixture
def pool(hosts: list[Host]) -> IPPool:
    pool = IPPool.objects.create(
        name="public",
        network="10.50.0.0/24",
        gateway="10.50.0.1",
        range_start="10.50.0.10",
        range_end="10.50.0.20",
        excluded="10.50.0.12, 10.50.0.15-10.50.0.16",
    )
    pool.full_clean()
    pool.hosts.set(hosts)
    return pool


@pytest.fixture
def app(owner: User, alpha: Team, image: BaseImage, pool: IPPool) -> App:
    return services.app_create(user=owner, team=alpha, slug="web", base_image=image)


def test_new_apps_take_the_only_pool_and_instances_get_the_lowest_free_addresses(
    app: App, owner: User
) -> None:
    assert app.ip_pool is not None and app.ip_pool.name == "public"
    services.app_scale(user=owner, app=app, instances=4)
    # .12 and .15-.16 are excluded.
    assert list(Instance.objects.filter(app=app).order_by("slot").values_list("address", flat=True)) == [
        "10.50.0.10",
        "10.50.0.11",
        "10.50.0.13",
        "10.50.0.14",
    ]


def test_an_address_sticks_to_its_slot(app: App, owner: User) -> None:
    services.app_scale(user=owner, app=app, instances=2)
    first = IPAllocation.objects.get(app=app, slot=1)
    assert network.address_allocate(app=app, slot=1) == first
    services.app_scale(user=owner, app=app, instances=1)
    # Marked for removal, but the address is held until the container is really gone.
    assert IPAllocation.objects.filter(app=app, slot=1).exists()


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("10.50.0.999", "is not an IP address"),
        ("hello", "is not an IP address"),
        ("fd00::5", "is IPv6; pool public is IPv4"),
        ("10.51.0.10", "outside pool public's network 10.50.0.0/24"),
        ("10.50.0.0", "network address"),
        ("10.50.0.255", "broadcast address"),
        ("10.50.0.1", "gateway of pool public"),
        ("10.50.0.30", "outside pool public's range 10.50.0.10 - 10.50.0.20"),
        ("10.50.0.16", "excluded from pool public"),
    ],
)
def test_a_requested_address_is_refused_with_the_reason(
    app: App, owner: User, address: str, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        network.address_request(user=owner, app=app, address=address)
    assert message in " ".join(caught.value.messages)
    assert not IPAllocation.objects.exists()


def test_an_allocated_address_is_refused_and_a_slot_holds_one_address(
    app: App, owner: User, alpha: Team, image: BaseImage
) -> None:
    network.address_request(user=owner, app=app, address="10.50.0.17", slot=0)
    other = services.app_create(user=owner, team=alpha, slug="other", base_image=image)
    with pytest.raises(ValidationError, match=r"10\.50\.0\.17 is already allocated"):
        network.address_request(user=owner, app=other, address="10.50.0.17")
    with pytest.raises(ValidationError, match=r"Slot 0 of web already holds 10\.50\.0\.17"):
        network.address_request(user=owner, app=app, address="10.50.0.18", slot=0)
    # The requested address is what slot 0 gets on the next scale-up.
    services.app_scale(user=owner, app=app, instances=1)
    assert Instance.objects.get(app=app, slot=0).address == "10.50.0.17"


def test_an_app_can_be_created_with_its_old_vm_address(
    owner: User, alpha: Team, image: BaseImage, pool: IPPool
) -> None:
    app = services.app_create(
        user=owner, team=alpha, slug="legacy", base_image=image, address="10.50.0.19", instances=1
    )
    assert Instance.objects.get(app=app).address == "10.50.0.19"
    assert IPAllocation.objects.get(app=app).requested


def test_an_exhausted_pool_says_so(app: App, owner: User) -> None:
    with pytest.raises(ValidationError, match="IP pool public has no free address left"):
        services.app_scale(user=owner, app=app, instances=9)  # 8 addresses in the range
    assert not Instance.objects.filter(app=app).exists()
    assert not IPAllocation.objects.exists()


def test_a_pool_with_bad_bounds_is_refused(db: None) -> None:
    pool = IPPool(
        name="bad",
        network="10.60.0.0/24",
        gateway="10.61.0.1",
        range_start="10.60.0.5",
        range_end="10.60.0.9",
    )
    with pytest.raises(ValidationError) as caught:
        pool.full_clean()
    assert "is not in 10.60.0.0/24" in str(caught.value.message_dict["gateway"])
    pool = IPPool(
        name="bad",
        network="10.60.0.0/24",
        gateway="10.60.0.1",
        range_start="10.60.0.50",
        range_end="10.60.0.40",
    )
    with pytest.raises(ValidationError) as caught:
        pool.full_clean()
    assert "must end at or after its start" in str(caught.value.message_dict["range_end"])
    pool = IPPool(
        name="bad",
        network="10.60.0.1/24",
        gateway="10.60.0.1",
        range_start="10.60.0.5",
        range_end="10.60.0.9",
    )
    with pytest.raises(ValidationError, match="Not a network in CIDR form"):
        pool.full_clean()
    pool = IPPool(
        name="bad",
        network="10.60.0.0/24",
        gateway="10.60.0.1",
        range_start="10.60.0.5",
        range_end="10.60.0.9",
        excluded="10.60.0.9-10.60.0.7",
    )
    with pytest.raises(ValidationError, match="the range must go up"):
        pool.full_clean()


def test_apps_on_a_pool_are_placed_only_on_hosts_that_serve_it(
    app: App, owner: User, pool: IPPool, hosts: list[Host]
) -> None:
    pool.hosts.set([hosts[1]])
    services.app_scale(user=owner, app=app, instances=2)
    assert set(Instance.objects.filter(app=app).values_list("host__name", flat=True)) == {"h2"}


@pytest.mark.django_db(transaction=True)
def test_two_requests_for_one_address_at_once_have_exactly_one_winner(
    owner: User, alpha: Team, image: BaseImage, pool: IPPool
) -> None:
    apps = [
        services.app_create(user=owner, team=alpha, slug=f"racer-{n}", base_image=image) for n in range(2)
    ]
    barrier = threading.Barrier(2)
    results: list[str] = []

    def claim(app: App) -> None:
        try:
            barrier.wait()
            network.address_request(user=owner, app=app, address="10.50.0.20")
            results.append("won")
        except ValidationError as exc:
            results.append(" ".join(exc.messages))
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(app,)) for app in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["10.50.0.20 is already allocated.", "won"]
    assert IPAllocation.objects.filter(address="10.50.0.20").count() == 1


def test_the_database_itself_refuses_a_second_holder(app: App, owner: User, pool: IPPool) -> None:
    from django.db import IntegrityError, transaction

    IPAllocation.objects.create(pool=pool, address="10.50.0.10", app=app, slot=0)
    with pytest.raises(IntegrityError), transaction.atomic():
        IPAllocation.objects.create(pool=pool, address="10.50.0.10", app=app, slot=1)
