"""Host-side work on an app's volume never follows a link the app made.

The app's container runs as root and can put anything into its volume, symlinks included
(`conf -> /etc`, `.slipway-upload -> /etc/passwd`). The portal then works on those files as root
on the host: it unpacks uploads, copies volumes between hosts, writes markers and removes stale
files. These tests plant such links in temporary directories and run the real commands locally:
first through the portal's own code paths (the SSH transport swapped for local processes, so the
argv the portal sends runs as it would on a host), then the agent's safe layer piece by piece.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.base import ContentFile

from apps.accounts.models import Team
from apps.applications import services as catalog
from apps.applications.models import App, BaseImage, VolumeUpload
from apps.hosts import agent, treecopy
from apps.hosts.models import Host
from apps.hosts.transport import CommandResult, Endpoint, HostError, ssh
from apps.instances import volumes
from hostagent import safefs, serve

REPO = Path(__file__).resolve().parents[2]


# --- the portal's commands, run on this machine instead of over SSH ----------------------------


# The agent these commands run is the bundle the portal installs, at a path of this test run's
# own instead of /opt/slipway/agent/current.
_BUNDLE = Path(tempfile.mkdtemp(prefix="slipway-agent-")) / "hostagent.pyz"
_BUNDLE.write_bytes(agent.bundle().data)


def _here(argv: list[str]) -> list[str]:
    if argv[: len(treecopy.AGENT_ARGV)] == treecopy.AGENT_ARGV:
        return ["/usr/bin/python3", str(_BUNDLE), *argv[len(treecopy.AGENT_ARGV) :]]
    return argv


def _local_run(
    endpoint: Endpoint,
    argv: list[str],
    *,
    timeout: float | None = None,
    stdin: bytes | None = None,
    max_output: int | None = None,
) -> CommandResult:
    started = time.monotonic()
    done = subprocess.run(
        _here(argv), input=stdin or b"", capture_output=True, timeout=timeout or 60, cwd=REPO
    )
    limit = max_output or 1 << 20
    return CommandResult(
        exit_code=done.returncode,
        stdout=done.stdout[:limit],
        stderr=done.stderr[:limit],
        duration=time.monotonic() - started,
        truncated=len(done.stdout) > limit,
    )


class _LocalStream:
    """ssh.Stream's interface over a local process."""

    def __init__(self, argv: list[str]) -> None:
        self.process = subprocess.Popen(
            _here(argv), cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    def write(self, data: bytes) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(data)
        except BrokenPipeError as exc:
            raise HostError(f"connection lost while sending: {exc}") from exc

    def read(self, size: int = 1 << 20) -> bytes:
        assert self.process.stdout is not None
        return os.read(self.process.stdout.fileno(), size)

    def close_input(self) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()

    def finish(self, timeout: float) -> tuple[int, str]:
        assert self.process.stdout is not None and self.process.stderr is not None
        self.close_input()
        self.process.stdout.read()
        code = self.process.wait(timeout)
        return code, self.process.stderr.read().decode(errors="replace").strip()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


def _local_agent_call(
    endpoint: Endpoint, argv: list[str], command: str, args: dict[str, object], timeout: float
) -> object:
    request = json.dumps({"id": 1, "cmd": command, "args": args}) + "\n"
    done = subprocess.run(
        _here([*argv, "serve"]), input=request.encode(), capture_output=True, timeout=timeout, cwd=REPO
    )
    reply = json.loads(done.stdout)
    if not reply["ok"]:
        raise HostError(f"hostagent {command}: {reply['error']}")
    return reply["result"]


@pytest.fixture
def local(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every SSH command, stream and agent request runs here, as root, like on a host."""
    monkeypatch.setattr(ssh, "run", _local_run)
    monkeypatch.setattr(ssh, "stream", lambda endpoint, argv, stall: _LocalStream(argv))
    monkeypatch.setattr(ssh, "agent_call", _local_agent_call)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Host files the app must never reach: stands in for /etc."""
    place = tmp_path / "outside"
    place.mkdir()
    (place / "passwd").write_text("root:x:0:0\n")
    return place


def _listing(place: Path) -> dict[str, bytes]:
    return {str(p.relative_to(place)): p.read_bytes() for p in sorted(place.rglob("*")) if p.is_file()}


def _tarball(files: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:  # type: ignore[call-overload]
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def shop(owner: User, alpha: Team, image: BaseImage, hosts: list[Host], tmp_path: Path, settings: Any) -> App:
    settings.MEDIA_ROOT = tmp_path / "media"
    for host in hosts:
        host.volume_root = str(tmp_path / f"volumes-{host.name}")
        host.save(update_fields=["volume_root"])
    return catalog.app_create(user=owner, team=alpha, slug="shop", base_image=image)


def _upload(app: App, owner: User, data: bytes) -> VolumeUpload:
    upload = VolumeUpload(
        app=app, sha256=hashlib.sha256(data).hexdigest(), size=len(data), files=1, uploaded_by=owner
    )
    upload.file.save("up.tar", ContentFile(data), save=False)
    upload.save()
    return upload


# --- the escapes, through the portal's own code -----------------------------------------------


def test_an_upload_does_not_write_through_a_symlinked_directory_the_app_made(
    local: None, shop: App, owner: User, hosts: list[Host], outside: Path
) -> None:
    volume = Path(shop.volume_path(hosts[0]))
    volume.mkdir(parents=True)
    (volume / "conf").symlink_to(outside)  # what `ln -s /etc conf` in the container leaves
    before = _listing(outside)

    volumes.volume_put(
        shop, hosts[0], _upload(shop, owner, _tarball({"conf/cron.d/x": b"* * * * * root sh\n"}))
    )

    assert _listing(outside) == before, "the upload wrote outside the volume"
    # The app still gets its file, in a real directory where its link was.
    assert not (volume / "conf").is_symlink()
    assert (volume / "conf/cron.d/x").read_bytes() == b"* * * * * root sh\n"


def test_the_upload_marker_is_not_written_through_a_symlink(
    local: None, shop: App, owner: User, hosts: list[Host], outside: Path
) -> None:
    volume = Path(shop.volume_path(hosts[0]))
    volume.mkdir(parents=True)
    (volume / volumes.UPLOAD_MARKER).symlink_to(outside / "passwd")
    upload = _upload(shop, owner, _tarball({"index.html": b"hi\n"}))

    volumes.volume_put(shop, hosts[0], upload)

    assert (outside / "passwd").read_text() == "root:x:0:0\n"
    marker = volume / volumes.UPLOAD_MARKER
    assert not marker.is_symlink() and marker.read_text() == f"{upload.sha256}\n"
    # Once there, the marker says this upload is in place: a second put is skipped.
    (volume / "index.html").unlink()
    volumes.volume_put(shop, hosts[0], upload, only_if_missing=True)
    assert not (volume / "index.html").exists()


def test_a_volume_copy_between_hosts_stays_inside_the_target_volume(
    local: None, shop: App, hosts: list[Host], outside: Path
) -> None:
    source, target = (Path(shop.volume_path(h)) for h in hosts)
    (source / "conf").mkdir(parents=True)
    (source / "conf/app.ini").write_text("port=8080\n")
    (source / "current").symlink_to("conf")  # the app's own link: copied as a link
    (source / "etc").symlink_to("/etc")  # not followed on either end, copied as a link
    target.mkdir(parents=True)
    (target / "conf").symlink_to(outside)  # planted by an earlier instance on the target
    (target / volumes.COPY_MARKER).symlink_to(outside / "passwd")
    before = _listing(outside)

    volumes.volume_sync(shop, hosts[0], hosts[1])

    assert _listing(outside) == before, "the copy wrote outside the volume"
    assert (target / "conf/app.ini").read_text() == "port=8080\n"
    assert os.readlink(target / "current") == "conf" and os.readlink(target / "etc") == "/etc"
    marker = target / volumes.COPY_MARKER
    assert not marker.is_symlink() and marker.read_text() == f"moved from {hosts[0].name}\n"


def test_stale_files_are_removed_without_following_a_symlinked_directory(
    local: None, shop: App, hosts: list[Host], outside: Path
) -> None:
    source, target = (Path(shop.volume_path(h)) for h in hosts)
    source.mkdir(parents=True)
    (source / "keep.txt").write_text("keep\n")
    (target / "old").mkdir(parents=True)
    (target / "old/passwd").write_text("stale\n")
    have = treecopy.manifest(
        lambda argv, **kw: _local_run(hosts[1].endpoint, argv, **kw), str(target), [], "t"
    )
    assert "old/passwd" in have.entries
    # Between the listing and the removal the app swaps the directory for a link to host files.
    (target / "old/passwd").unlink()
    (target / "old").rmdir()
    (target / "old").symlink_to(outside)
    done = _local_run(
        hosts[1].endpoint,
        [*treecopy.AGENT_ARGV, "remove", str(target)],
        stdin=b"old/passwd\0",
    )
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["absent"] == 1
    assert (outside / "passwd").read_text() == "root:x:0:0\n"


def test_a_copy_does_not_write_through_a_directory_the_target_app_linked_elsewhere(
    local: None, shop: App, hosts: list[Host], outside: Path
) -> None:
    # No directory member for conf in the stream (only what changed is sent): tar would have
    # followed the target's conf link, as it does for an upload without a conf/ member.
    source, target = (Path(shop.volume_path(h)) for h in hosts)
    (source / "conf").mkdir(parents=True)
    (source / "conf/app.ini").write_text("port=8080\n")
    target.mkdir(parents=True)
    (target / "conf").symlink_to(outside)
    manifest = treecopy.Manifest({"conf/app.ini": treecopy.Entry("f", 10)})
    treecopy._pump(
        hosts[0].endpoint,
        str(source),
        hosts[1].endpoint,
        str(target),
        list(manifest.entries),
        10,
        lambda done, total: None,
        5,
        None,
        True,
    )
    assert not (outside / "app.ini").exists()
    assert (target / "conf/app.ini").read_text() == "port=8080\n"


# --- the safe layer, piece by piece ------------------------------------------------------------


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    place = tmp_path / "volume"
    place.mkdir()
    return place


def _members(*members: tuple[tarfile.TarInfo, bytes | None], mode: str = "w") -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:  # type: ignore[call-overload]
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buffer.seek(0)
    return buffer


def _file(name: str, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info


def _of(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o755
    return info


def test_extract_replaces_a_symlinked_directory_on_the_way_with_a_real_one(
    volume: Path, outside: Path
) -> None:
    (volume / "conf").symlink_to(outside)
    (volume / "deep").mkdir()
    (volume / "deep/etc").symlink_to("/etc")
    counts = safefs.extract(
        str(volume), _members((_file("conf/cron.d/x"), b"job\n"), (_file("./deep/etc/hostname"), b"h\n"))
    )
    assert counts["files"] == 2 and counts["bytes"] == 6
    assert _listing(outside) == {"passwd": b"root:x:0:0\n"}
    assert (volume / "conf/cron.d/x").read_bytes() == b"job\n"
    assert (volume / "deep/etc/hostname").read_bytes() == b"h\n"
    assert Path("/etc/hostname").read_bytes() != b"h\n"


def test_extract_replaces_a_symlink_at_a_files_place_instead_of_writing_through_it(
    volume: Path, outside: Path
) -> None:
    (volume / "index.html").symlink_to(outside / "passwd")
    (volume / "dir").symlink_to(outside)
    counts = safefs.extract(
        str(volume), _members((_file("index.html"), b"page\n"), (_of("dir", tarfile.DIRTYPE), None))
    )
    assert counts["replaced"] == 2
    assert (outside / "passwd").read_text() == "root:x:0:0\n"
    assert not (volume / "index.html").is_symlink() and (volume / "index.html").read_bytes() == b"page\n"
    assert (volume / "dir").is_dir() and not (volume / "dir").is_symlink()


def test_extract_keeps_the_archives_symlinks_as_links_and_never_follows_them(
    volume: Path, outside: Path
) -> None:
    safefs.extract(
        str(volume),
        _members(
            (_of("etc", tarfile.SYMTYPE, "/etc"), None),
            (_of("out", tarfile.SYMTYPE, str(outside)), None),
            (_file("out/passwd"), b"owned\n"),  # through the link it just made: not followed
        ),
    )
    assert os.readlink(volume / "etc") == "/etc"
    assert (outside / "passwd").read_text() == "root:x:0:0\n"
    # The directory the member needed took the link's place.
    assert (volume / "out").is_dir() and (volume / "out/passwd").read_bytes() == b"owned\n"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../escape", "'..' is refused"),
        ("a/../../escape", "'..' is refused"),
        ("/etc/cron.d/x", "absolute names are refused"),
    ],
)
def test_extract_refuses_names_that_leave_the_volume(volume: Path, name: str, why: str) -> None:
    with pytest.raises(safefs.Refused, match=why) as refused:
        safefs.extract(str(volume), _members((_file(name), b"x")))
    assert name in str(refused.value)
    assert list(volume.iterdir()) == []


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_extract_refuses_devices_and_fifos(volume: Path, kind: bytes) -> None:
    with pytest.raises(safefs.Refused, match="sda: devices and fifos are refused"):
        safefs.extract(str(volume), _members((_file("ok.txt"), b"x"), (_of("sda", kind), None)))
    assert not (volume / "sda").exists()


def test_hard_links_only_to_files_unpacked_before_them(volume: Path, outside: Path) -> None:
    safefs.extract(
        str(volume), _members((_file("a.txt"), b"same\n"), (_of("b.txt", tarfile.LNKTYPE, "a.txt"), None))
    )
    assert (volume / "a.txt").stat().st_ino == (volume / "b.txt").stat().st_ino
    (volume / "link").symlink_to(outside / "passwd")
    for target in ("link", str(outside / "passwd"), "../outside/passwd", "missing.txt"):
        with pytest.raises(safefs.Refused, match=r"c.txt: .*(hard link|refused)"):
            safefs.extract(str(volume), _members((_of("c.txt", tarfile.LNKTYPE, target), None)))
    assert os.stat(outside / "passwd").st_nlink == 1


def test_modes_lose_setuid_and_setgid_and_owners_are_kept_only_when_asked(volume: Path) -> None:
    tool = _file("bin/tool", 0o6755)
    tool.uid, tool.gid = 1234, 4321
    safefs.extract(str(volume), _members((tool, b"#!/bin/sh\n")))
    st = (volume / "bin/tool").stat()
    assert st.st_mode & 0o7777 == 0o755
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    if os.getuid() == 0:
        safefs.extract(str(volume), _members((tool, b"#!/bin/sh\n")), same_owner=True)
        st = (volume / "bin/tool").stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 4321, 0o755)


def test_an_existing_directory_keeps_its_mode_and_a_new_one_gets_the_archives(volume: Path) -> None:
    (volume / "old").mkdir(mode=0o750)
    old = _of("old", tarfile.DIRTYPE)
    new = _of("new", tarfile.DIRTYPE)
    new.mode = 0o705
    safefs.extract(str(volume), _members((old, None), (new, None), (_file("new/x"), b"x")))
    assert (volume / "old").stat().st_mode & 0o777 == 0o750
    assert (volume / "new").stat().st_mode & 0o777 == 0o705


def test_extract_is_bounded_in_bytes_and_members(volume: Path) -> None:
    with pytest.raises(safefs.Refused, match="big: the archive holds more than 1000 bytes"):
        safefs.extract(str(volume), _members((_file("big"), bytes(2000))), max_bytes=1000)
    assert not (volume / "big").exists()
    many = _members(*((_file(f"f{i}"), b"") for i in range(5)))
    with pytest.raises(safefs.Refused, match="f3: more than 3 members"):
        safefs.extract(str(volume), many, max_members=3)
    # A compressed bomb stops at the bound, however small the tarball.
    bomb = _members((_file("zeros"), bytes(8 << 20)), mode="w:xz")
    assert len(bomb.getvalue()) < 10_000
    with pytest.raises(safefs.Refused, match="more than 1048576 bytes"):
        safefs.extract(str(volume), bomb, max_bytes=1 << 20)


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_extract_reads_plain_and_compressed_streams(volume: Path, mode: str) -> None:
    stream = _members((_file("a" * 150 + "/long-name.txt"), b"long\n"), mode=mode)
    assert safefs.extract(str(volume), stream)["files"] == 1
    assert (volume / ("a" * 150) / "long-name.txt").read_bytes() == b"long\n"


def test_a_stream_that_is_not_a_tarball_is_refused_clearly(volume: Path) -> None:
    with pytest.raises(safefs.Refused, match="not a readable tar stream"):
        safefs.extract(str(volume), io.BytesIO(b"hello, not a tar" * 100))
    cut = _members((_file("a"), bytes(100_000))).getvalue()[:50_000]
    with pytest.raises(safefs.Refused, match="damaged after 1 member"):
        safefs.extract(str(volume), io.BytesIO(cut))


def test_a_volume_directory_that_is_itself_a_symlink_is_refused(tmp_path: Path, outside: Path) -> None:
    (tmp_path / "linked").symlink_to(outside)
    with pytest.raises(safefs.Refused, match="the volume directory is a symlink"):
        safefs.extract(str(tmp_path / "linked"), _members((_file("x"), b"x")))
    with pytest.raises(safefs.Refused, match="must be an absolute path"):
        safefs.write_file("relative/dir", "x", "x")


def test_write_file_replaces_a_symlinked_marker_and_refuses_a_symlinked_directory(
    volume: Path, outside: Path
) -> None:
    (volume / ".slipway-upload").symlink_to(outside / "passwd")
    assert safefs.write_file(str(volume), ".slipway-upload", "abc\n")["replaced"] == "symlink"
    assert (outside / "passwd").read_text() == "root:x:0:0\n"
    assert (volume / ".slipway-upload").read_text() == "abc\n"
    (volume / "state").symlink_to(outside)
    with pytest.raises(
        safefs.Refused, match="state/marker: state is a symlink or not a directory; not followed"
    ):
        safefs.write_file(str(volume), "state/marker", "x")
    (volume / "full").mkdir()
    (volume / "full/x").write_text("x")
    with pytest.raises(safefs.Refused, match="full: a directory with files in it is in the way"):
        safefs.write_file(str(volume), "full", "x")


def test_read_file_reads_only_a_regular_file_and_never_blocks_on_a_fifo(volume: Path, outside: Path) -> None:
    (volume / "marker").write_text("sum\n")
    (volume / "linked").symlink_to(outside / "passwd")
    os.mkfifo(volume / "fifo")
    (volume / "dir").symlink_to(outside)
    assert safefs.read_file(str(volume), "marker")["content"] == "sum\n"
    assert safefs.read_file(str(volume), "linked") == {"name": "linked", "kind": "symlink", "content": None}
    assert safefs.read_file(str(volume), "fifo")["kind"] == "fifo"
    assert safefs.read_file(str(volume), "dir/passwd")["kind"] == "missing"
    assert safefs.read_file(str(volume / "nowhere"), "marker")["kind"] == "missing"


def test_remove_unlinks_files_and_links_but_never_through_a_symlinked_directory(
    volume: Path, outside: Path
) -> None:
    (volume / "stale.txt").write_text("x")
    (volume / "link").symlink_to(outside / "passwd")
    (volume / "dir").symlink_to(outside)
    (volume / "real").mkdir()
    done = safefs.remove(str(volume), ["stale.txt", "link", "dir/passwd", "real", "gone"])
    assert done == {"removed": 2, "absent": 2, "kept": ["real"]}
    assert (outside / "passwd").exists() and (volume / "dir").is_symlink()
    with pytest.raises(safefs.Refused, match=r"'\.\.' is refused"):
        safefs.remove(str(volume), ["real/../../outside/passwd"])


def test_manifest_lists_links_as_links_and_reads_no_fifo_device_or_host_file(
    volume: Path, outside: Path
) -> None:
    (volume / "data").mkdir()
    (volume / "data/a.txt").write_bytes(b"a")
    (volume / "shadow").symlink_to(outside / "passwd")
    (volume / "etc").symlink_to(outside)
    os.mkfifo(volume / "fifo")  # opening it for reading would block: it is never opened
    if os.getuid() == 0:
        os.mknod(volume / "disk", 0o600 | stat.S_IFBLK, os.makedev(7, 0))
    document = safefs.manifest(str(volume))
    entries = {path: (kind, extra) for kind, _, path, extra in document["entries"]}
    assert entries["data/a.txt"] == ("f", hashlib.sha256(b"a").hexdigest())
    assert entries["shadow"] == ("l", str(outside / "passwd"))
    assert entries["etc"] == ("l", str(outside))
    assert entries["fifo"] == ("p", "")
    assert "etc/passwd" not in entries
    if os.getuid() == 0:
        assert entries["disk"] == ("b", "")
    assert "data" in entries and entries["data"][0] == "d"
    assert [p for _, _, p, _ in safefs.manifest(str(volume), ["data"])["entries"]] == [
        "disk",
        "etc",
        "fifo",
        "shadow",
    ][int(os.getuid() != 0) :]


def test_pack_skips_a_directory_swapped_for_a_link_and_leaves_out_fifos(volume: Path, outside: Path) -> None:
    # The listing said data/ was a directory with passwd in it; since then the app made data a
    # link to host files. tar would read the host's file through it.
    (volume / "data").symlink_to(outside)
    (volume / "keep.txt").write_bytes(b"keep")
    (volume / "hard.txt").hardlink_to(volume / "keep.txt")
    (volume / "current").symlink_to("keep.txt")
    os.mkfifo(volume / "fifo")
    out = io.BytesIO()
    counts = safefs.pack(str(volume), ["data/passwd", "keep.txt", "hard.txt", "current", "fifo", "gone"], out)
    assert counts["gone"] == ["data/passwd", "gone"] and counts["skipped"] == ["fifo (fifo)"]
    out.seek(0)
    with tarfile.open(fileobj=out, mode="r|") as tar:
        members = {m.name: (m.type, m.linkname) for m in tar}
    assert members == {
        "keep.txt": (tarfile.REGTYPE, ""),
        "hard.txt": (tarfile.LNKTYPE, "keep.txt"),
        "current": (tarfile.SYMTYPE, "keep.txt"),
    }
    # What pack writes, extract takes: a copy keeps links and hard links.
    out.seek(0)
    copy = volume.parent / "copy"
    copy.mkdir()
    safefs.extract(str(copy), out)
    assert (copy / "keep.txt").read_bytes() == b"keep" and os.readlink(copy / "current") == "keep.txt"
    assert (copy / "hard.txt").stat().st_ino == (copy / "keep.txt").stat().st_ino


# --- the agent's command line and serve ---------------------------------------------------------


def _run_agent(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    # As on a bare host: the system python3, no site-packages, no PYTHON* variables.
    return subprocess.run(
        ["/usr/bin/python3", "-S", "-E", "-m", "hostagent", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_the_agent_extracts_from_stdin_and_says_why_it_refuses(volume: Path, outside: Path) -> None:
    (volume / "conf").symlink_to(outside)
    done = _run_agent("extract", str(volume), stdin=_tarball({"conf/x": b"x\n"}))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["files"] == 1 and (volume / "conf/x").exists()
    assert _listing(outside) == {"passwd": b"root:x:0:0\n"}
    # A refusal early in a big stream: the rest is read, so the sender sees this message.
    big = _members((_file("../x"), b"x"), (_file("pad"), os.urandom(3 << 20))).getvalue()
    done = _run_agent("extract", str(volume), stdin=big)
    assert done.returncode == 1
    assert (
        done.stderr.decode().strip() == "hostagent extract: ../x: '..' is refused; it would leave the volume"
    )


def test_the_agent_packs_names_from_stdin_and_exits_1_for_what_was_gone(volume: Path) -> None:
    (volume / "a.txt").write_bytes(b"a")
    done = _run_agent("pack", str(volume), stdin=b"./a.txt\0./gone.txt\0")
    assert done.returncode == 1 and b"1 gone: gone.txt" in done.stderr
    with tarfile.open(fileobj=io.BytesIO(done.stdout), mode="r|") as tar:
        assert [m.name for m in tar] == ["a.txt"]
    assert _run_agent("pack", "/nonexistent/volume").returncode == 2


def test_the_agent_writes_reads_lists_and_removes_on_the_command_line(volume: Path, outside: Path) -> None:
    (volume / "m").symlink_to(outside / "passwd")
    assert _run_agent("write-file", str(volume), "m", "hello\n").returncode == 0
    assert (outside / "passwd").read_text() == "root:x:0:0\n"
    read = _run_agent("read-file", f"--root={volume}", "--name=m")
    assert json.loads(read.stdout)["content"] == "hello\n"
    listed = json.loads(_run_agent("manifest", str(volume)).stdout)
    assert listed["entries"] == [["f", 6, "m", hashlib.sha256(b"hello\n").hexdigest()]]
    removed = _run_agent("remove", str(volume), stdin=b"m\0")
    assert json.loads(removed.stdout)["removed"] == 1 and not (volume / "m").exists()


def test_serve_answers_the_volume_commands(volume: Path, outside: Path) -> None:
    (volume / ".slipway-copied").symlink_to(outside / "passwd")
    requests = [
        {
            "id": 1,
            "cmd": "write-file",
            "args": {"root": str(volume), "name": ".slipway-copied", "content": "c\n"},
        },
        {"id": 2, "cmd": "read-file", "args": {"root": str(volume), "name": ".slipway-copied"}},
        {"id": 3, "cmd": "remove", "args": {"root": str(volume), "names": ["/etc/passwd"]}},
    ]
    out = io.StringIO()
    serve.serve(io.StringIO("".join(json.dumps(r) + "\n" for r in requests)), out)
    replies = [json.loads(line) for line in out.getvalue().splitlines()]
    assert replies[0]["result"]["replaced"] == "symlink"
    assert replies[1]["result"]["content"] == "c\n"
    assert replies[2] == {
        "id": 3,
        "ok": False,
        "error": "/etc/passwd: absolute names are refused; only names inside the volume",
    }
    assert (outside / "passwd").read_text() == "root:x:0:0\n"
