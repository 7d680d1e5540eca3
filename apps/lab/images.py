"""The lab's base images (built from the product's root filesystems) and its legacy VM's rootfs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from apps.images import imagebuild, recipe, rootfs

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class ImageSpec:
    key: str
    reference: str
    changes: list[str]
    # Catalog entry the lab registers for it.
    runtime: str
    description: str
    default_command: list[str]
    default_port: int


IMAGES: dict[str, ImageSpec] = {
    "busybox": ImageSpec(
        "busybox",
        "slipway/busybox:1",
        [f"ENV {PATH_ENV}", 'CMD ["/bin/sh"]', "LABEL io.slipway.base-image=busybox"],
        runtime="busybox",
        description="Debian's static busybox: a shell, coreutils and httpd. Serves the app volume by default.",
        default_command=["httpd", "-f", "-v", "-p", "8080", "-h", "/srv/app"],
        default_port=8080,
    ),
    "debian-python": ImageSpec(
        "debian-python",
        "slipway/debian-python:1",
        [
            f"ENV {PATH_ENV}",
            "ENV LANG=C.UTF-8",
            'CMD ["python3"]',
            "LABEL io.slipway.base-image=debian-python",
        ],
        runtime="python",
        description="Debian bookworm (minbase) with python3. Serves the app volume by default.",
        default_command=["python3", "-m", "http.server", "8080", "--directory", "/srv/app"],
        default_port=8080,
    ),
}


def recipe_text(spec: ImageSpec) -> str:
    """The version's recipe, as ops would write it: the portal builds v1 from it, as any version."""
    return "\n".join(["FROM scratch", f"ADD {spec.key} /", *spec.changes]) + "\n"


def archive(key: str, cache: Path, log: Callable[[str], None]) -> imagebuild.Built:
    """The `docker load` archive of the image, built by the portal's own builder from its recipe
    (byte for byte what a publish of that recipe makes, so the image ID is the same everywhere)."""
    spec = IMAGES[key]
    parsed = recipe.parse(recipe_text(spec), list(rootfs.NAMES))
    out = cache / f"{spec.reference.replace('/', '_').replace(':', '_')}.tar"
    return imagebuild.build(parsed, rootfs.rootfs_tar(key, cache, log), spec.reference, out)


# What a small legacy VM runs: its app (python3), ssh for whoever migrates it, and the usual
# tools an init script and an operator reach for.
VM_PACKAGES = ["python3", "openssh-server", "iproute2", "procps", "cron"]


def debian_vm_tar(cache: Path, log: Callable[[str], None]) -> Path:
    """The lab's legacy VM rootfs: bookworm minbase + VM_PACKAGES, cached like the images.
    Its ssh host keys are removed: every VM generates its own."""
    return rootfs.debootstrap_tar(
        cache / "debian-vm-bookworm.tar",
        cache / ".debian-vm.lock",
        VM_PACKAGES,
        "the legacy VM rootfs",
        log,
        drop=["etc/ssh/ssh_host_*"],
    )


def rootfs_tar(key: str, cache: Path, log: Callable[[str], None]) -> Path:
    return rootfs.rootfs_tar(key, cache, log)
