"""Reading Docker's multiplexed log stream into lines, and making lines safe to show. The frames
here are built byte for byte as the Engine API sends them; the lab tests read real ones."""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator

import pytest
from django.core.exceptions import ValidationError

from apps.console import logs
from apps.hosts.transport.docker_api.logs import FrameReader


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


def fed(data: bytes, size: int) -> list[tuple[str, bytes]]:
    reader = FrameReader()
    out: list[tuple[str, bytes]] = []
    for at in range(0, len(data), size):
        out += reader.feed(data[at : at + size])
    return out + list(reader.end())


def lines(
    frames: list[tuple[str, bytes]], timestamps: bool = False, stream: str = "both"
) -> list[logs.LogLine]:
    source: Iterator[tuple[str, bytes]] = iter(frames)
    return list(logs._lines(source, timestamps, stream))


def test_frames_come_out_whole_whatever_the_chunks() -> None:
    data = frame(1, b"out one\n") + frame(2, b"err one\n") + frame(1, b"x" * 70000 + b"\n")
    expected = [("stdout", b"out one\n"), ("stderr", b"err one\n"), ("stdout", b"x" * 70000 + b"\n")]
    for size in (1, 3, 8, 9, 4096, len(data)):
        assert fed(data, size) == expected, size


def test_a_stream_without_frame_headers_is_taken_as_stdout() -> None:
    # A container with a TTY: Docker sends the bytes as they are.
    got = fed(b"plain text\n", 4)
    assert {stream for stream, _ in got} == {"stdout"}
    assert b"".join(payload for _, payload in got) == b"plain text\n"


def test_lines_keep_their_stream_and_order_across_frames() -> None:
    got = lines([("stdout", b"one\ntw"), ("stderr", b"oops\n"), ("stdout", b"o\nthree")])
    assert [(line.stream, line.text) for line in got] == [
        ("stdout", "one"),
        ("stderr", "oops"),
        ("stdout", "two"),
        ("stdout", "three"),
    ]
    assert [line.text for line in lines([("stdout", b"a\n"), ("stderr", b"b\n")], stream="stderr")] == ["b"]


def test_timestamps_are_split_from_the_text_and_bad_utf8_is_replaced() -> None:
    (line,) = lines([("stdout", b"2026-12-04T10:00:00.123456789Z caf\xe9 ok\r\n")], timestamps=True)
    assert line.time == "2026-12-04T10:00:00.123456789Z"
    assert line.text == "caf\ufffd ok"


def test_a_line_is_shown_without_escapes_or_controls_and_cut_when_huge(settings) -> None:  # type: ignore[no-untyped-def]
    settings.LOG_DISPLAY_LINE_MAX = 100
    assert logs.for_display("\x1b[31mred\x1b[0m and \x1b]0;title\x07plain\x07\x00") == "red and plain"
    assert logs.for_display("<script>alert(1)</script>") == "<script>alert(1)</script>"  # escaped by the page
    shown = logs.for_display("y" * 1_000_000)
    assert shown.startswith("y" * 100 + " … (999,900 more characters")


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"tail": "abc"}, "tail", "'abc' is not a number of lines from 1 to 10000, or \"all\"."),
        ({"tail": "0"}, "tail", "'0' is not a number of lines from 1 to 10000"),
        ({"tail": "10001"}, "tail", "'10001' is not a number of lines from 1 to 10000"),
        ({"since": "yesterday"}, "since", "'yesterday' is neither seconds since 1970 nor an ISO 8601 time"),
        ({"timestamps": "maybe"}, "timestamps", "'maybe' is not a yes or no: use 1 or 0."),
        ({"stream": "stdin"}, "stream", "'stdin' is not one of both, stdout, stderr."),
    ],
)
def test_a_bad_query_says_what_is_allowed(params: dict[str, str], field: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        logs.parse_query(params)
    assert caught.value.message_dict[field][0].startswith(message)


def test_a_good_query_is_read_as_meant() -> None:
    query, stream = logs.parse_query({"tail": "all", "since": "2026-12-04T10:00:00Z", "timestamps": "1"})
    assert (query.tail, query.timestamps, stream) == (None, True, "both")
    assert query.since == 1796378400.0
    query, stream = logs.parse_query({"since": "1796378400.5", "stream": "stderr"})
    assert (query.tail, query.since, stream) == (200, 1796378400.5, "stderr")


def test_docker_times_sort_as_times_though_docker_drops_trailing_zeros() -> None:
    times = ["2026-12-04T10:00:01.93655Z", "2026-12-04T10:00:01.936555626Z", "2026-12-04T10:00:01Z"]
    assert sorted(times, key=logs._sortable) == [times[2], times[0], times[1]]


def test_a_follow_starts_one_nanosecond_after_the_last_line_exactly() -> None:
    # A line this close to the next microsecond came back twice when the follow started from
    # a float: near 1.8e9 a float is only good to about 0.24 µs.
    since = logs.just_after("2026-12-04T10:00:01.936555999Z")
    assert f"{since:.9f}" == "1796378401.936556000"
    assert f"{logs.just_after('2026-12-04T10:00:01.93655Z'):.9f}" == "1796378401.936550001"
    assert f"{logs.just_after('2026-12-04T10:00:01Z'):.9f}" == "1796378401.000000001"


def test_a_waiting_follower_is_never_held_past_its_wait_and_gets_what_comes_after() -> None:
    """The thread that reads a merge for a followed request comes back IDLE when nothing came
    within its wait (so a server shutting down never waits on it), and the lines still come
    on the next call; a closed merge ends."""
    arrived = threading.Event()

    def batches() -> Iterator[list[logs.LogLine]]:
        arrived.wait(10)
        yield [logs.LogLine("stdout", "", "late")]

    merged = logs.Merged([("a", batches())], [])
    assert merged.next(0.2) == logs.Merged.IDLE  # came back on its own: the line had not come
    arrived.set()
    item = merged.next(5)
    assert item is not None and item[0] == "a" and [line.text for line in item[1] or []] == ["late"]
    merged.close()
    assert merged.next(0.2) is None
