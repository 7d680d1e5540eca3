"""How numbers and moments read on every page (portal/display.py, portal/formats): one date
format with its zone, sizes that do not round a live instance to "0 MiB", CPUs without 17
decimals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.template import Context, Template
from django.test import override_settings
from django.utils import timezone

from portal.display import cpus, mib

MOMENT = datetime(2026, 12, 4, 11, 23, 5, tzinfo=UTC)


def _render(source: str, **context: object) -> str:
    return Template(source).render(Context(context))


def test_a_moment_reads_the_same_everywhere_with_its_zone() -> None:
    assert _render("{{ t }}", t=MOMENT) == "2026-12-04 11:23 UTC"  # Django's own, the admin too
    assert _render("{{ t|date }}", t=MOMENT) == "2026-12-04"
    when = _render("{{ t|when }}", t=MOMENT)
    assert when.startswith('<time datetime="2026-12-04T11:23:05+00:00" title="')
    assert when.endswith(' ago">2026-12-04 11:23 UTC</time>')
    assert _render('{{ t|when:"s" }}', t=MOMENT).endswith(">2026-12-04 11:23:05 UTC</time>")
    assert _render("{{ t|when }}", t=None) == ""


@override_settings(TIME_ZONE="Europe/Berlin")
def test_the_zone_is_the_portals_setting() -> None:
    timezone.deactivate()
    assert _render("{{ t }}", t=MOMENT) == "2026-12-04 12:23 CET"
    assert _render("{{ t|when }}", t=MOMENT).endswith(">2026-12-04 12:23 CET</time>")


def test_recency_reads_as_time_ago_with_the_moment_in_its_title() -> None:
    three = timezone.now() - timedelta(minutes=3, seconds=5)
    assert ">3\xa0minutes ago</time>" in _render("{{ t|ago }}", t=three)
    assert ">less than a minute ago</time>" in _render("{{ t|ago }}", t=timezone.now())


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0, "0 MiB"), (0.3, "307 KiB"), (1.1, "1.1 MiB"), (40, "40 MiB"), (1536, "1.5 GiB"), (None, "")],
)
def test_memory_is_said_in_the_unit_that_fits(value: float | None, shown: str) -> None:
    assert mib(value) == shown


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (Decimal("1.800000000000000000"), "1.8"),
        (0.30000000000000004, "0.3"),
        (Decimal("0.25"), "0.25"),
        (Decimal("2.00"), "2"),
        (2, "2"),
        (None, ""),
    ],
)
def test_cpus_read_as_people_write_them(value: object, shown: str) -> None:
    assert cpus(value) == shown
