"""The consolidation planner: its plans keep every hard rule (capacity, spread, failing hosts
emptied), its moves can be applied one at a time, and it packs the synthetic fleet to the lower
bound. Timing is for the benchmark, never asserted here."""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict

import pytest

from apps.fleet.planner import HostCap, Item, Plan, lower_bound, plan, synthetic_fleet

TOLERANCE = 1e-6


def host(id: int, memory_mb: int = 1024, cpus: float = 4.0, usable: bool = True) -> HostCap:
    return HostCap(id=id, name=f"h{id}", memory_mb=memory_mb, cpus=cpus, usable=usable)


def item(id: int, app_id: int, host_id: int | None, memory_mb: int = 256, cpus: float = 0.5) -> Item:
    return Item(id=id, app_id=app_id, host_id=host_id, memory_mb=memory_mb, cpus=cpus)


def check(hosts: list[HostCap], items: list[Item], result: Plan, *, spread: bool = True) -> dict[int, int]:
    """Apply the moves in order, checking room at every step, and check the end state against
    every hard rule. Returns the final placement (item id -> host id)."""
    caps = {h.id: h for h in hosts}
    sizes = {i.id: i for i in items}
    where = {i.id: i.host_id for i in items}
    memory: dict[int | None, float] = defaultdict(float)
    cpus: dict[int | None, float] = defaultdict(float)
    for i in items:
        memory[i.host_id] += i.memory_mb
        cpus[i.host_id] += i.cpus
    emptied = set(result.emptied)
    for step, move in enumerate(result.moves):
        moved = sizes[move.item_id]
        assert move.app_id == moved.app_id
        assert where[move.item_id] == move.source, f"move {step} starts where the item is not"
        assert move.target not in emptied, f"move {step} targets a host being emptied"
        assert caps[move.target].usable, f"move {step} targets an unusable host"
        memory[move.source] -= moved.memory_mb
        cpus[move.source] -= moved.cpus
        memory[move.target] += moved.memory_mb
        cpus[move.target] += moved.cpus
        target = caps[move.target]
        assert memory[move.target] <= target.memory_mb + TOLERANCE, f"move {step} overfills memory"
        assert cpus[move.target] <= target.cpus + TOLERANCE, f"move {step} overfills CPU"
        where[move.item_id] = move.target

    unplaced = set(result.unplaced)
    assert {i: h for i, h in where.items() if i not in unplaced} == result.placement
    # Every item exactly once: placed on a host of the fleet, or reported unplaced and not moved.
    assert set(result.placement) | unplaced == set(sizes)
    assert not set(result.placement) & unplaced
    assert all(host_id in caps for host_id in result.placement.values())
    assert all(where[i] == sizes[i].host_id for i in unplaced)

    load: dict[int, list[Item]] = defaultdict(list)
    for item_id, host_id in where.items():
        if host_id in caps:
            load[host_id].append(sizes[item_id])
    for h in hosts:
        assert sum(i.memory_mb for i in load[h.id]) <= h.memory_mb + TOLERANCE
        assert sum(i.cpus for i in load[h.id]) <= h.cpus + TOLERANCE
        if not h.usable:
            assert {i.id for i in load[h.id]} <= unplaced, f"unusable host {h.id} still carries instances"
    assert result.hosts_after == sum(1 for h in hosts if load[h.id])
    assert result.hosts_before == len({i.host_id for i in items if i.host_id in caps})
    assert set(result.emptied) == {i.host_id for i in items if i.host_id in caps} - {
        host_id for host_id, mine in load.items() if mine
    }

    if spread:
        spans_before: dict[int, set[int | None]] = defaultdict(set)
        for i in items:
            spans_before[i.app_id].add(i.host_id)
        spans_after: dict[int, set[int]] = defaultdict(set)
        for item_id, host_id in where.items():
            if host_id in caps:
                spans_after[sizes[item_id].app_id].add(host_id)
        unspread = {
            app
            for app, count in Counter(i.app_id for i in items).items()
            if count > 1
            and (result.hosts_after > 1 or len(spans_before[app] - {None}) > 1)
            and len(spans_after[app]) == 1
        }
        assert unspread == set(result.unspread)
    return dict(result.placement)


def back_to_back(result: Plan) -> int:
    return sum(1 for a, b in zip(result.moves, result.moves[1:], strict=False) if a.app_id == b.app_id)


def fewest_back_to_back(result: Plan) -> int:
    counts = Counter(m.app_id for m in result.moves)
    return max(0, 2 * max(counts.values(), default=0) - len(result.moves) - 1)


def test_the_synthetic_fleet_packs_to_the_lower_bound() -> None:
    hosts, items = synthetic_fleet(500, 2000, 60, seed=1)
    result = plan(hosts, items)
    print(
        f"\nsynthetic fleet: {len(items)} instances, hosts {result.hosts_before} -> {result.hosts_after}, "
        f"lower bound {result.lower_bound}, ratio {result.ratio:.3f}, {len(result.moves)} moves, "
        f"{len(result.emptied)} hosts emptied, planned in {result.seconds:.3f} s"
    )
    check(hosts, items, result)
    assert not result.unplaced
    assert not result.unspread
    assert result.hosts_before == 60
    assert 20 <= result.hosts_after <= 25
    assert result.ratio <= 1.05
    assert len(result.emptied) == 60 - result.hosts_after
    assert back_to_back(result) == 0
    # Fewest moves for that many hosts: only what sat on an emptied host moved.
    emptied = set(result.emptied)
    assert len(result.moves) == sum(1 for i in items if i.host_id in emptied)


def test_the_synthetic_fleet_is_the_same_for_the_same_seed() -> None:
    assert synthetic_fleet(20, 60, 6, seed=7) == synthetic_fleet(20, 60, 6, seed=7)
    assert synthetic_fleet(20, 60, 6, seed=7) != synthetic_fleet(20, 60, 6, seed=8)


def test_the_synthetic_fleet_respects_capacity_and_spread() -> None:
    hosts, items = synthetic_fleet(500, 2000, 60, seed=1)
    assert len(items) == 2000
    assert len({i.app_id for i in items}) == 500
    for h in hosts:
        mine = [i for i in items if i.host_id == h.id]
        assert mine, "the fleet grew over every host"
        assert sum(i.memory_mb for i in mine) <= h.memory_mb
        assert sum(i.cpus for i in mine) <= h.cpus
    counts = Counter(i.app_id for i in items)
    assert max(counts.values()) <= 12
    for app, count in counts.items():
        if count > 1:
            assert len({i.host_id for i in items if i.app_id == app}) > 1


def test_a_fleet_that_is_already_tight_produces_no_moves() -> None:
    hosts = [host(1), host(2), host(3)]
    items = [item(n * 10 + k, app_id=k, host_id=n, memory_mb=256) for n in (1, 2, 3) for k in range(4)]
    result = plan(hosts, items)
    check(hosts, items, result)
    assert result.lower_bound == 3
    assert result.moves == []
    assert result.emptied == []
    assert result.fill_after == result.fill_before == {1: (1.0, 0.5), 2: (1.0, 0.5), 3: (1.0, 0.5)}


def test_a_single_instance_app_can_be_moved() -> None:
    hosts = [host(1), host(2)]
    items = [item(1, app_id=1, host_id=1), item(2, app_id=2, host_id=2), item(3, app_id=3, host_id=2)]
    result = plan(hosts, items)
    check(hosts, items, result)
    assert [(m.item_id, m.source, m.target) for m in result.moves] == [(1, 1, 2)]
    assert result.emptied == [1]
    assert (result.hosts_before, result.hosts_after, result.lower_bound) == (2, 1, 1)
    assert result.fill_after[1] == (0.0, 0.0)
    assert result.fill_after[2] == (0.75, 0.375)


def test_an_app_with_two_instances_ends_on_two_hosts() -> None:
    # Everything would fit on one host, but the app ran on two and must keep doing so.
    hosts = [host(1), host(2), host(3)]
    items = [item(1, app_id=1, host_id=1), item(2, app_id=1, host_id=2), item(3, app_id=2, host_id=3)]
    result = plan(hosts, items)
    placed = check(hosts, items, result)
    assert placed[1] != placed[2]
    assert (result.lower_bound, result.hosts_after) == (1, 2)
    assert result.emptied == [3]
    assert len(result.moves) == 1

    loose = plan(hosts, items, keep_spread=False)
    check(hosts, items, loose, spread=False)
    assert loose.hosts_after == 1


def test_an_app_stacked_on_one_host_is_spread_when_the_fleet_keeps_two() -> None:
    hosts = [host(1), host(2)]
    items = [item(1, app_id=1, host_id=1), item(2, app_id=1, host_id=1)]
    items += [item(3, app_id=2, host_id=2, memory_mb=512), item(4, app_id=3, host_id=2, memory_mb=128)]
    result = plan(hosts, items)
    placed = check(hosts, items, result)
    assert result.hosts_after == 2
    assert placed[1] != placed[2]
    assert len(result.moves) == 1


def test_an_unusable_host_is_emptied_even_if_that_needs_an_extra_host() -> None:
    # Host 2 is nearly full, so what runs on failing host 1 has to wake up empty host 3.
    hosts = [host(1, usable=False), host(2), host(3)]
    items = [item(1, app_id=1, host_id=1, memory_mb=128)]
    items += [item(2 + n, app_id=2 + n, host_id=2, memory_mb=256) for n in range(4)]
    result = plan(hosts, items)
    check(hosts, items, result)
    assert result.emptied == [1]
    assert [(m.item_id, m.source, m.target) for m in result.moves] == [(1, 1, 3)]
    assert (result.hosts_before, result.hosts_after) == (2, 2)
    assert result.lower_bound == 2


def test_an_unusable_host_gives_up_its_instances_before_healthy_hosts_are_emptied() -> None:
    hosts = [host(1), host(2, usable=False), host(3), host(4)]
    items = [item(1, app_id=1, host_id=1), item(2, app_id=2, host_id=2), item(3, app_id=3, host_id=3)]
    items += [item(4, app_id=4, host_id=4), item(5, app_id=5, host_id=4)]
    result = plan(hosts, items)
    check(hosts, items, result)
    assert result.hosts_after == 2
    assert result.moves[0].source == 2


def test_a_swap_between_two_full_hosts_parks_an_instance_on_an_empty_host() -> None:
    # Each full host must give an instance of its stacked app to the other: neither move has
    # room before the other, so one goes by way of the empty host.
    hosts = [host(1), host(2), host(3)]
    items = [
        item(1, app_id=1, host_id=1),
        item(2, app_id=1, host_id=1),
        item(3, app_id=3, host_id=1, memory_mb=512),
    ]
    items += [
        item(4, app_id=2, host_id=2),
        item(5, app_id=2, host_id=2),
        item(6, app_id=4, host_id=2, memory_mb=512),
    ]
    result = plan(hosts, items)
    placed = check(hosts, items, result)
    assert result.hosts_after == 2
    assert placed[1] != placed[2]
    assert placed[4] != placed[5]
    assert any(m.target == 3 for m in result.moves)
    assert 3 not in placed.values()


def test_items_without_a_host_are_placed() -> None:
    hosts = [host(1), host(2)]
    items = [item(1, app_id=1, host_id=1), item(2, app_id=2, host_id=None)]
    result = plan(hosts, items)
    placed = check(hosts, items, result)
    assert placed == {1: 1, 2: 1}
    assert [(m.item_id, m.source, m.target) for m in result.moves] == [(2, None, 1)]


def test_what_fits_nowhere_is_reported_unplaced() -> None:
    hosts = [host(1, memory_mb=512)]
    items = [item(1, app_id=1, host_id=1, memory_mb=512), item(2, app_id=2, host_id=None, memory_mb=512)]
    result = plan(hosts, items)
    check(hosts, items, result)
    assert result.unplaced == [2]
    assert result.moves == []


def test_an_empty_fleet_plans_nothing() -> None:
    result = plan([host(1)], [])
    assert (result.hosts_before, result.hosts_after, result.lower_bound, result.ratio) == (0, 0, 0, 1.0)
    assert result.moves == [] and result.emptied == []


@pytest.mark.parametrize("seed", range(20))
def test_lower_bound_on_identical_hosts_is_the_larger_ceiling(seed: int) -> None:
    rng = random.Random(seed)
    hosts = [host(n, memory_mb=4096, cpus=4.0) for n in range(1, 40)]
    items = [
        item(
            n,
            app_id=n,
            host_id=None,
            memory_mb=rng.choice([128, 512, 1024]),
            cpus=rng.choice([0.25, 0.5, 1.0]),
        )
        for n in range(rng.randint(1, 120))
    ]
    memory = math.ceil(sum(i.memory_mb for i in items) / 4096)
    cpus = math.ceil(sum(i.cpus for i in items) / 4.0)
    assert lower_bound(hosts, items) == max(memory, cpus)


def test_lower_bound_counts_the_largest_usable_hosts_first() -> None:
    hosts = [host(1, memory_mb=1024), host(2, memory_mb=4096), host(3, memory_mb=8192, usable=False)]
    assert lower_bound(hosts, [item(1, app_id=1, host_id=None, memory_mb=3000)]) == 1
    assert lower_bound(hosts, [item(1, app_id=1, host_id=None, memory_mb=4500)]) == 2


def random_fleet(rng: random.Random) -> tuple[list[HostCap], list[Item]]:
    """A small fleet as it might be found: mixed host sizes, some hosts failing, apps sometimes
    stacked on one host, some instances without a host, and every host within its capacity."""
    hosts = [
        host(
            n,
            memory_mb=rng.choice([1024, 2048, 4096]),
            cpus=rng.choice([1.0, 2.0, 4.0]),
            usable=rng.random() > 0.2,
        )
        for n in range(1, rng.randint(1, 7) + 1)
    ]
    memory = {h.id: 0 for h in hosts}
    cpus = {h.id: 0.0 for h in hosts}
    items: list[Item] = []
    for app in range(1, rng.randint(1, 6) + 1):
        shape = (rng.choice([128, 256, 512, 1024]), rng.choice([0.25, 0.5, 1.0]))
        for _ in range(rng.randint(1, 4)):
            fits = [
                h for h in hosts if memory[h.id] + shape[0] <= h.memory_mb and cpus[h.id] + shape[1] <= h.cpus
            ]
            where = rng.choice(fits).id if fits and rng.random() > 0.05 else None
            if where is not None:
                memory[where] += shape[0]
                cpus[where] += shape[1]
            items.append(item(len(items) + 1, app_id=app, host_id=where, memory_mb=shape[0], cpus=shape[1]))
    return hosts, items


def test_plans_for_random_small_fleets_keep_every_rule() -> None:
    # Property test over seeded random fleets (stdlib random: hypothesis is not a pinned
    # dependency of this project). The seed is in every failure message.
    complete = 0
    for seed in range(1000):
        rng = random.Random(seed)
        hosts, items = random_fleet(rng)
        keep_spread = rng.random() > 0.2
        result = plan(hosts, items, keep_spread=keep_spread)
        complete += not result.unplaced and not result.unspread
        try:
            check(hosts, items, result, spread=keep_spread)
            if not result.unplaced:
                assert result.hosts_after >= result.lower_bound
            # Moves out of a kept host must come before the moves that need their room; when there
            # are none, order is free and only the numbers can force an app to move twice in a row.
            kept = set(result.placement.values())
            if not any(m.source in kept for m in result.moves):
                assert back_to_back(result) == fewest_back_to_back(result)
        except AssertionError as error:
            raise AssertionError(
                f"seed {seed}: {error}\nhosts={hosts}\nitems={items}\nplan={result}"
            ) from error
    # Many of these fleets have too little room (failing hosts, instances without a host), but
    # the rules must not be kept by giving up: most plans place everything.
    assert complete > 500
