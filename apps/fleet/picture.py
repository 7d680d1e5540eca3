"""The consolidation planner's picture: a pair of bars per host (memory and CPU reserved now and
after the plan), computed here as plain numbers and drawn as SVG by the template."""

from __future__ import annotations

from dataclasses import dataclass

from apps.fleet import consolidation, planner

# The picture, in px. Columns narrower than this stop being readable, so a big fleet scrolls
# sideways instead of shrinking; a small one gets wider columns up to a limit.
_AXIS = 44
_TOP = 24  # the row of marks above the bars (emptied, takes nothing)
_CHART = 180
_COLUMN_MIN = 36
_COLUMN_MAX = 150
_BAR_MAX = 24
_PAD = 3
_PAIR_GAP = 4  # between the "now" pair and the "after" pair
_MEMORY = "#2458d3"
_CPU = "#d08a00"


@dataclass
class _Bar:
    x: float
    y: float
    width: float
    height: float
    fill: str
    opacity: float
    over: bool  # more than the host has: drawn capped, with a red top


@dataclass
class _Column:
    row: consolidation.HostRow
    x: float
    width: float
    center: float
    background: str
    mark: str
    bars: list[_Bar]
    used: list[tuple[float, float, float]]  # measured memory: (x1, x2, y) of a tick on the bar
    title: str
    pct: dict[str, int]


@dataclass
class _Picture:
    width: float
    height: float
    base: float  # y of 0 %
    grid: list[tuple[float, str]]  # (y, label)
    columns: list[_Column]
    rotate: bool  # host names at an angle: the columns are too narrow for them
    label_y: float
    label_chars: int
    pair_labels: bool  # "now" and "after" under each pair: only where there is room
    pair_label_y: float


def _percent(value: float) -> int:
    return round(value * 100)


def draw(host_rows: list[consolidation.HostRow]) -> _Picture:
    count = len(host_rows)
    column = max(_COLUMN_MIN, min(_COLUMN_MAX, 960 // max(count, 1)))
    bar = min(_BAR_MAX, (column - 2 * _PAD - _PAIR_GAP - 2) / 4)
    span = 4 * bar + 2 + _PAIR_GAP
    rotate = column < 90
    labels = 76 if rotate else 40
    base = _TOP + _CHART
    grid = [(base - _CHART * f, f"{_percent(f)} %") for f in (0.0, 0.5, 1.0)]
    columns = []
    for n, row in enumerate(host_rows):
        x = _AXIS + n * column
        left = x + (column - span) / 2
        bars = []
        used = []
        for group, fill, opacity, measured in (
            (0, row.before, 0.45, row.used_before),
            (1, row.after, 1.0, row.used_after),
        ):
            start = left + group * (2 * bar + 1 + _PAIR_GAP)
            for resource, colour in ((0, _MEMORY), (1, _CPU)):
                value = fill[resource]
                height = _CHART * min(value, 1.0)
                bar_x = start + resource * (bar + 1)
                bars.append(
                    _Bar(
                        round(bar_x, 1),
                        round(base - height, 1),
                        round(bar, 1),
                        round(height, 1),
                        colour,
                        opacity,
                        value > 1.0 + planner.EPS,
                    )
                )
            if measured[0] > 0:
                y = round(base - _CHART * min(measured[0], 1.0), 1)
                used.append((round(start - 1, 1), round(start + bar + 1, 1), y))
        marks = ("!" if not row.usable else "") + ("✕" if row.emptied else "")
        background = "#fbe0de" if not row.usable else "#e8ebf2" if row.emptied else "none"
        state = ", takes no instances" if not row.usable else ""
        state += ", emptied by the plan" if row.emptied else ""
        pct = {
            "memory_before": _percent(row.before[0]),
            "cpu_before": _percent(row.before[1]),
            "memory_after": _percent(row.after[0]),
            "cpu_after": _percent(row.after[1]),
            "used_before": _percent(row.used_before[0]),
            "used_after": _percent(row.used_after[0]),
        }
        title = (
            f"{row.name}{state}. Now: {pct['memory_before']} % memory and {pct['cpu_before']} % CPU "
            f"reserved, {pct['used_before']} % memory used, {row.instances_before} instances. After the "
            f"plan: {pct['memory_after']} % memory and {pct['cpu_after']} % CPU reserved, "
            f"{row.instances_after} instances."
        )
        columns.append(_Column(row, x, column, x + column / 2, background, marks, bars, used, title, pct))
    return _Picture(
        width=_AXIS + count * column + 8,
        height=base + labels,
        base=base,
        grid=grid,
        columns=columns,
        rotate=rotate,
        label_y=base + (14 if rotate else 30),
        label_chars=16 if rotate else max(4, column // 7),
        pair_labels=not rotate,
        pair_label_y=base + 14,
    )
