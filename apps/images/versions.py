"""New versions of a base image, made from an existing one (ops, from the images page): the
recipe and defaults are copied for editing, the version starts as a draft that Publish builds
and loads; and one published version per image is marked the one apps should move to."""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from apps.accounts import permissions
from apps.applications.models import BaseImage, BuildState
from apps.audit import services as audit
from apps.images.publish import check_recipe


def next_tag(image: BaseImage) -> str:
    """A tag for the next version: `1` → `2`, `3.11` → `3.12`, and a free one however many exist."""
    match = re.fullmatch(r"(.*?)(\d+)", image.tag)
    stem, number = (match.group(1), int(match.group(2))) if match else (image.tag + "-", 1)
    taken = set(BaseImage.objects.filter(name=image.name).values_list("tag", flat=True))
    tag = f"{stem}{number + 1}"
    while tag in taken:
        number += 1
        tag = f"{stem}{number + 1}"
    return tag


def version_create(
    *,
    user: Any,
    base: BaseImage,
    tag: str,
    recipe: str,
    description: str = "",
    default_command: list[str] | None = None,
    default_port: int | None = None,
    reload_command: list[str] | None = None,
) -> BaseImage:
    """A draft version of `base`'s image: checked in full (tag, recipe, commands) before anything
    is saved, so a refused one leaves nothing behind."""
    permissions.require_ops(user, "make base image versions")
    image = _draft(
        base.name, tag, base.runtime, recipe, description, default_command, default_port, reload_command
    )
    errors = problems(base, image)
    _save(user, image, errors, "image.version", f"new version {image.reference} (draft)")
    return image


def image_create(
    *,
    user: Any,
    name: str,
    tag: str,
    runtime: str,
    recipe: str,
    description: str = "",
    default_command: list[str] | None = None,
    default_port: int | None = None,
    reload_command: list[str] | None = None,
) -> BaseImage:
    """A new base image (its first version, a draft), e.g. from a ready-made recipe (starters):
    checked in full before anything is saved. A name that exists already is refused: its next
    version is made from one of its versions (New version)."""
    permissions.require_ops(user, "make base images")
    image = _draft(
        name.strip(), tag, runtime.strip(), recipe, description, default_command, default_port, reload_command
    )
    errors = problems(image, image)
    if image.name and BaseImage.objects.filter(name=image.name).exists():
        errors["name"] = [
            f"{image.name} exists already: make its next version from one of its versions (New version), "
            "or pick another name."
        ]
        errors.pop("tag", None)
    _save(user, image, errors, "image.create", f"new image {image.reference} (draft)")
    return image


def _draft(
    name: str,
    tag: str,
    runtime: str,
    recipe: str,
    description: str,
    default_command: list[str] | None,
    default_port: int | None,
    reload_command: list[str] | None,
) -> BaseImage:
    if not recipe.strip():
        raise ValidationError(
            {"recipe": "A version made here needs a recipe: the portal builds it from that."}
        )
    return BaseImage(
        name=name,
        tag=tag.strip(),
        runtime=runtime,
        description=description,
        recipe=recipe,
        default_command=default_command or [],
        default_port=default_port,
        reload_command=reload_command or [],
        state=BuildState.DRAFT,
    )


def _save(user: Any, image: BaseImage, errors: dict[str, list[str]], action: str, summary: str) -> None:
    if errors:
        raise ValidationError(errors)
    image.save()
    audit.record(action, summary, actor=user, obj=image)


def problems(base: BaseImage, image: BaseImage) -> dict[str, list[str]]:
    """Everything wrong with a new version of `base`, per field, all at once."""
    errors: dict[str, list[str]] = {}
    try:
        image.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if BaseImage.objects.filter(name=base.name, tag=image.tag).exists():
        errors["tag"] = [f"{base.name}:{image.tag} exists already; pick another tag, e.g. {next_tag(base)}."]
    if image.recipe.strip():
        try:
            check_recipe(image)
        except ValidationError as exc:
            errors.update(exc.message_dict)
    return errors


@transaction.atomic
def version_recommend(*, user: Any, image: BaseImage) -> BaseImage:
    """Mark `image` the version its apps should move to (the one that was is unmarked)."""
    permissions.require_ops(user, "recommend base image versions")
    image = BaseImage.objects.select_for_update().get(pk=image.pk)
    if image.state != BuildState.PUBLISHED:
        raise ValidationError(
            f"{image.reference} is {image.get_state_display().lower()}: only a published version can be recommended."
        )
    if image.deprecated or image.withdrawn:
        raise ValidationError(
            f"{image.reference} is deprecated or withdrawn: it cannot be the recommended one."
        )
    BaseImage.objects.filter(name=image.name, recommended=True).exclude(pk=image.pk).update(recommended=False)
    image.recommended = True
    image.save(update_fields=["recommended"])
    audit.record("image.recommend", f"recommend {image.reference}", actor=user, obj=image)
    return image
