"""The one pattern for long work (shared/DESIGN.md, "One pattern for long work").

Every piece of long work (an operation, a drain, a relocation, a publish) is a database row that
is its own job record:

1. The request writes the row and calls `start(kind, pk)` in its transaction: the row is marked
   queued and its id is sent to Celery once the transaction commits. If the broker cannot take
   it, the row says so (nothing is lost) and `resend_lost` sends it later.
2. The worker calls `claim(kind, pk)` first: a conditional update that only one delivery wins.
   A second delivery, or one that comes after the work ended, does nothing.
3. While it works, `Heartbeat` touches the row every OPERATION_HEARTBEAT seconds.
4. The reconcile calls `resend_lost()`: rows still waiting after OPERATION_REQUEUE_AFTER seconds,
   and rows whose heartbeat has been silent for OPERATION_HEARTBEAT_LOST seconds (a worker
   killed, OOM-killed, or on a machine that rebooted), are sent again. The work is idempotent,
   so the second run finishes the job once.
5. The work ends by moving the row out of its kind's `active` states: the final state.

Operations keep their own claim (queued → running, which their pages show), and use `send`
and `Heartbeat` from here.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import F, Q
from django.utils import timezone

log = logging.getLogger(__name__)

QUEUE_DOWN = (
    "The task queue is unreachable right now ({error}); the request is kept and will run when it is back."
)
LOST = "Its worker stopped answering (killed, or its machine restarted); it runs again."
# Celery's own default queue: everything not routed elsewhere. Every worker takes it.
DEFAULT_QUEUE = "celery"


class JobRecord(models.Model):
    """What every job row has besides its own state."""

    # When the row was last handed to the queue; a row not claimed long after is sent again.
    queued_at = models.DateTimeField(null=True, blank=True)
    # Touched by the worker running it; silent for long, the worker is taken for lost.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Claims so far: more than one means a lost worker's run was taken over.
    attempts = models.PositiveIntegerField(default=0)

    class Meta:
        abstract = True


@dataclass(frozen=True)
class Kind:
    """One kind of long work: its rows, the task that does it (sent the row's id), and which
    rows still have work to do."""

    name: str
    model: type[models.Model]
    task: str
    active: Q
    # The text field that tells people the queue is down, or that a lost run is taken over.
    note: str = "error"
    # The Celery queue its task goes to, first time and every resend; None: the default queue
    # (DEFAULT_QUEUE), which every worker takes. Image builds have one of their own (builds).
    queue: str | None = None

    def rows(self) -> models.QuerySet[Any]:
        return self.model._default_manager.filter(self.active)  # type: ignore[attr-defined]


_KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    """Made known to `resend_lost` (call it where the model is defined, so every process has it)."""
    _KINDS[kind.name] = kind
    return kind


def kinds() -> list[Kind]:
    return list(_KINDS.values())


def send(
    task: str,
    pk: int,
    *,
    on_refused: models.QuerySet[Any] | None = None,
    note: str = "error",
    queue: str | None = None,
) -> bool:
    """Hand the row's id to Celery, on `queue` (None: the default queue). False (and the row
    noted, if given) when the broker cannot take it now; the row stays, and is sent again later."""
    try:
        if queue:
            current_app.send_task(task, args=(pk,), queue=queue)
        else:
            current_app.send_task(task, args=(pk,))
    except Exception as exc:  # kombu raises several families for a broker that is down
        log.warning("%s %s waits: broker unreachable: %s", task, pk, exc)
        if on_refused is not None:
            on_refused.update(**{note: QUEUE_DOWN.format(error=type(exc).__name__)})
        return False
    return True


def start(kind: Kind, pk: int) -> None:
    """In the request's transaction: the row is waiting for a worker, sent once committed."""
    kind.model._default_manager.filter(pk=pk).update(queued_at=timezone.now(), heartbeat_at=None)  # type: ignore[attr-defined]
    transaction.on_commit(lambda: send_kind(kind, pk))


def send_kind(kind: Kind, pk: int) -> bool:
    return send(kind.task, pk, on_refused=kind.rows().filter(pk=pk), note=kind.note, queue=kind.queue)


def claim(kind: Kind, pk: int) -> bool:
    """True for the one delivery that gets to do the work: the row has work to do, and nobody
    holds it (never claimed, or its worker's heartbeat has been silent too long)."""
    now = timezone.now()
    lost = now - timedelta(seconds=settings.OPERATION_HEARTBEAT_LOST)
    return bool(
        kind.rows()
        .filter(pk=pk)
        .filter(Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=lost))
        .update(heartbeat_at=now, attempts=F("attempts") + 1)
    )


def resend_lost(*, waiting_for: float | None = None, silent_for: float | None = None) -> dict[str, list[int]]:
    """Send again, for every kind: rows never claimed `waiting_for` seconds after they were
    queued (the broker was down, or the message was lost), and rows whose worker's heartbeat
    has been silent for `silent_for` seconds. Returns the ids sent, by kind."""
    now = timezone.now()
    waiting_for = settings.OPERATION_REQUEUE_AFTER if waiting_for is None else waiting_for
    silent_for = settings.OPERATION_HEARTBEAT_LOST if silent_for is None else silent_for
    never_claimed = Q(heartbeat_at__isnull=True) & (
        Q(queued_at__isnull=True) | Q(queued_at__lt=now - timedelta(seconds=waiting_for))
    )
    silent = Q(heartbeat_at__lt=now - timedelta(seconds=silent_for))
    sent: dict[str, list[int]] = {}
    for kind in kinds():
        waiting = list(kind.rows().filter(never_claimed).values_list("pk", flat=True))
        lost = list(kind.rows().filter(silent).values_list("pk", flat=True))
        if lost:
            # The lost worker's claim is released, so the next delivery may take the work over.
            kind.rows().filter(pk__in=lost).update(heartbeat_at=None, **{kind.note: LOST})
        for pk in sorted({*lost, *waiting}):
            kind.rows().filter(pk=pk).update(queued_at=now)
            if send_kind(kind, pk):
                sent.setdefault(kind.name, []).append(pk)
    return sent


class Heartbeat:
    """Touches `heartbeat_at` of the rows (one row, still active) every OPERATION_HEARTBEAT
    seconds from a thread of its own, while the worker does the work."""

    def __init__(self, rows: models.QuerySet[Any], name: str, interval: float | None = None) -> None:
        self.rows = rows
        self.interval = settings.OPERATION_HEARTBEAT if interval is None else interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{name}", daemon=True)

    @classmethod
    def of(cls, kind: Kind, pk: int) -> Heartbeat:
        return cls(kind.rows().filter(pk=pk), f"{kind.name}-{pk}")

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def _run(self) -> None:
        prepared = False  # most work ends before the first beat: no connection at all
        try:
            while not self._stop.wait(self.interval):
                try:
                    if not prepared:
                        self._bounded_waits()
                        prepared = True
                    self.rows.update(heartbeat_at=timezone.now())
                except Exception as exc:  # a missed beat only makes the reconcile look sooner
                    log.warning("heartbeat %s: %s", self._thread.name, exc)
        finally:
            connection.close()  # this thread's own connection

    def _bounded_waits(self) -> None:
        # A beat never waits long for a lock (a test's transaction may hold the row): a missed
        # beat costs nothing, a blocked thread would hold up the end of the work.
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SET lock_timeout = '1s'")
            elif connection.vendor == "sqlite":
                cursor.execute("PRAGMA busy_timeout = 1000")
