"""Template filters for how numbers and moments read on every page (a builtin library, see
TEMPLATES in settings): one date format with its zone, relative times where recency is the
point, and sizes in a unit that does not round a live instance down to "0 MiB"."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django import template
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.timesince import timesince

register = template.Library()

FORMAT = "Y-m-d H:i T"
PRECISE = "Y-m-d H:i:s T"


def _local(value: datetime) -> datetime:
    return timezone.localtime(value) if timezone.is_aware(value) else value


@register.filter
def when(value: datetime | None, precise: str = "") -> SafeString | str:
    """`2026-12-04 11:23 UTC` (with seconds if `precise`), in a <time> whose title says how long
    ago it was."""
    if not value:
        return ""
    local = _local(value)
    shown = date_format(local, PRECISE if precise else FORMAT)
    return format_html('<time datetime="{}" title="{} ago">{}</time>', local.isoformat(), _ago(value), shown)


@register.filter
def ago(value: datetime | None) -> SafeString | str:
    """`3 minutes ago`, in a <time> whose title is the moment itself; for when recency matters
    more than the moment (last seen, last sweep)."""
    if not value:
        return ""
    local = _local(value)
    return format_html(
        '<time datetime="{}" title="{}">{} ago</time>',
        local.isoformat(),
        date_format(local, PRECISE),
        _ago(value),
    )


def _ago(value: datetime) -> str:
    now = timezone.now() if timezone.is_aware(value) else datetime.now()
    if abs((now - value).total_seconds()) < 60:
        return "less than a minute"
    return timesince(value, now, depth=1)


@register.filter
def mib(value: Any) -> str:
    """Memory given in MiB, said in the unit that fits: `312 KiB`, `4.2 MiB`, `87 MiB`, `1.5 GiB`."""
    if value is None or value == "":
        return ""
    mb = float(value)
    if mb == 0:
        return "0 MiB"
    if abs(mb) < 1:
        return f"{mb * 1024:.0f} KiB"
    if abs(mb) < 10:
        return f"{mb:.1f} MiB"
    if abs(mb) < 1024:
        return f"{mb:.0f} MiB"
    return f"{mb / 1024:.1f} GiB"


@register.filter
def cpus(value: Any) -> str:
    """CPUs as people write them: `0.25`, `1.8`, `2`; never `1.800000000000000000` (a sum of
    decimals from the database) or `0.30000000000000004` (a float)."""
    if value is None or value == "":
        return ""
    try:
        number = Decimal(str(value)).quantize(Decimal("0.01"))
    except InvalidOperation:
        return str(value)
    text = f"{number:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
