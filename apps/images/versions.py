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
    if not recipe.strip():
        raise ValidationError(
            {"recipe": "A version made here needs a recipe: the portal builds it from that."}
        )
    image = BaseImage(
        name=base.name,
        tag=tag.strip(),
        runtime=base.runtime,
        description=description,
        recipe=recipe,
        default_command=default_command or [],
        default_port=default_port,
        reload_command=reload_command or [],
        state=BuildState.DRAFT,
    )
    errors = problems(base, image)
    if errors:
        raise ValidationError(errors)
    image.save()
    audit.record("image.version", f"new version {image.reference} (draft)", actor=user, obj=image)
    return image


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
