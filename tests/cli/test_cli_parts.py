"""The CLI's parts that need no portal: packing a directory, the config file, DRF's error
bodies as messages."""

from __future__ import annotations

import ast
import io
import os
import socket
import stat
import tarfile
from pathlib import Path

import pytest
import slipway_cli.config as config
import slipway_cli.pack as pack
from slipway_cli.client import drf_message
from slipway_cli.errors import CliError


def _members(packed: pack.Packed) -> dict[str, tarfile.TarInfo]:
    data = packed.fileobj.read()
    assert len(data) == packed.size
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {member.name: member for member in tar}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    (root / "static" / "css").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "app.py").write_text("print('hi')\n")
    (root / ".env.example").write_text("A=1\n")
    (root / "static" / "css" / "site.css").write_text("body{}\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    (root / "current").symlink_to("static/css")
    (root / "static" / "up").symlink_to("../app.py")
    os.link(root / "app.py", root / "same.py")
    return root


def test_a_directory_is_packed_whole_with_its_links_inside(tree: Path) -> None:
    packed = pack.prepare(tree)
    members = _members(packed)
    assert sorted(members) == [
        ".env.example",
        "app.py",
        "current",
        "empty",
        "run.sh",
        "same.py",
        "static",
        "static/css",
        "static/css/site.css",
        "static/up",
    ]
    assert packed.files == 5 - 1  # same.py is a hard link to app.py, as the portal counts it
    assert members["current"].issym() and members["current"].linkname == "static/css"
    assert members["same.py"].islnk() and members["same.py"].linkname == "app.py"
    assert members["empty"].isdir() and stat.S_IMODE(members["run.sh"].mode) == 0o755
    assert {(m.uid, m.gid, m.uname) for m in members.values()} == {(0, 0, "")}
    assert packed.name == "app.tar.gz"


@pytest.mark.parametrize(
    ("where", "target"),
    [
        ("leak", "/etc/passwd"),
        ("up", "../outside"),
        ("static/deep", "../../x"),
        ("static/abs", "/srv/app/app.py"),
    ],
)
def test_a_link_pointing_outside_the_directory_is_refused(tree: Path, where: str, target: str) -> None:
    (tree / where).symlink_to(target)
    with pytest.raises(CliError) as refused:
        pack.prepare(tree)
    assert f"{where} is a link to {target}, outside the directory" in refused.value.message
    assert refused.value.code == 1


def test_sockets_and_fifos_are_named_not_skipped(tree: Path) -> None:
    os.mkfifo(tree / "pipe")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tree / "static" / "sock"))
    try:
        with pytest.raises(CliError) as refused:
            pack.prepare(tree)
    finally:
        server.close()
    assert "pipe is a FIFO" in refused.value.message and "static/sock is a socket" in refused.value.message


def test_an_unreadable_file_stops_the_packing(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Root (as in CI) reads any file whatever its mode: the refusal is made to happen instead.
    real_open = open

    def refusing(path: object, *args: object, **kwargs: object) -> object:
        if str(path).endswith("/app.py"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(pack, "open", refusing, raising=False)
    with pytest.raises(CliError, match=r"app\.py: Permission denied"):
        pack.prepare(tree)


def test_an_archive_is_uploaded_as_it_is_and_anything_else_refused(tmp_path: Path) -> None:
    archive = tmp_path / "release.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(__file__, arcname="a.py")
    packed = pack.prepare(archive)
    assert packed.fileobj.read() == archive.read_bytes() and packed.name == "release.tgz"
    packed.fileobj.close()
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CliError, match="neither a directory nor a tar archive"):
        pack.prepare(tmp_path / "notes.txt")


def test_link_escapes() -> None:
    assert not pack.link_escapes("a/b/link", "../c")
    assert not pack.link_escapes("a/link", "./b/../c")
    assert pack.link_escapes("a/link", "../../c")
    assert pack.link_escapes("link", "..")
    assert pack.link_escapes("link", "/")


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv(config.URL_VARIABLE, raising=False)
    monkeypatch.delenv(config.TOKEN_VARIABLE, raising=False)
    return tmp_path


def test_the_config_lives_in_xdg_config_home_or_dot_config(
    config_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert config.config_path() == config_home / "home" / ".config" / "slipway" / "config.json"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")  # the XDG spec: only absolute paths
    assert config.config_path() == config_home / "home" / ".config" / "slipway" / "config.json"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home / "xdg"))
    assert config.config_path() == config_home / "xdg" / "slipway" / "config.json"


def test_saving_replaces_the_file_and_tightens_a_loose_directory(config_home: Path) -> None:
    directory = config.config_dir()
    directory.mkdir(parents=True, mode=0o755)
    directory.chmod(0o755)
    config.save("https://one.example", "t1")
    config.save("https://two.example", "t2")
    assert config.credentials() == config.Credentials("https://two.example", "t2")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(config.config_path().stat().st_mode) == 0o600
    assert config.loosely_readable() is None
    config.config_path().chmod(0o644)
    assert config.loosely_readable() == config.config_path()


def test_the_environment_overrides_each_value_on_its_own(
    config_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config.save("https://file.example", "from-file")
    monkeypatch.setenv(config.TOKEN_VARIABLE, "from-env")
    assert config.credentials() == config.Credentials("https://file.example", "from-env", token_from_env=True)
    monkeypatch.setenv(config.URL_VARIABLE, "https://env.example/api/v1/")
    assert config.credentials().url == "https://env.example"


def test_a_broken_config_file_says_to_log_in_again(config_home: Path) -> None:
    config.config_dir().mkdir(parents=True)
    config.config_path().write_text("{not json")
    with pytest.raises(CliError, match="log in again") as broken:
        config.credentials()
    assert broken.value.code == 3


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        ("https://portal.example/", "https://portal.example"),
        ("https://portal.example/slipway/api/v1/", "https://portal.example/slipway"),
        ("http://127.0.0.1:8000/account/token/", "http://127.0.0.1:8000"),
    ],
)
def test_urls_are_normalized(raw: str, url: str) -> None:
    assert config.normalize_url(raw) == url


@pytest.mark.parametrize(
    "raw", ["portal.example", "ftp://portal.example", "https://", "https://p.example/?a=1"]
)
def test_what_is_no_portal_url_is_a_usage_error(raw: str) -> None:
    with pytest.raises(CliError) as refused:
        config.normalize_url(raw)
    assert refused.value.code == 2


def test_drf_errors_become_lines() -> None:
    assert drf_message({"detail": "Not found."}) == ["Not found."]
    assert drf_message({"memory_mb": ["Too much.", "Whole numbers."], "cpus": ["More than 0."]}) == [
        "memory_mb: Too much.",
        "memory_mb: Whole numbers.",
        "cpus: More than 0.",
    ]
    assert drf_message({"non_field_errors": ["Both or neither."]}) == ["Both or neither."]
    assert drf_message({"env": {"PATH": ["Reserved."]}}) == ["env.PATH: Reserved."]
    assert drf_message(["One.", "Two."]) == ["One.", "Two."]
    assert drf_message({"detail": "Busy.", "operation": 12}) == ["Busy.", "operation: 12"]


def test_the_cli_imports_nothing_of_the_portal_nor_the_portal_of_it() -> None:
    """The CLI is installed on developers' machines without the portal: it must not need it.
    The portal, in turn, does not depend on its client."""
    source = Path(pack.__file__).parent
    portal = {"apps", "portal", "hostagent", "bench", "django", "rest_framework", "celery", "tests"}
    for path in sorted(source.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for name in names:
                assert name.split(".")[0] not in portal, f"{path.name} imports {name}"
    root = source.parents[1]
    for folder in ("apps", "portal", "hostagent"):
        for path in (root / folder).rglob("*.py"):
            assert "slipway_cli" not in path.read_text(), f"{path} uses the CLI"
