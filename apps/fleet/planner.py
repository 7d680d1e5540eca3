"""Fleet consolidation: how few hosts could carry the same instances, which hosts could then be
emptied, and the moves that get there, one instance at a time.

Pure and standard-library only: callers hand in plain numbers (HostCap, Item), so a view, a
management command or the benchmark can plan without a database, and a plan for a 2,000
instance fleet takes a fraction of a second.

The rules are placement's (apps/instances/placement.py): memory and CPUs (already multiplied by
the overcommit factor) are hard limits per host, and one app's instances are spread over hosts.
Measured usage is carried along for the picture only; reservations decide what fits.

How it plans: choose the hosts to keep, then pack. For k = lower bound, k + 1, ... take the k
usable hosts with the most instances (fewest moves), or the k largest, or the k that cover the
demand best on a mixed fleet; leave every instance on a kept host where it is, and place the rest largest first, each on the host whose free
room lines up best with it (see _best_fit). When that fails, every instance is placed again
(at home where it can be), then a few times more in a perturbed order. The first k that takes
everything wins; among its candidate host sets, the one with the fewest moves.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

# Sums of fractional CPUs (0.1 + 0.2 ...) must not make an exact fit look like an overflow.
EPS = 1e-9

# Randomised retries when greedy packing fails: at most RETRIES per host count, and no more
# than RETRY_WORK item-host steps in a whole plan (a 2,000 instance fleet gets about two).
RETRIES = 8
RETRY_WORK = 100_000

# The synthetic fleet: one host model, as bought in bulk. 64 GiB and 32 cores with a 2x CPU
# overcommit puts memory just ahead of CPU as the scarce resource, as on the seed fleet.
HOST_MEMORY_MB = 64 * 1024
HOST_CORES = 32
HOST_OVERCOMMIT = 2.0
# Per-app shapes: mostly small services, a few big ones. (memory MiB, weight, CPU choices)
SHAPES: tuple[tuple[int, int, tuple[float, ...]], ...] = (
    (128, 28, (0.25,)),
    (256, 24, (0.25, 0.5)),
    (512, 20, (0.5,)),
    (1024, 15, (0.5, 1.0)),
    (2048, 9, (1.0, 1.5)),
    (4096, 4, (2.0,)),
)
# Instances per app, 1 to 12, most 2 to 4.
COUNT_WEIGHTS = (8, 26, 24, 16, 8, 5, 4, 3, 2, 2, 1, 1)


@dataclass(frozen=True)
class HostCap:
    """One host. `cpus` is already multiplied by the overcommit factor."""

    id: int
    name: str
    memory_mb: int
    cpus: float
    usable: bool = True  # False: failing checks, draining, unreachable: emptied, takes nothing


@dataclass(frozen=True)
class Item:
    """One instance: its reservation decides where it fits; measured usage is for the picture."""

    id: int
    app_id: int
    host_id: int | None  # None: not on any host yet
    memory_mb: int
    cpus: float
    used_memory_mb: float = 0.0
    used_cpu: float = 0.0


@dataclass
class Move:
    item_id: int
    app_id: int
    source: int | None
    target: int


Fill = dict[int, tuple[float, float]]  # host id -> (memory fraction, CPU fraction)


@dataclass
class Plan:
    hosts_before: int  # hosts carrying at least one instance now
    hosts_after: int  # hosts carrying at least one instance after the moves
    lower_bound: int
    emptied: list[int]  # hosts that carry instances now and none after, in fleet order
    moves: list[Move]  # apply in this order, one at a time: each target has room when its turn comes
    fill_before: Fill  # reserved fractions, every host
    fill_after: Fill
    used_before: Fill  # measured fractions, every host
    used_after: Fill
    unplaced: list[int]  # items that fit nowhere (one with a host stays there); empty on a sane fleet
    unspread: list[int]  # apps left on one host against the spread rule, for want of room; ditto
    seconds: float
    placement: dict[int, int] = field(default_factory=dict)  # item id -> host id after the moves

    @property
    def ratio(self) -> float:
        """Hosts used after the plan over the lower bound: 1.0 cannot be beaten."""
        if self.lower_bound == 0:
            return 1.0 if self.hosts_after == 0 else float("inf")
        return self.hosts_after / self.lower_bound


def lower_bound(hosts: Sequence[HostCap], items: Sequence[Item]) -> int:
    """Fewest usable hosts whose capacities, largest first, cover the total reservation in
    memory and in CPU (each resource on its own, then the larger count). No plan can use fewer.
    When the usable hosts cannot cover the demand at all, all of them."""
    usable = [h for h in hosts if h.usable]
    memory = _cover(sorted((h.memory_mb for h in usable), reverse=True), sum(i.memory_mb for i in items))
    cpus = _cover(sorted((h.cpus for h in usable), reverse=True), sum(i.cpus for i in items))
    return max(memory, cpus)


def _cover(capacities: Iterable[float], need: float) -> int:
    if need <= EPS:
        return 0
    total = 0.0
    count = 0
    for capacity in capacities:
        total += capacity
        count += 1
        if total >= need - EPS:
            return count
    return count


@dataclass
class _Attempt:
    keep: list[int]
    where: dict[int, int]  # item id -> host id, for every placed item
    unplaced: list[int]
    moves: int


def plan(hosts: list[HostCap], items: list[Item], *, keep_spread: bool = True) -> Plan:
    """Consolidate `items` onto as few usable hosts as possible, moving as few as possible."""
    started = time.perf_counter()
    by_id = {h.id: h for h in hosts}
    usable = [h for h in hosts if h.usable]
    bound = lower_bound(hosts, items)
    on_host: dict[int, list[Item]] = defaultdict(list)
    for item in items:
        if item.host_id in by_id:
            on_host[item.host_id].append(item)

    ref_memory = float(max((h.memory_mb for h in usable), default=0) or 1)
    ref_cpus = float(max((h.cpus for h in usable), default=0) or 1)

    def size(item: Item) -> float:
        return max(item.memory_mb / ref_memory, item.cpus / ref_cpus)

    def reserved(host: HostCap) -> float:
        return sum(size(i) for i in on_host[host.id])

    app_sizes = Counter(i.app_id for i in items)
    app_spans: dict[int, set[int]] = defaultdict(set)
    for item in items:
        if item.host_id in by_id:
            app_spans[item.app_id].add(item.host_id)  # type: ignore[arg-type]
    spread_now = {app for app, spans in app_spans.items() if len(spans) > 1}

    def spread_rule(k: int) -> set[int]:
        """Apps whose instances must end on 2+ hosts when k hosts are kept."""
        if not keep_spread:
            return set()
        return {app for app, n in app_sizes.items() if n > 1 and (k > 1 or app in spread_now)}

    # Candidate orders of the usable hosts; the first k of one order are the hosts kept.
    orders = [
        # Most instances first: every instance on a kept host stays, so this minimises moves.
        sorted(usable, key=lambda h: (-len(on_host[h.id]), -reserved(h), -h.memory_mb, -h.cpus, h.id)),
        # Largest first: on a mixed fleet the big hosts are what makes a small k possible.
        sorted(usable, key=lambda h: (-h.memory_mb, -h.cpus, -len(on_host[h.id]), h.id)),
        # Most useful first: on a fleet where the most memory and the most CPUs are on
        # different hosts, each next host is the one that covers most of what is still missing.
        _covering(usable, sum(i.memory_mb for i in items), sum(i.cpus for i in items)),
    ]
    need_memory = sum(i.memory_mb for i in items)
    need_cpus = sum(i.cpus for i in items)
    first_k = max(bound, 1 if items else 0)
    best: _Attempt | None = None
    moves: list[Move] | None = None
    retry_work = RETRY_WORK
    for k in range(first_k, len(usable) + 1):
        tried: set[frozenset[int]] = set()
        candidates: list[_Attempt] = []
        for order in orders:
            keep = order[:k]
            key = frozenset(h.id for h in keep)
            if key in tried:
                continue
            tried.add(key)
            if (
                sum(h.memory_mb for h in keep) < need_memory - EPS
                or sum(h.cpus for h in keep) < need_cpus - EPS
            ):
                continue
            attempt = _pack(keep, items, on_host, spread_rule(k), size)
            if attempt.unplaced:
                # Staying put leaves room in the wrong places: every instance goes again.
                attempt = _pack(keep, items, on_host, spread_rule(k), size, repack=True)
            if not attempt.unplaced:
                candidates.append(attempt)
        if not candidates and items:
            # Greedy packing can miss on small, awkward fleets (an instance that needs a whole
            # host's CPU, say). They are cheap to plan, so retry with the order perturbed.
            shuffle = random.Random(k)  # noqa: S311 -- seeded so that a plan can be repeated
            for _ in range(RETRIES):
                if retry_work < len(items) * k:
                    break
                retry_work -= len(items) * k
                attempt = _pack(
                    orders[0][:k], items, on_host, spread_rule(k), size, repack=True, shuffle=shuffle
                )
                if not attempt.unplaced:
                    candidates.append(attempt)
                    break
        for attempt in sorted(candidates, key=lambda a: a.moves):
            moves = _order_moves(attempt, hosts, items)
            if moves is not None:
                best = attempt
                break
        if best is not None:
            break
    if best is None or moves is None:
        # Not even every usable host takes everything within the rules. Place what fits, with
        # spread as a wish, and report the rest.
        best = _pack(usable, items, on_host, spread_rule(len(usable)), size, strict=False)
        moves = _order_moves(best, hosts, items)
        if moves is None:
            # Spreading stacked apps needs swaps between hosts that are full: leave them be.
            best = _pack(usable, items, on_host, set(), size, strict=False)
            moves = _order_moves(best, hosts, items, force=True) or []

    after: dict[int, list[Item]] = defaultdict(list)
    for item in items:
        # An unplaced instance that has a host stays on it.
        host_id = best.where.get(item.id, item.host_id)
        if host_id in by_id:
            after[host_id].append(item)  # type: ignore[index]
    hosts_after = sum(1 for h in hosts if after[h.id])
    spans_after: dict[int, set[int]] = defaultdict(set)
    for h in hosts:
        for item in after[h.id]:
            spans_after[item.app_id].add(h.id)
    return Plan(
        hosts_before=sum(1 for h in hosts if on_host[h.id]),
        hosts_after=hosts_after,
        lower_bound=bound,
        emptied=[h.id for h in hosts if on_host[h.id] and not after[h.id]],
        moves=moves,
        fill_before={h.id: _fractions(h, on_host[h.id]) for h in hosts},
        fill_after={h.id: _fractions(h, after[h.id]) for h in hosts},
        used_before={h.id: _fractions(h, on_host[h.id], measured=True) for h in hosts},
        used_after={h.id: _fractions(h, after[h.id], measured=True) for h in hosts},
        unplaced=best.unplaced,
        unspread=sorted(app for app in spread_rule(hosts_after) if len(spans_after[app]) == 1),
        seconds=time.perf_counter() - started,
        placement=dict(best.where),
    )


def _covering(hosts: list[HostCap], memory: float, cpus: float) -> list[HostCap]:
    """`hosts` ordered greedily by how much of the still uncovered demand each one covers."""
    left = list(hosts)
    out: list[HostCap] = []
    while left:
        best = max(left, key=lambda h: _usefulness(h, memory, cpus))
        left.remove(best)
        out.append(best)
        memory = max(memory - best.memory_mb, 0.0)
        cpus = max(cpus - best.cpus, 0.0)
    return out


def _usefulness(host: HostCap, memory: float, cpus: float) -> tuple[float, float, int]:
    memory = memory or 1.0
    cpus = cpus or 1.0
    covers = min(host.memory_mb, memory) / memory + min(host.cpus, cpus) / cpus
    return (covers, host.memory_mb / memory + host.cpus / cpus, -host.id)


def _fractions(host: HostCap, items: list[Item], *, measured: bool = False) -> tuple[float, float]:
    if measured:
        memory = sum(i.used_memory_mb for i in items)
        cpus = sum(i.used_cpu for i in items)
    else:
        memory = float(sum(i.memory_mb for i in items))
        cpus = sum(i.cpus for i in items)
    return (
        memory / host.memory_mb if host.memory_mb else 0.0,
        cpus / host.cpus if host.cpus else 0.0,
    )


def _pack(
    keep: list[HostCap],
    items: list[Item],
    on_host: dict[int, list[Item]],
    spread: set[int],
    size: Callable[[Item], float],
    *,
    strict: bool = True,
    repack: bool = False,
    shuffle: random.Random | None = None,
) -> _Attempt:
    """Keep what already sits on a kept host, then place everything else, largest first.

    An app in `spread` that sits wholly on one kept host gives up an instance.
    `strict`: an instance that cannot be placed within every rule is unplaced (and the attempt
    fails); otherwise spread gives way and it goes where there is room, at home first.
    `repack`: nothing is kept in place up front; every instance is placed, largest first, and
    goes home when its host is kept and still has room. `shuffle` perturbs that order and
    sometimes passes home by.
    """
    index = {h.id: n for n, h in enumerate(keep)}
    free_memory = [float(h.memory_mb) for h in keep]
    free_cpus = [float(h.cpus) for h in keep]
    where: dict[int, int] = {}
    app_hosts: dict[int, Counter[int]] = defaultdict(Counter)  # app -> kept host index -> instances
    staying: dict[int, list[Item]] = defaultdict(list)
    evicted: list[Item] = []

    for host in [] if repack else keep:
        n = index[host.id]
        # Largest first, so an overfull host gives up its fewest instances.
        for item in sorted(on_host.get(host.id, ()), key=lambda i: (-size(i), i.id)):
            if free_memory[n] - item.memory_mb >= -EPS and free_cpus[n] - item.cpus >= -EPS:
                free_memory[n] -= item.memory_mb
                free_cpus[n] -= item.cpus
                where[item.id] = host.id
                app_hosts[item.app_id][n] += 1
                staying[item.app_id].append(item)
            else:
                evicted.append(item)

    if repack:
        evicted = [i for i in items if i.host_id in index]
    others = [i for i in items if i.host_id not in index]
    remaining = Counter(i.app_id for i in others)
    remaining.update(i.app_id for i in evicted)
    # An app stacked on one kept host, with nothing else to place, gives one instance up.
    for app in spread:
        if remaining[app] == 0 and len(app_hosts[app]) == 1:
            item = min(staying[app], key=lambda i: (size(i), i.id))
            n = index[where.pop(item.id)]
            free_memory[n] += item.memory_mb
            free_cpus[n] += item.cpus
            app_hosts[app][n] -= 1
            evicted.append(item)
            remaining[app] += 1

    # Evicted instances leave a kept host for another kept host. Where they can go without
    # counting on anything leaving first, the moves can be applied in any order.
    initial_free_memory = [float(h.memory_mb) - sum(i.memory_mb for i in on_host.get(h.id, ())) for h in keep]
    initial_free_cpus = [h.cpus - sum(i.cpus for i in on_host.get(h.id, ())) for h in keep]

    unplaced: list[int] = []
    evicted_ids = {i.id for i in evicted}
    # Instances leaving a kept host go first, to the places that do not depend on anything
    # leaving before them; in a repack everything competes on size alone.
    queue = sorted(evicted, key=lambda i: (-size(i), i.app_id, i.id))
    queue += sorted(others, key=lambda i: (-size(i), i.app_id, i.id))
    if repack:
        if shuffle is None:
            queue.sort(key=lambda i: (-size(i), i.app_id, i.id))
        else:
            jitter = {i.id: shuffle.uniform(0.25, 1.75) for i in queue}
            queue.sort(key=lambda i: (-size(i) * jitter[i.id], i.id))
    inv_memory = 1.0 / max(max((h.memory_mb for h in keep), default=1), 1)
    inv_cpus = 1.0 / max(max((h.cpus for h in keep), default=1.0), EPS)
    for item in queue:
        app = item.app_id
        memory, cpus = item.memory_mb, item.cpus
        # While an app sits on a single host, its next instance goes elsewhere if it can, and
        # its last one must: all of one app's instances on one host is what spread forbids.
        avoid = -1
        hosts_of_app = app_hosts[app]
        last = remaining[app] == 1
        remaining[app] -= 1
        if app in spread:
            used = [n for n, count in hosts_of_app.items() if count]
            if len(used) == 1:
                avoid = used[0]
        best_n = -1
        home = index.get(item.host_id, -1) if repack else -1  # type: ignore[arg-type]
        if shuffle is not None and shuffle.random() < 0.5:
            home = -1  # a retry also tries letting instances leave a kept host
        if (
            home >= 0
            and home != avoid
            and free_memory[home] - memory >= -EPS
            and free_cpus[home] - cpus >= -EPS
        ):
            best_n = home
        elif item.id in evicted_ids:
            best_n = _best_fit(
                initial_free_memory, initial_free_cpus, memory, cpus, avoid, inv_memory, inv_cpus
            )
            if best_n >= 0 and (free_memory[best_n] - memory < -EPS or free_cpus[best_n] - cpus < -EPS):
                best_n = -1
        if best_n < 0:
            best_n = _best_fit(free_memory, free_cpus, memory, cpus, avoid, inv_memory, inv_cpus)
        if best_n < 0 and avoid >= 0 and (not last or not strict):
            home = index.get(item.host_id, -1) if item.id in evicted_ids else -1  # type: ignore[arg-type]
            if home >= 0 and free_memory[home] - memory >= -EPS and free_cpus[home] - cpus >= -EPS:
                best_n = home  # spread cannot be had: better where it is than moved for nothing
            else:
                best_n = _best_fit(free_memory, free_cpus, memory, cpus, -1, inv_memory, inv_cpus)
        if best_n < 0:
            unplaced.append(item.id)
            if item.id in evicted_ids:
                # It stays on its overfull host for now: nothing else may count on its room.
                home = index[item.host_id]  # type: ignore[index]
                free_memory[home] -= memory
                free_cpus[home] -= cpus
            continue
        free_memory[best_n] -= memory
        free_cpus[best_n] -= cpus
        if item.id in evicted_ids:
            initial_free_memory[best_n] -= memory
            initial_free_cpus[best_n] -= cpus
        hosts_of_app[best_n] += 1
        where[item.id] = keep[best_n].id

    moves = sum(1 for i in items if i.id in where and where[i.id] != i.host_id)
    return _Attempt(
        keep=[h.id for h in keep],
        where=where,
        unplaced=sorted(unplaced),
        moves=moves,
    )


def _best_fit(
    free_memory: list[float],
    free_cpus: list[float],
    memory: float,
    cpus: float,
    avoid: int,
    inv_memory: float,
    inv_cpus: float,
) -> int:
    """The host whose free room points most the way the item does (largest cosine between the
    two, each resource as a fraction of the largest host), or -1 when none has room.

    With the number of hosts fixed, the question is only whether everything fits, and the two
    resources must run out together: small instances here are CPU-heavy and big ones
    memory-heavy. Classic best fit stacks the big ones tight and strands CPU; on the synthetic
    fleet it ends hundreds of instances short at the lower bound, where this reaches it. The
    cosine rather than the plain dot product (Panigrahy et al., "Heuristics for Vector Bin
    Packing") keeps memory-rich and CPU-rich hosts apart on a mixed fleet: one host fewer there.
    """
    best_n = -1
    best_score = -1.0
    weight_memory = memory * inv_memory
    weight_cpus = cpus * inv_cpus
    for n in range(len(free_memory)):
        room_memory = free_memory[n]
        if room_memory - memory < -EPS:
            continue
        room_cpus = free_cpus[n]
        if room_cpus - cpus < -EPS or n == avoid:
            continue
        room_memory *= inv_memory
        room_cpus *= inv_cpus
        length = math.sqrt(room_memory * room_memory + room_cpus * room_cpus) or 1.0
        score = (room_memory * weight_memory + room_cpus * weight_cpus) / length
        if score > best_score:
            best_score = score
            best_n = n
    return best_n


def _order_moves(
    attempt: _Attempt, hosts: list[HostCap], items: list[Item], *, force: bool = False
) -> list[Move] | None:
    """The moves in an order that can be applied one at a time, or None if there is none.

    First the instances that leave a kept host (for capacity or spread), each when its target
    has room. Then the rest, host by host (unusable hosts first, then the emptiest), so hosts
    empty one after the other; from then on kept hosts only fill up, towards loads that fit.
    Two instances of one app do not move back to back unless nothing else is left.

    When instances must trade places between full hosts, one is parked on a host with room (a
    kept one, else an empty usable one) and moved on once its target has room. With no room
    anywhere there is no order: None, or with `force` the moves as they come (a fleet that was
    over capacity before the plan).
    """
    by_id = {h.id: h for h in hosts}
    kept = set(attempt.keep)
    load_memory: dict[int, float] = defaultdict(float)
    load_cpus: dict[int, float] = defaultdict(float)
    for item in items:
        if item.host_id in by_id:
            load_memory[item.host_id] += item.memory_mb  # type: ignore[index]
            load_cpus[item.host_id] += item.cpus  # type: ignore[index]
    sizes = {i.id: (i.memory_mb, i.cpus) for i in items}

    first: list[Move] = []
    rest: list[Move] = []
    for item in items:
        target = attempt.where.get(item.id)
        if target is None or target == item.host_id:
            continue
        move = Move(item_id=item.id, app_id=item.app_id, source=item.host_id, target=target)
        (first if item.host_id in kept else rest).append(move)

    ordered: list[Move] = []

    def apply(move: Move) -> None:
        memory, cpus = sizes[move.item_id]
        if move.source in by_id:
            load_memory[move.source] -= memory  # type: ignore[index]
            load_cpus[move.source] -= cpus  # type: ignore[index]
        load_memory[move.target] += memory
        load_cpus[move.target] += cpus
        ordered.append(move)

    def room(move: Move, target: int) -> bool:
        memory, cpus = sizes[move.item_id]
        host = by_id[target]
        return (
            load_memory[target] + memory <= host.memory_mb + EPS
            and load_cpus[target] + cpus <= host.cpus + EPS
        )

    pending = sorted(first, key=lambda m: m.item_id)
    parkings_left = 2 * len(pending)  # a parked instance that gets stuck again must not loop forever
    while pending:
        # Passes over what is left, each applying whatever has room (O(moves x passes), and
        # chains of hosts waiting on each other are short).
        waiting: list[Move] = []
        for move in pending:
            if room(move, move.target) and not (ordered and ordered[-1].app_id == move.app_id):
                apply(move)
            else:
                waiting.append(move)
        if len(waiting) < len(pending):
            pending = waiting
            continue
        same_app = next((m for m in pending if room(m, m.target)), None)
        if same_app is not None:
            pending.remove(same_app)  # only the app that just moved has room: unavoidable
            apply(same_app)
            continue
        # Hosts waiting on each other to make room: park one instance where there is room now.
        move = pending.pop(0)
        parking = next(
            (
                h.id
                for h in hosts
                if h.usable
                and h.id not in (move.source, move.target)
                and (h.id in kept or load_memory[h.id] == 0)
                and room(move, h.id)
            ),
            None,
        )
        parkings_left -= 1
        if parking is None or parkings_left < 0:
            if not force:
                return None
            apply(move)
            continue
        apply(Move(item_id=move.item_id, app_id=move.app_id, source=move.source, target=parking))
        pending.append(Move(item_id=move.item_id, app_id=move.app_id, source=parking, target=move.target))

    # Drain order: unusable hosts, then the emptiest, then instances that had no host.
    def drain_key(move: Move) -> tuple[int, float, int, int]:
        host = by_id.get(move.source) if move.source is not None else None
        if host is None:
            return (2, 0.0, 0, move.item_id)
        fill = max(
            load_memory[host.id] / host.memory_mb if host.memory_mb else 0.0,
            load_cpus[host.id] / host.cpus if host.cpus else 0.0,
        )
        return (0 if not host.usable else 1, fill, host.id, move.item_id)

    rest.sort(key=drain_key)
    for move in _alternate(rest, ordered[-1].app_id if ordered else None):
        apply(move)
    return ordered


def _alternate(moves: list[Move], last_app: int | None) -> list[Move]:
    """`moves` in their given order as far as possible, but never one app twice in a row when
    that can be avoided. At each step take the earliest move of another app, unless an app has
    so many moves left that it must go now for the rest to stay alternating."""
    left = Counter(m.app_id for m in moves)
    heap = [(-count, app) for app, count in left.items()]
    heapq.heapify(heap)
    taken = [False] * len(moves)
    by_app: dict[int, list[int]] = defaultdict(list)  # app -> positions, earliest last
    for position in range(len(moves) - 1, -1, -1):
        by_app[moves[position].app_id].append(position)
    start = 0
    out: list[Move] = []
    total = len(moves)

    def top() -> tuple[int, int]:
        while heap and left[heap[0][1]] != -heap[0][0]:
            heapq.heappop(heap)  # stale entry
        return (-heap[0][0], heap[0][1]) if heap else (0, -1)

    while total:
        while taken[start]:
            start += 1
        most, busiest = top()
        # After this step `total - 1` moves remain; an app with more than half of them (rounded
        # up) can only alternate if it goes now.
        if most > total - most and busiest != last_app:
            position = by_app[busiest][-1]
        else:
            position = start
            while position < len(moves) and (taken[position] or moves[position].app_id == last_app):
                position += 1
            if position == len(moves):
                position = start  # only the last app has moves left: unavoidable
        move = moves[position]
        taken[position] = True
        by_app[move.app_id].remove(position)
        left[move.app_id] -= 1
        heapq.heappush(heap, (-left[move.app_id], move.app_id))
        total -= 1
        last_app = move.app_id
        out.append(move)
    return out


def synthetic_fleet(apps: int, instances: int, hosts: int, seed: int) -> tuple[list[HostCap], list[Item]]:
    """A fleet that grew without consolidation: identical hosts, `apps` apps of 1 to 12
    instances (most 2 to 4, mostly small), placed over all hosts at random as they came,
    within capacity and one app's instances on different hosts. Same seed, same fleet."""
    if not apps <= instances <= 12 * apps:
        raise ValueError(f"{instances} instances cannot be shared by {apps} apps of 1 to 12")
    rng = random.Random(seed)  # noqa: S311 -- a reproducible fleet, not a secret
    caps = [
        HostCap(id=n, name=f"host-{n:02d}", memory_mb=HOST_MEMORY_MB, cpus=HOST_CORES * HOST_OVERCOMMIT)
        for n in range(1, hosts + 1)
    ]
    counts = rng.choices(range(1, 13), weights=COUNT_WEIGHTS, k=apps)
    while sum(counts) != instances:
        n = rng.randrange(apps)
        if sum(counts) < instances and counts[n] < 12:
            counts[n] += 1
        elif sum(counts) > instances and counts[n] > 1:
            counts[n] -= 1

    # Older hosts are fuller: each host draws a weight once.
    weights = [rng.uniform(0.2, 1.0) for _ in caps]
    free_memory = [float(h.memory_mb) for h in caps]
    free_cpus = [h.cpus for h in caps]
    out: list[Item] = []
    order = list(range(apps))
    rng.shuffle(order)
    for app in order:
        memory, _, cpu_choices = rng.choices(SHAPES, weights=[s[1] for s in SHAPES])[0]
        cpus = rng.choice(cpu_choices)
        taken: set[int] = set()
        for _ in range(counts[app]):
            fits = [n for n in range(hosts) if free_memory[n] >= memory and free_cpus[n] >= cpus - EPS]
            candidates = [n for n in fits if n not in taken] or fits
            if not candidates:
                raise ValueError(f"{hosts} hosts cannot hold {instances} instances")
            n = rng.choices(candidates, weights=[weights[c] for c in candidates])[0]
            taken.add(n)
            free_memory[n] -= memory
            free_cpus[n] -= cpus
            out.append(
                Item(
                    id=len(out) + 1,
                    app_id=app + 1,
                    host_id=caps[n].id,
                    memory_mb=memory,
                    cpus=cpus,
                    used_memory_mb=round(memory * rng.uniform(0.2, 0.9), 1),
                    used_cpu=round(cpus * rng.uniform(0.2, 0.9), 3),
                )
            )
    out.sort(key=lambda i: i.id)
    return caps, out
