"""Images built from a recipe and a rootfs tar as `docker load` archives: the classic layout,
a config whose sha256 is the image ID, and the same bytes for the same inputs. (That the ID is
the one Docker reports was checked by hand against the lab's Docker 20.10 daemon.)"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from apps.images import imagebuild
from apps.images.imagebuild import Built, InvalidReference, build, validate_reference
from apps.images.recipe import Recipe, parse

RECIPE = parse(
    """\
FROM scratch
ADD busybox /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
ENTRYPOINT ["/bin/busybox"]
CMD ["httpd", "-f", "-p", "8080"]
WORKDIR /srv/app
EXPOSE 8080
USER 65534
LABEL io.slipway.base-image=busybox
""",
    ["busybox"],
)


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    """A small rootfs tar with a directory, a file, a symlink and some incompressible bulk."""
    path = tmp_path / "rootfs.tar"
    with tarfile.open(path, "w") as tar:
        directory = tarfile.TarInfo("bin")
        directory.type = tarfile.DIRTYPE
        directory.mode = 0o755
        tar.addfile(directory)
        data = b"#!/bin/sh\necho hi\n" + bytes(range(256)) * 4096
        script = tarfile.TarInfo("bin/hello")
        script.size = len(data)
        script.mode = 0o755
        tar.addfile(script, io.BytesIO(data))
        link = tarfile.TarInfo("bin/sh")
        link.type = tarfile.SYMTYPE
        link.linkname = "hello"
        tar.addfile(link)
    return path


def members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive) as tar:
        return {member.name: member for member in tar.getmembers()}


def read(archive: Path, name: str) -> bytes:
    with tarfile.open(archive) as tar:
        extracted = tar.extractfile(name)
        assert extracted is not None
        return extracted.read()


def test_the_archive_has_the_docker_save_layout(rootfs: Path, tmp_path: Path) -> None:
    built = build(RECIPE, rootfs, "slipway/busybox:2", tmp_path / "image.tar", architecture="amd64")
    layer_hex = hashlib.sha256(rootfs.read_bytes()).hexdigest()
    config_name = built.digest.removeprefix("sha256:") + ".json"
    assert built == Built(
        path=tmp_path / "image.tar",
        digest=built.digest,
        size=(tmp_path / "image.tar").stat().st_size,
        layer_diff_id=f"sha256:{layer_hex}",
    )
    assert set(members(built.path)) == {
        layer_hex,
        f"{layer_hex}/layer.tar",
        config_name,
        "manifest.json",
        "repositories",
    }
    assert json.loads(read(built.path, "manifest.json")) == [
        {"Config": config_name, "RepoTags": ["slipway/busybox:2"], "Layers": [f"{layer_hex}/layer.tar"]}
    ]
    assert json.loads(read(built.path, "repositories")) == {"slipway/busybox": {"2": layer_hex}}
    # The layer is the rootfs tar as given, byte for byte.
    assert read(built.path, f"{layer_hex}/layer.tar") == rootfs.read_bytes()


def test_the_config_describes_the_recipe_and_its_hash_is_the_digest(rootfs: Path, tmp_path: Path) -> None:
    built = build(RECIPE, rootfs, "slipway/busybox:2", tmp_path / "image.tar", architecture="arm64")
    raw = read(built.path, built.digest.removeprefix("sha256:") + ".json")
    assert built.digest == "sha256:" + hashlib.sha256(raw).hexdigest()
    config = json.loads(raw)
    # Canonical form: sorted keys, no blanks between tokens.
    assert raw == json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    assert config == {
        "architecture": "arm64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
            "Entrypoint": ["/bin/busybox"],
            "Cmd": ["httpd", "-f", "-p", "8080"],
            "WorkingDir": "/srv/app",
            "User": "65534",
            "ExposedPorts": {"8080/tcp": {}},
            "Labels": {"io.slipway.base-image": "busybox", "io.slipway.image": "slipway/busybox:2"},
        },
        "rootfs": {"type": "layers", "diff_ids": [built.layer_diff_id]},
        "history": [
            {
                "created": "1970-01-01T00:00:00Z",
                "created_by": "ADD busybox /",
                "comment": "built by the Slipway portal from a recipe",
            }
        ],
    }


def test_a_minimal_recipe_leaves_unset_fields_out(rootfs: Path, tmp_path: Path) -> None:
    built = build(Recipe(rootfs="busybox"), rootfs, "slipway/busybox:1", tmp_path / "image.tar")
    config = json.loads(read(built.path, built.digest.removeprefix("sha256:") + ".json"))
    assert config["config"] == {"Env": [], "Labels": {"io.slipway.image": "slipway/busybox:1"}}


def test_the_same_inputs_give_the_same_bytes_and_digest(rootfs: Path, tmp_path: Path) -> None:
    first = build(RECIPE, rootfs, "slipway/busybox:2", tmp_path / "one.tar")
    # Another file with the same content, another time: still the same image.
    copy = tmp_path / "copy.tar"
    copy.write_bytes(rootfs.read_bytes())
    second = build(RECIPE, copy, "slipway/busybox:2", tmp_path / "two.tar")
    assert first.digest == second.digest
    assert first.path.read_bytes() == second.path.read_bytes()
    for member in members(first.path).values():
        assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (0, 0, 0, "", "")
        assert member.mode == (0o755 if member.isdir() else 0o644)


def test_each_reference_and_each_architecture_has_its_own_digest(rootfs: Path, tmp_path: Path) -> None:
    v2 = build(RECIPE, rootfs, "slipway/busybox:2", tmp_path / "v2.tar", architecture="amd64")
    v3 = build(RECIPE, rootfs, "slipway/busybox:3", tmp_path / "v3.tar", architecture="amd64")
    arm = build(RECIPE, rootfs, "slipway/busybox:2", tmp_path / "arm.tar", architecture="arm64")
    assert len({v2.digest, v3.digest, arm.digest}) == 3
    assert v2.layer_diff_id == v3.layer_diff_id == arm.layer_diff_id


def test_the_architecture_defaults_to_dockers_name_for_this_machine(
    rootfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for machine, expected in (("x86_64", "amd64"), ("aarch64", "arm64")):
        monkeypatch.setattr(imagebuild.platform, "machine", lambda machine=machine: machine)
        built = build(RECIPE, rootfs, "slipway/busybox:2", tmp_path / f"{machine}.tar")
        config = json.loads(read(built.path, built.digest.removeprefix("sha256:") + ".json"))
        assert config["architecture"] == expected
    with pytest.raises(ValueError, match="not a Docker architecture name"):
        build(RECIPE, rootfs, "slipway/busybox:2", tmp_path / "x.tar", architecture="x86-64 ")


def test_the_rootfs_is_streamed_not_read_whole(
    rootfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "big.tar"
    with tarfile.open(big, "w") as tar:
        chunk = hashlib.sha256(b"seed").digest() * 32768  # 1 MiB
        for index in range(6):
            info = tarfile.TarInfo(f"data/{index}")
            info.size = len(chunk)
            tar.addfile(info, io.BytesIO(chunk))
    largest_read = 0
    real_open = open

    class Spy(io.BufferedReader):
        def read(self, size: int | None = -1) -> bytes:
            nonlocal largest_read
            data = super().read(size)
            largest_read = max(largest_read, len(data))
            return data

    def spying_open(path: object, mode: str = "r", *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        if Path(str(path)) == big and mode == "rb":
            return Spy(io.FileIO(str(path), "rb"))
        return real_open(path, mode, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", spying_open)
    built = build(RECIPE, big, "slipway/busybox:2", tmp_path / "image.tar")
    monkeypatch.undo()
    assert 0 < largest_read <= imagebuild.CHUNK < big.stat().st_size
    assert built.layer_diff_id == "sha256:" + hashlib.sha256(big.read_bytes()).hexdigest()


def test_the_archive_replaces_the_old_one_and_leaves_no_temporary_file(rootfs: Path, tmp_path: Path) -> None:
    out = tmp_path / "image.tar"
    out.write_bytes(b"old")
    build(RECIPE, rootfs, "slipway/busybox:2", out)
    assert tarfile.is_tarfile(out)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["image.tar", "rootfs.tar"]


def test_a_compressed_or_non_tar_rootfs_is_refused_and_nothing_is_written(
    rootfs: Path, tmp_path: Path
) -> None:
    gz = tmp_path / "rootfs.tar.gz"
    with tarfile.open(gz, "w:gz") as tar:
        tar.add(rootfs, arcname="rootfs.tar")
    with pytest.raises(ValueError, match="is compressed; the root filesystem must be an uncompressed tar"):
        build(RECIPE, gz, "slipway/busybox:2", tmp_path / "image.tar")
    text = tmp_path / "notes.txt"
    text.write_text("not a tar\n" * 100)
    with pytest.raises(ValueError, match="is not a tar archive"):
        build(RECIPE, text, "slipway/busybox:2", tmp_path / "image.tar")
    assert not (tmp_path / "image.tar").exists()
    assert not [path for path in tmp_path.iterdir() if path.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("slipway/busybox:2", ("slipway/busybox", "2")),
        ("busybox:1.36-r0", ("busybox", "1.36-r0")),
        ("registry.example:5000/team/app_v2:latest", ("registry.example:5000/team/app_v2", "latest")),
        ("localhost/a__b.c-d:x", ("localhost/a__b.c-d", "x")),
    ],
)
def test_valid_references(reference: str, expected: tuple[str, str]) -> None:
    assert validate_reference(reference) == expected


@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        ("slipway/busybox", "is not an image reference with a tag"),
        ("registry.example:5000/busybox", "is not an image reference with a tag"),
        ("slipway/busybox@sha256:" + "a" * 64, "is not an image reference with a tag"),
        ("Slipway/busybox:2", "has an invalid name 'Slipway/busybox'"),
        ("slipway//busybox:2", "has an invalid name"),
        ("slipway/-busybox:2", "has an invalid name"),
        ("slipway/busybox:", "has an invalid tag ''"),
        ("slipway/busybox:.2", "has an invalid tag '.2'"),
        ("slipway/busybox:" + "x" * 129, "has an invalid tag"),
        ("bad_host.example/busybox:2", "has an invalid registry host 'bad_host.example'"),
    ],
)
def test_invalid_references_say_what_is_allowed(
    reference: str, problem: str, rootfs: Path, tmp_path: Path
) -> None:
    with pytest.raises(InvalidReference) as caught:
        build(RECIPE, rootfs, reference, tmp_path / "image.tar")
    assert problem in str(caught.value)
    assert str(caught.value).endswith("e.g. slipway/busybox:2.")
    assert not (tmp_path / "image.tar").exists()
