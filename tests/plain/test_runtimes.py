"""Base images from Debian's packages, without building: the release and packages checked against
the distribution's lists (apt's own, on this machine), new images from the ready-made recipes,
what a cancel refuses, and Java's trust store made the same whatever the clock said."""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import Client

from apps.applications.models import BaseImage, BuildState
from apps.audit.models import AuditEntry
from apps.images import packages, publish, reproducible, starters, versions


def test_packages_are_checked_against_the_distributions_lists() -> None:
    jre = packages.versions("bookworm", "openjdk-17-jre-headless")
    assert jre and all(v.startswith("17.") for v in jre)
    assert packages.problems("bookworm", ["tomcat10", f"openjdk-17-jre-headless={jre[0]}", "nodejs"]) == []
    said = packages.problems("bookworm", ["no-such-package-x", "java-runtime", "python3=0.1"])
    assert said[0].startswith(
        "no-such-package-x is not a package in Debian bookworm (checked against apt's lists"
    )
    assert said[1].startswith("java-runtime is a virtual package in bookworm; name one that provides it: ")
    assert "openjdk-17-jre" in said[1]
    assert said[2].startswith("python3 has no version 0.1 in bookworm; there are: 3.11")
    (unknown,) = packages.problems("sid-of-nowhere", ["curl"])
    assert unknown.startswith(
        "Debian release 'sid-of-nowhere' is not in this portal's package lists (it has: "
    )
    assert "bookworm" in unknown


def test_the_lists_a_build_installs_from_are_the_ones_checked() -> None:
    release = packages.release("bookworm")
    suites = {line.split()[2] for line in release.deb_lines}
    assert "bookworm" in suites and all(packages.family(s) == "bookworm" for s in suites)
    assert all(line.startswith("deb http") for line in release.deb_lines)


@pytest.mark.parametrize("key", list(starters.STARTERS))
def test_each_ready_made_recipe_passes_the_check(key: str) -> None:
    starter = starters.STARTERS[key]
    image = BaseImage(name=starter.name, tag=starter.tag, recipe=starter.recipe)
    parsed = publish.check_recipe(image)
    assert parsed.release == "bookworm" and parsed.packages


@pytest.mark.django_db
def test_ops_make_an_image_from_a_ready_made_recipe_and_refusals_name_the_problem(
    ops: User, owner: User
) -> None:
    java = starters.JAVA
    fields: dict[str, Any] = {
        "name": java.name,
        "tag": java.tag,
        "runtime": java.runtime,
        "default_port": java.port,
    }
    with pytest.raises(PermissionDenied):
        versions.image_create(user=owner, recipe=java.recipe, **fields)
    bad = java.recipe.replace("tomcat10", "tomcat99")
    with pytest.raises(ValidationError) as caught:
        versions.image_create(user=ops, recipe=bad, **fields)
    (said,) = caught.value.message_dict["recipe"]
    assert said.startswith("tomcat99 is not a package in Debian bookworm (checked against apt's lists")
    assert not BaseImage.objects.filter(name=java.name).exists()
    image = versions.image_create(user=ops, recipe=java.recipe, **fields)
    assert (image.state, image.reference, image.default_port) == (
        BuildState.DRAFT,
        "slipway/java-tomcat:17",
        8080,
    )
    assert AuditEntry.objects.filter(action="image.create", actor=ops).count() == 1
    # Its next version is made from it, not as a new image under the same name.
    with pytest.raises(ValidationError) as caught:
        versions.image_create(user=ops, recipe=java.recipe, **{**fields, "tag": "18"})
    assert caught.value.message_dict["name"][0].startswith(
        "slipway/java-tomcat exists already: make its next version"
    )


@pytest.mark.django_db
def test_the_new_image_page_fills_from_a_starter_and_shows_problems_with_422(ops: User) -> None:
    client = Client()
    client.force_login(ops)
    page = client.get("/images/new/?starter=python").content.decode()
    assert 'value="slipway/python"' in page and "python3-gunicorn" in page
    answer = client.post(
        "/images/new/",
        {
            "name": "slipway/x",
            "tag": "1",
            "runtime": "x",
            "recipe": "FROM debian:bookworm\nPACKAGES nosuch-pkg\n",
        },
    )
    assert answer.status_code == 422
    assert "nosuch-pkg is not a package in Debian bookworm" in answer.content.decode()
    answer = client.post(
        "/images/new/", {"name": "slipway/x", "tag": "1", "runtime": "x", "recipe": "FROM debian:bookworm\n"}
    )
    assert answer.status_code == 302 and BaseImage.objects.get(name="slipway/x").state == BuildState.DRAFT


@pytest.mark.django_db
def test_only_a_build_in_progress_can_be_cancelled_and_only_by_ops(ops: User, owner: User) -> None:
    image = BaseImage.objects.create(name="slipway/c", tag="1", runtime="x", recipe="FROM debian:bookworm\n")
    image.state = BuildState.DRAFT
    image.save()
    with pytest.raises(
        ValidationError, match="slipway/c:1 is draft: only a build or load in progress can be cancelled"
    ):
        publish.image_cancel(user=ops, image=image)
    BaseImage.objects.filter(pk=image.pk).update(state=BuildState.BUILDING, build_step="downloading packages")
    with pytest.raises(PermissionDenied):
        publish.image_cancel(user=owner, image=image)
    publish.image_cancel(user=ops, image=image)
    image.refresh_from_db()
    assert image.state == BuildState.FAILED
    assert image.build_error == "Cancelled by ops while downloading packages."
    # The page, from htmx: the live table again with what happened, in place.
    client = Client()
    client.force_login(ops)
    answer = client.post(f"/images/{image.pk}/cancel/", HTTP_HX_REQUEST="true")
    assert answer.status_code == 422
    assert "only a build or load in progress can be cancelled" in answer.content.decode()
    assert 'id="images-live"' in answer.content.decode()


def _jks(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A Java KeyStore of trusted certificates (alias, date in ms, certificate bytes)."""
    body = struct.pack(">III", 0xFEEDFEED, 2, len(entries))
    for alias, when, cert in entries:
        name = alias.encode()
        body += struct.pack(">IH", 2, len(name)) + name + struct.pack(">q", when)
        body += struct.pack(">H", 5) + b"X.509" + struct.pack(">I", len(cert)) + cert
    seal = hashlib.sha1(
        reproducible.KEYSTORES["etc/ssl/certs/java/cacerts"].encode("utf-16-be") + b"Mighty Aphrodite" + body,
        usedforsecurity=False,
    )
    return body + seal.digest()


def test_javas_trust_store_is_the_same_whenever_and_in_whatever_order_it_was_made() -> None:
    certs = [("debian:b.pem", b"\x30\x82second"), ("debian:a.pem", b"\x30\x82first")]
    monday = _jks([(alias, 1_700_000_000_000 + i, cert) for i, (alias, cert) in enumerate(certs)])
    tuesday = _jks([(alias, 1_700_086_400_000 + i, cert) for i, (alias, cert) in enumerate(reversed(certs))])
    assert monday != tuesday
    one = reproducible.jks_normalized(monday, "changeit", 0)
    assert one == reproducible.jks_normalized(tuesday, "changeit", 0)
    # Still a keystore Java opens: its seal matches its body, entries in alias order, dated 0.
    assert reproducible.jks_normalized(one, "changeit", 0) == one
    assert one.index(b"debian:a.pem") < one.index(b"debian:b.pem")
    with pytest.raises(reproducible.NotAKeyStore):
        reproducible.jks_normalized(monday, "another password", 0)
