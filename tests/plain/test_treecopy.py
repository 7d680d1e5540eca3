"""The listings a tree copy works from: find's records and sha256sum's lines, and which paths
may be used under a volume."""

from __future__ import annotations

from apps.hosts.treecopy import Entry, excluded, parse_listing, parse_sums, safe_relative


def test_find_records_become_entries_and_unsafe_paths_are_dropped() -> None:
    data = b"d 4096 data\0f 12 data/a b.txt\0l 7 current\0f 3 ../escape\0p 0 fifo\0f 5 /abs\0"
    assert parse_listing(data) == {
        "data": Entry("d", 4096),
        "data/a b.txt": Entry("f", 12),
        "current": Entry("l", 7),
    }


def test_sha256sum_lines_with_escaped_names_are_read_back() -> None:
    digest = "a" * 64
    other = "b" * 64
    data = f"{digest}  ./data/one\n\\{other}  ./odd\\nname\\\\x\n{'c' * 64}  ./../up\n".encode()
    assert parse_sums(data) == {"data/one": digest, "odd\nname\\x": other}


def test_safe_relative_paths() -> None:
    assert safe_relative("data/x")
    assert not safe_relative("")
    assert not safe_relative("/etc/passwd")
    assert not safe_relative("data/../../etc")
    assert not safe_relative("data//x")
    assert not safe_relative("./data")


def test_exclusions_cover_the_path_and_what_is_under_it() -> None:
    assert excluded("logs", ["logs"])
    assert excluded("logs/today.log", ["logs/"])
    assert not excluded("logsearch/x", ["logs"])
