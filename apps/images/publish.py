"""Publish a base image version: build it on the portal from its recipe (no registry, no Docker
engine here), load it onto the hosts with progress, and check every host got the same image.

The image's digest is Docker's image ID on the hosts (the digest of its config), so a host that
answers with another ID for the reference does not have this version, whatever its tag says.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q

from apps.accounts import permissions
from apps.applications.models import BaseImage, BuildState
from apps.audit import services as audit
from apps.hosts.models import Host
from apps.images import distribute, imagebuild, packages, recipe, rootfs
from portal import jobs

log = logging.getLogger(__name__)

# Builds (and the loads after them) go to a queue of their own: in production a builder
# (deploy/slipway-builder.service) takes it, with the sandbox mmdebstrap needs, while the workers
# keep theirs tighter; and a build of minutes never holds a slot that scales need. Every worker
# that `make up` and the tests start takes both queues.
BUILDS_QUEUE = "builds"

# A version being built or loaded is work for a worker (run() below).
PUBLISH = jobs.register(
    jobs.Kind(
        "publish",
        BaseImage,
        task="catalog.publish_image",
        active=Q(state__in=[BuildState.BUILDING, BuildState.LOADING]),
        note="build_error",
        queue=BUILDS_QUEUE,
    )
)

# How often a host's load progress, or a build's step and log, is written (the page polls it).
PROGRESS_EVERY = 0.5
# The last lines of a build's log kept on its row (the page shows them; a failure keeps them).
LOG_LINES = 60


def rootfs_names() -> list[str]:
    return list(rootfs.NAMES)


def _rootfs(name: str) -> Path:
    """The root filesystem tarball a recipe's ADD names, built once and cached."""
    cache = Path(settings.ROOTFS_CACHE)
    return rootfs.rootfs_tar(name, cache, lambda line: log.info("rootfs %s: %s", name, line))


def check_recipe(image: BaseImage) -> recipe.Recipe:
    """The parsed recipe, or a ValidationError on the recipe field listing every problem: its
    grammar, then its Debian release and packages against the distribution's lists."""
    if not image.recipe.strip():
        raise ValidationError({"recipe": f"{image.reference} has no recipe to build from; {recipe.ALLOWED}"})
    try:
        parsed = recipe.parse(image.recipe, rootfs_names())
    except recipe.RecipeError as exc:
        raise ValidationError({"recipe": exc.errors}) from exc
    if parsed.release:
        try:
            said = packages.problems(parsed.release, parsed.packages)
        except packages.ListsUnavailable as exc:
            said = [f"The packages cannot be checked: {exc}"]
        if said:
            raise ValidationError({"recipe": said})
    return parsed


def target_hosts() -> list[Host]:
    """Hosts that need base images: those that take instances."""
    return list(Host.objects.filter(state=Host.State.ACTIVE).exclude(host_key="").order_by("name"))


@transaction.atomic
def image_publish(*, user: Any, image: BaseImage) -> BaseImage:
    """Ops: build the version from its recipe and load it onto every active host (in a worker).
    A version that failed is published again from the start; hosts that already have its
    digest are not sent it twice."""
    permissions.require_ops(user, "publish base image versions")
    image = BaseImage.objects.select_for_update().get(pk=image.pk)
    if image.state in (BuildState.BUILDING, BuildState.LOADING):
        raise ValidationError(
            f"{image.reference} is being published already ({image.get_state_display().lower()})."
        )
    # Published again (a host was added): the build is reproducible, so the hosts get the very
    # image the others have; run() refuses a build whose digest differs from the recorded one.
    check_recipe(image)
    imagebuild.validate_reference(image.reference)
    if image.state != BuildState.PUBLISHED:
        image.recommended = False  # only a published version may be; ops mark it afterwards
        image.digest = ""
    image.state = BuildState.BUILDING
    image.build_error = ""
    image.build_step = "waiting for a worker"
    image.build_log = ""
    image.load_progress = {}
    image.save(
        update_fields=[
            "state",
            "build_error",
            "build_step",
            "build_log",
            "load_progress",
            "recommended",
            "digest",
        ]
    )
    jobs.start(PUBLISH, image.pk)
    audit.record("image.publish", f"publish {image.reference} to the hosts", actor=user, obj=image)
    return image


def run(image_id: int) -> None:
    """The worker's part: build, then load host by host, recording progress as it goes. One
    delivery claims it; a publish whose worker was lost is run again from the build (it is
    reproducible, and hosts that have the digest already are skipped)."""
    if not jobs.claim(PUBLISH, image_id):
        return  # another worker has it, or it ended
    with jobs.Heartbeat.of(PUBLISH, image_id):
        _run(BaseImage.objects.get(pk=image_id))


BUILD_ERRORS = (ValidationError, ValueError, OSError, KeyError, RuntimeError)


@transaction.atomic
def image_cancel(*, user: Any, image: BaseImage) -> BaseImage:
    """Ops: stop a version being built or loaded. The worker sees the row leave its state
    within a second and stops the build (its processes too); hosts that loaded it keep it. A
    version some host has (published before, or loaded onto a host before the cancel) stays
    published there; one no host has is failed ("cancelled")."""
    permissions.require_ops(user, "cancel base image builds")
    image = BaseImage.objects.select_for_update().get(pk=image.pk)
    if image.state not in (BuildState.BUILDING, BuildState.LOADING):
        raise ValidationError(
            f"{image.reference} is {image.get_state_display().lower()}: only a build or load in progress can be cancelled."
        )
    step = image.build_step or image.get_state_display().lower()
    image.state = BuildState.PUBLISHED if image.digest and image.hosts.exists() else BuildState.FAILED
    image.build_error = f"Cancelled by {user.get_username()} while {step}."
    image.build_step = ""
    image.save(update_fields=["state", "build_error", "build_step"])
    audit.record("image.cancel", f"cancel the publish of {image.reference}", actor=user, obj=image)
    return image


class _BuildLog:
    """A build's step and last lines, written to its row at most every PROGRESS_EVERY seconds;
    it also tells the build when the row was cancelled (it left the building state)."""

    def __init__(self, image: BaseImage, *, watch: bool = True) -> None:
        self.image = image
        self.watch = watch  # False: a rebuild for a host that lacks a published version
        self.lines: list[str] = []
        self.step = ""
        self.written = 0.0
        self.stopped = False

    def __call__(self, line: str) -> None:
        self.lines = [*self.lines[-(LOG_LINES - 1) :], line[:500]]
        step = rootfs.step_of(line)
        if step:
            self.set_step(step)
        elif time.monotonic() - self.written >= PROGRESS_EVERY:
            self.flush()

    def set_step(self, step: str) -> None:
        self.step = step
        self.flush()

    def flush(self) -> None:
        self.written = time.monotonic()
        if not self.watch:
            return
        fields: dict[str, Any] = {"build_log": "\n".join(self.lines)}
        if self.step:
            fields["build_step"] = self.step
        if not BaseImage.objects.filter(pk=self.image.pk, state=BuildState.BUILDING).update(**fields):
            self.stopped = True

    def cancelled(self) -> bool:
        if not self.stopped and time.monotonic() - self.written >= PROGRESS_EVERY:
            self.flush()
        return self.stopped


def _build(image: BaseImage, log: _BuildLog | None = None) -> imagebuild.Built:
    """The version's `docker load` archive, built from its recipe (byte for byte the same each
    time: a Debian tree is built once per set of packages and kept; the same packages give the
    same bytes, see rootfs.debian_tar)."""
    log = log or _BuildLog(image, watch=False)
    parsed = check_recipe(image)
    out = archive_path(image)
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = imagebuild.archive_digest(out)
    if image.digest and kept == image.digest and image.state != BuildState.BUILDING:
        # This worker built it before: the very image the hosts have, whatever the mirror has now.
        return imagebuild.Built(path=out, digest=kept, size=out.stat().st_size, layer_diff_id="")
    if parsed.release:
        known = packages.release(parsed.release)
        tree = rootfs.debian_tar(
            parsed.release,
            known.deb_lines,
            parsed.packages,
            Path(settings.ROOTFS_CACHE),
            log,
            log.cancelled,
        )
    else:
        tree = _rootfs(parsed.rootfs)
    log.set_step("making the image")
    return imagebuild.build(parsed, tree, image.reference, out)


def _run(image: BaseImage) -> None:
    build_log = _BuildLog(image)
    try:
        built = _build(image, build_log)
    except rootfs.Cancelled:
        return  # the row says so already (image_cancel)
    except BUILD_ERRORS as exc:
        message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        if isinstance(exc, rootfs.BuildFailed):
            errors = [line for line in str(exc).splitlines() if line.startswith("E: ")]
            message = (
                errors[0][3:] if errors else "it stopped with an error"
            ) + " (the log's last lines are below)"
        build_log.flush()
        _fail(image, f"Build failed: {message}")
        return
    if image.digest and image.digest != built.digest:
        # Instances run the recorded image under this tag; another one must be another version.
        _fail(
            image,
            f"The recipe now builds {built.digest}, not the published {image.digest}: "
            "make the change a new version (a new tag).",
        )
        return
    if not BaseImage.objects.filter(pk=image.pk, state=BuildState.BUILDING).update(
        state=BuildState.LOADING, digest=built.digest, size=built.size, build_step="loading onto the hosts"
    ):
        return  # cancelled as the build ended
    progress: dict[str, dict[str, Any]] = {}
    hosts = target_hosts()
    for host in hosts:
        progress[host.name] = {"state": "waiting", "done": 0, "total": built.size, "error": ""}
    _save_progress(image, progress)

    def loading() -> bool:  # not cancelled: cancelling starts no further host
        return BaseImage.objects.filter(pk=image.pk, state=BuildState.LOADING).exists()

    # A registry: pushed once, pulled by the hosts; else streamed to them over SSH.
    through = distribute.through_registry if distribute.active() else distribute.through_ssh
    failed = through(image, built, hosts, progress, loading) if hosts else []
    if not loading():
        return  # cancelled: the hosts loaded so far keep it (the row says who cancelled)
    if not hosts:
        failed.append("no active host to load it onto")
    if failed:
        _fail(image, "Not loaded everywhere: " + "; ".join(failed), digest=built.digest)
        return
    with transaction.atomic():
        if BaseImage.objects.filter(pk=image.pk, state=BuildState.LOADING).update(
            state=BuildState.PUBLISHED, build_error="", build_step=""
        ):
            audit.record(
                "image.published",
                f"published {image.reference} ({built.digest[:19]}) on {len(hosts)} host(s)",
                obj=image,
                data={"digest": built.digest, "hosts": sorted(h.name for h in hosts)},
            )
    log.info("published %s (%s) on %d host(s)", image.reference, built.digest, len(hosts))
    prune_archives()


def archive_path(image: BaseImage) -> Path:
    return Path(settings.IMAGE_ARCHIVE_DIR) / f"{image.name.replace('/', '_')}_{image.tag}.tar"


def prune_archives() -> list[str]:
    """Delete built archives that no version needs any more (its row was deleted): they are
    rebuilt, byte for byte, whenever a host needs the version again. Returns the names gone."""
    wanted = {archive_path(image).name for image in BaseImage.objects.only("name", "tag")}
    gone = []
    for path in sorted(Path(settings.IMAGE_ARCHIVE_DIR).glob("*.tar")):
        if path.name not in wanted:
            path.unlink(missing_ok=True)
            gone.append(path.name)
    return gone


def _save_progress(image: BaseImage, progress: dict[str, dict[str, Any]]) -> None:
    BaseImage.objects.filter(pk=image.pk).update(load_progress=progress)


def _fail(image: BaseImage, message: str, digest: str = "") -> None:
    log.warning("publish of %s failed: %s", image.reference, message)
    # A version published before (it kept its digest) stays usable where it is loaded: only
    # this attempt failed.
    state = BuildState.PUBLISHED if image.digest else BuildState.FAILED
    fields: dict[str, Any] = {"state": state, "build_error": message[:4000], "build_step": ""}
    if digest:
        fields["digest"] = digest
    # Only a run still in progress ends so: a cancelled one says so already (and has its row).
    with transaction.atomic():
        if BaseImage.objects.filter(pk=image.pk, state__in=[BuildState.BUILDING, BuildState.LOADING]).update(
            **fields
        ):
            audit.record(
                "image.publish-failed",
                f"publish of {image.reference} failed: {message}",
                obj=image,
                data={"kept_published": state == BuildState.PUBLISHED},
            )


def load_missing(host: Host) -> list[tuple[str, bool]]:
    """Load onto `host` every published version it lacks (a host prepared or taken back after
    a publish); what happened to each, in words, and whether it is there now. Versions without
    a recipe (imported on the hosts by other means) cannot be sent from here and are said so."""
    said: list[tuple[str, bool]] = []
    for image in (
        BaseImage.objects.filter(state=BuildState.PUBLISHED).exclude(hosts=host).order_by("name", "tag")
    ):
        if not image.recipe:
            said.append((f"{image.reference}: no recipe, load it on the host by hand", False))
            continue
        try:
            built = _build(image)
        except BUILD_ERRORS as exc:
            said.append((f"{image.reference}: build failed: {exc}", False))
            continue
        if image.digest and built.digest != image.digest:
            said.append(
                (f"{image.reference}: the recipe now builds {built.digest}, not {image.digest}", False)
            )
            continue
        progress = dict(image.load_progress or {})
        progress[host.name] = {"state": "waiting", "done": 0, "total": built.size, "error": ""}
        through = distribute.through_registry if distribute.active() else distribute.through_ssh
        error = "; ".join(through(image, built, [host], progress))
        said.append((f"{image.reference}: {'failed: ' + error if error else 'loaded'}", not error))
    return said
