"""Base image recipes: the Dockerfile subset the portal builds from, and messages that say on
which line what is wrong and what is allowed instead."""

from __future__ import annotations

import pytest

from apps.images.recipe import ALLOWED, MAX_CHARS, MAX_LINES, UNSUPPORTED, Recipe, RecipeError, changes, parse

ROOTFS = ("busybox", "debian-python")

BUSYBOX = """\
# slipway/busybox, version 2
FROM scratch
ADD busybox /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENV SLIPWAY_IMAGE_VERSION=2
CMD ["/bin/sh"]
LABEL io.slipway.base-image=busybox
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(RecipeError) as caught:
        parse(text, ROOTFS)
    return caught.value.errors


def test_the_busybox_recipe_is_read() -> None:
    assert parse(BUSYBOX, ROOTFS) == Recipe(
        rootfs="busybox",
        env=(
            ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
            ("SLIPWAY_IMAGE_VERSION", "2"),
        ),
        cmd=("/bin/sh",),
        entrypoint=None,
        workdir="",
        labels=(("io.slipway.base-image", "busybox"),),
        exposed=(),
        user="",
    )


def test_every_allowed_instruction_is_read_case_insensitively() -> None:
    text = """
from scratch
add debian-python /
Env LANG=C.UTF-8 GREETING="hello world" QUOTE='it''s' PLAIN=a\\ b
env TZ Europe/Berlin  in  summer
ENV LANG=C.UTF-8 PRICE="\\$5"
entrypoint ["python3", "-m"]
cmd ["http.server", "8080"]
workdir /srv/app
label maintainer="ops team" org.example/tier=base
expose 8080 9000/TCP 8080/tcp
user 65534:65534
"""
    assert parse(text, ROOTFS) == Recipe(
        rootfs="debian-python",
        # A later ENV replaces the value where the name was first set, as Docker does.
        env=(
            ("LANG", "C.UTF-8"),
            ("GREETING", "hello world"),
            ("QUOTE", "its"),
            ("PLAIN", "a b"),
            ("TZ", "Europe/Berlin  in  summer"),
            ("PRICE", "$5"),
        ),
        cmd=("http.server", "8080"),
        entrypoint=("python3", "-m"),
        workdir="/srv/app",
        labels=(("maintainer", "ops team"), ("org.example/tier", "base")),
        exposed=(8080, 9000),
        user="65534:65534",
    )


def test_a_later_env_overrides_an_earlier_one() -> None:
    recipe = parse("FROM scratch\nADD busybox /\nENV A=1 B=2\nENV A=3\n", ROOTFS)
    assert recipe.env == (("A", "3"), ("B", "2"))


def test_continuation_lines_are_joined_and_skip_comments_and_blank_lines() -> None:
    text = (
        "FROM scratch\n"
        "ADD \\\n"
        "  busybox /\n"
        "ENV A=1 \\\n"
        "# a comment inside the instruction\n"
        "\n"
        "    B=2 \\  \n"
        "    C=3\n"
        'CMD ["/bin/sh", \\\r\n'
        '     "-c", "echo hi"]\r\n'
        "RUN true\n"
    )
    # The instruction is reported on the line it starts on.
    assert errors_of(text) == [f"line 11: RUN is not supported: {UNSUPPORTED['RUN']}. {ALLOWED}"]
    recipe = parse(text.replace("RUN true\n", ""), ROOTFS)
    assert recipe.rootfs == "busybox"
    assert recipe.env == (("A", "1"), ("B", "2"), ("C", "3"))
    assert recipe.cmd == ("/bin/sh", "-c", "echo hi")


def test_a_backslash_on_the_last_line_ends_the_recipe() -> None:
    assert parse("FROM scratch\nADD busybox / \\", ROOTFS).rootfs == "busybox"


def test_run_is_refused_with_what_is_allowed() -> None:
    assert errors_of("FROM scratch\nADD busybox /\nRUN apk add curl\n") == [
        "line 3: RUN is not supported: the portal builds images without a Docker engine; to install Debian "
        "packages, list them after FROM debian:<release> with PACKAGES name .... Allowed: FROM debian:<release> "
        "with PACKAGES, or FROM scratch with ADD <rootfs> /; then ENV, CMD, ENTRYPOINT, WORKDIR, LABEL, EXPOSE, USER."
    ]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (
            "COPY app /srv/app",
            "there is no build context; the image's files come from the root filesystem (ADD <rootfs> /)",
        ),
        ("ARG VERSION=1", "recipes have no build arguments; write values out"),
        ("VOLUME /data", "the portal attaches volumes per app"),
        ("MAINTAINER ops", "use LABEL maintainer=... instead"),
        ("HEALTHCHECK NONE", "health checks are set per app in the portal"),
    ],
)
def test_other_dockerfile_instructions_are_refused_with_a_reason(line: str, reason: str) -> None:
    instruction = line.split()[0]
    assert errors_of(f"FROM scratch\nADD busybox /\n{line}\n") == [
        f"line 3: {instruction} is not supported: {reason}. {ALLOWED}"
    ]


def test_an_unknown_instruction_is_named() -> None:
    assert errors_of("FROM scratch\nADD busybox /\nFETCH x\n") == [
        f"line 3: unknown instruction FETCH. {ALLOWED}"
    ]


def test_from_must_be_debian_or_scratch_and_come_first_and_once() -> None:
    allowed = "Allowed: FROM debian:<release> (e.g. FROM debian:bookworm) or FROM scratch."
    assert errors_of("FROM ubuntu:22.04\nADD busybox /\n") == [
        "line 1: FROM ubuntu:22.04 is not supported: the portal builds images from Debian's packages or its own "
        f"root filesystems, not from another image. {allowed}"
    ]
    assert errors_of("FROM debian:Bookworm!\n") == [
        f"line 1: FROM debian:Bookworm! does not name a Debian release by its code name. {allowed}"
    ]
    assert errors_of("FROM scratch AS base\nADD busybox /\n") == [
        f"line 1: FROM takes one word (no --platform, no AS name). {allowed}"
    ]
    assert errors_of("FROM --platform=linux/arm64 scratch\nADD busybox /\n") == [
        f"line 1: FROM takes one word (no --platform, no AS name). {allowed}"
    ]
    assert errors_of("ENV A=1\nFROM scratch\nADD busybox /\n") == [
        "line 1: the recipe must start with FROM debian:<release> or FROM scratch (found ENV first).",
        "line 2: FROM must come once, as the first instruction (the recipe starts on line 1).",
    ]
    assert errors_of("FROM scratch\nADD busybox /\nFROM scratch\n") == [
        "line 3: FROM must come once, as the first instruction (the recipe starts on line 1).",
    ]


def test_add_needs_a_rootfs_the_portal_builds_at_slash() -> None:
    needs = (
        "ADD needs one of the root filesystems the portal builds (busybox, debian-python), e.g. ADD busybox /"
    )
    assert errors_of("FROM scratch\nADD ubuntu.tar /\n") == [f"line 2: {needs}"]
    assert errors_of("FROM scratch\nADD busybox\n") == [f"line 2: {needs}"]
    assert errors_of("FROM scratch\nADD busybox /opt\n") == [
        "line 2: ADD puts the root filesystem at /, not at /opt: write ADD busybox /"
    ]
    assert errors_of("FROM scratch\nADD --chown=1:1 busybox /\n") == [
        "line 2: ADD takes no options (--chown=1:1): the root filesystem is added as built. Allowed: ADD with "
        "one of the root filesystems the portal builds (busybox, debian-python), e.g. ADD busybox /"
    ]


def test_the_rootfs_names_come_from_the_caller() -> None:
    with pytest.raises(RecipeError, match=r"builds \(alpine\), e.g. ADD alpine /"):
        parse("FROM scratch\nADD busybox /\n", ["alpine"])
    assert parse("FROM scratch\nADD alpine /\n", {"alpine"}).rootfs == "alpine"


def test_a_second_add_is_refused() -> None:
    assert errors_of("FROM scratch\nADD busybox /\n\nADD debian-python /\n") == [
        "line 4: ADD may appear only once: a recipe has one root filesystem (the first ADD is on line 2)."
    ]


def test_missing_from_and_add_are_reported() -> None:
    hint = "one of the root filesystems the portal builds (busybox, debian-python), e.g. ADD busybox /"
    assert errors_of("FROM scratch\nENV A=1\n\n") == [f"line 3: the recipe ends without ADD: it needs {hint}"]
    empty = (
        "line 1: the recipe is empty: it needs FROM debian:<release> (e.g. FROM debian:bookworm) with PACKAGES, "
        f"or FROM scratch, then ADD with {hint}"
    )
    assert errors_of("# only a comment\n\n") == [empty]
    assert errors_of("") == [empty]
    assert errors_of("ADD busybox /\n") == [
        "line 1: the recipe must start with FROM debian:<release> or FROM scratch (found ADD first)."
    ]


def test_env_names_values_and_forms() -> None:
    start = "FROM scratch\nADD busybox /\n"
    assert errors_of(start + "ENV 1ABC=x\n") == [
        "line 3: ENV name '1ABC' is not allowed: use letters, digits and '_', not starting with a digit, "
        "e.g. ENV LANG=C.UTF-8."
    ]
    assert errors_of(start + "ENV MY-VAR value\n") == [
        "line 3: ENV name 'MY-VAR' is not allowed: use letters, digits and '_', not starting with a digit, "
        "e.g. ENV LANG=C.UTF-8."
    ]
    assert errors_of(start + "ENV LANG\n") == [
        "line 3: ENV LANG has no value: write KEY=VALUE, e.g. ENV LANG=C.UTF-8."
    ]
    assert errors_of(start + "ENV A=1 B\n") == [
        "line 3: ENV B has no value: write key=value pairs, e.g. ENV LANG=C.UTF-8."
    ]
    assert errors_of(start + "ENV\n") == ["line 3: ENV needs KEY=VALUE, e.g. ENV LANG=C.UTF-8."]
    assert errors_of(start + 'ENV A="open\n') == ["line 3: ENV has an unterminated double quote."]
    assert errors_of(start + "ENV A='open\n") == ["line 3: ENV has an unterminated single quote."]


def test_variables_are_refused_rather_than_expanded() -> None:
    start = "FROM scratch\nADD busybox /\n"
    message = (
        "uses a variable ({}), which the portal does not expand: write the value out, or \\$ for a literal "
        "dollar sign."
    )
    assert errors_of(start + "ENV PATH=$PATH:/opt/bin\n") == ["line 3: ENV " + message.format("$PATH")]
    assert errors_of(start + 'LABEL v="${VERSION}"\n') == ["line 3: LABEL " + message.format("${VERSION}")]
    assert errors_of(start + "WORKDIR /home/$USER\n") == ["line 3: WORKDIR " + message.format("$USER")]
    # Where Docker would not expand either, the dollar sign is kept.
    recipe = parse(start + "ENV A='$HOME' B=$ C=\"\\$X\"\n", ROOTFS)
    assert recipe.env == (("A", "$HOME"), ("B", "$"), ("C", "$X"))


def test_cmd_and_entrypoint_take_the_exec_form_only() -> None:
    start = "FROM scratch\nADD busybox /\n"
    assert errors_of(start + "CMD /bin/sh -c 'echo hi'\n") == [
        "line 3: CMD in shell form is not supported: images may have no shell. Allowed: the exec form, a JSON "
        'array of strings, e.g. CMD ["/bin/sh"].'
    ]
    assert errors_of(start + "CMD ['/bin/sh']\n") == [
        "line 3: CMD is not a valid JSON array (strings take double quotes). Allowed: the exec form, a JSON "
        'array of strings, e.g. CMD ["/bin/sh"].'
    ]
    assert errors_of(start + "ENTRYPOINT []\n") == [
        'line 3: ENTRYPOINT needs at least one string, e.g. ENTRYPOINT ["/usr/bin/python3", "-m", "http.server"].'
    ]
    assert errors_of(start + 'CMD ["sh", ""]\n') == [
        'line 3: CMD items must be non-empty strings, e.g. CMD ["/bin/sh"].'
    ]
    assert errors_of(start + 'CMD ["sleep", 5]\n') == [
        'line 3: CMD items must be non-empty strings, e.g. CMD ["/bin/sh"].'
    ]


def test_workdir_expose_user_and_label_are_checked() -> None:
    start = "FROM scratch\nADD busybox /\n"
    assert errors_of(start + "WORKDIR app\n") == [
        "line 3: WORKDIR needs an absolute path, e.g. WORKDIR /srv/app (got 'app')."
    ]
    assert errors_of(start + "WORKDIR\n") == [
        "line 3: WORKDIR needs an absolute path, e.g. WORKDIR /srv/app."
    ]
    assert errors_of(start + "EXPOSE 53/udp\n") == [
        "line 3: EXPOSE 53/udp is not supported: only tcp ports, e.g. EXPOSE 8080 or EXPOSE 8080/tcp."
    ]
    for port in ("0", "65536", "8000-8010", "http"):
        assert errors_of(start + f"EXPOSE {port}\n") == [
            f"line 3: EXPOSE takes single ports from 1 to 65535, e.g. EXPOSE 8080 or EXPOSE 8080/tcp (got '{port}')."
        ]
    assert errors_of(start + "USER web server\n") == [
        "line 3: USER takes a user name or numeric uid, optionally :group, e.g. USER nobody or USER 65534 "
        "(got 'web server')."
    ]
    assert errors_of(start + "LABEL version\n") == [
        "line 3: LABEL version has no value: write key=value pairs, e.g. LABEL io.slipway.base-image=busybox."
    ]
    assert errors_of(start + "LABEL -x=1\n") == [
        "line 3: LABEL key '-x' is not allowed: use letters, digits, '.', '-', '_' and '/', starting with a "
        "letter or digit, at most 128 characters, e.g. LABEL io.slipway.base-image=busybox."
    ]
    assert errors_of(start + "LABEL io.slipway.image=x\n") == [
        "line 3: LABEL io.slipway.image is set by the portal to the image's reference; choose another key."
    ]


def test_all_errors_of_a_recipe_are_reported_at_once_in_line_order() -> None:
    text = """\
# broken on purpose
FROM scratch
ADD ubuntu /
RUN apt-get update
CMD python3 app.py
EXPOSE 53/udp
ENV 9LIVES=yes
"""
    errors = errors_of(text)
    assert [error.split(":")[0] for error in errors] == ["line 3", "line 4", "line 5", "line 6", "line 7"]
    with pytest.raises(RecipeError) as caught:
        parse(text, ROOTFS)
    assert str(caught.value) == "; ".join(errors)
    assert isinstance(caught.value, ValueError)


def test_the_size_of_a_recipe_is_bounded() -> None:
    long_lines = "FROM scratch\nADD busybox /\n" + "# filler\n" * MAX_LINES
    assert errors_of(long_lines) == [
        f"line {MAX_LINES + 1}: the recipe has {MAX_LINES + 2} lines; at most {MAX_LINES} are allowed."
    ]
    long_text = "FROM scratch\nADD busybox /\nLABEL note=" + "x" * MAX_CHARS + "\n"
    assert errors_of(long_text) == [
        f"line 3: the recipe is {len(long_text):,} characters long; at most {MAX_CHARS:,} are allowed (a "
        "recipe only describes the image, its files come from the root filesystem)."
    ]


def test_control_characters_are_refused() -> None:
    assert errors_of("FROM scratch\nADD busybox /\nENV A=x\x00y\n") == [
        "line 3: contains the control character U+0000; a recipe is plain text."
    ]


def test_changes_are_docker_import_lines_that_read_back_the_same() -> None:
    text = (
        "FROM scratch\nADD busybox /\n"
        'ENV PATH=/bin GREETING="hello \\"world\\"" EMPTY= PRICE="\\$5"\n'
        'ENTRYPOINT ["/bin/busybox"]\nCMD ["httpd", "-f"]\nWORKDIR /srv/my app\n'
        "LABEL io.slipway.base-image=busybox note='two words'\nEXPOSE 8080\nUSER nobody\n"
    )
    recipe = parse(text, ROOTFS)
    assert changes(recipe) == [
        "ENV PATH=/bin",
        'ENV GREETING="hello \\"world\\""',
        'ENV EMPTY=""',
        'ENV PRICE="\\$5"',
        'ENTRYPOINT ["/bin/busybox"]',
        'CMD ["httpd", "-f"]',
        'WORKDIR "/srv/my app"',
        "LABEL io.slipway.base-image=busybox",
        'LABEL note="two words"',
        "EXPOSE 8080",
        "USER nobody",
    ]
    assert parse("FROM scratch\nADD busybox /\n" + "\n".join(changes(recipe)), ROOTFS) == recipe
    assert changes(parse(BUSYBOX, ROOTFS)) == [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV SLIPWAY_IMAGE_VERSION=2",
        'CMD ["/bin/sh"]',
        "LABEL io.slipway.base-image=busybox",
    ]


def test_a_debian_release_with_packages() -> None:
    recipe = parse(
        "FROM debian:bookworm\n"
        "PACKAGES tomcat10 \\\n"
        "  openjdk-17-jre-headless=17.0.19+10-1~deb12u2\n"
        "PACKAGES libtcnative-1\n"
        'CMD ["/usr/share/tomcat10/bin/catalina.sh", "run"]\n',
        ROOTFS,
    )
    assert (recipe.release, recipe.rootfs) == ("bookworm", "")
    # Sorted: the same packages in another order are the same image.
    assert recipe.packages == ("libtcnative-1", "openjdk-17-jre-headless=17.0.19+10-1~deb12u2", "tomcat10")
    assert changes(recipe)[0] == "FROM debian:bookworm"
    # A release alone is a minimal Debian.
    assert parse("FROM debian:trixie\n", ROOTFS).packages == ()


def test_packages_and_add_each_need_their_own_from() -> None:
    assert errors_of("FROM debian:bookworm\nADD busybox /\n") == [
        "line 2: ADD is for FROM scratch: a recipe FROM debian:bookworm gets its files from Debian's packages; "
        "list them with PACKAGES name ..."
    ]
    assert errors_of("FROM scratch\nADD busybox /\nPACKAGES curl\n") == [
        "line 3: PACKAGES needs a Debian release to install from: start with FROM debian:<release>, "
        "e.g. FROM debian:bookworm."
    ]


def test_bad_package_names_are_named() -> None:
    example = "e.g. PACKAGES openjdk-17-jre-headless tomcat10, or name=version to pin one"
    assert errors_of("FROM debian:bookworm\nPACKAGES Tomcat10 nodejs\n") == [
        "line 2: PACKAGES 'Tomcat10' is not a Debian package name (lowercase letters, digits and '+', '-', '.', "
        f"starting with a letter or digit, at least two characters), {example}."
    ]
    assert errors_of("FROM debian:bookworm\nPACKAGES\n") == [
        f"line 2: PACKAGES needs at least one Debian package name, {example}."
    ]
    assert errors_of("FROM debian:bookworm\nPACKAGES curl\nPACKAGES curl=7.88.1-10\n") == [
        "line 3: PACKAGES lists curl twice; list each package once."
    ]
    many = " ".join(f"p{i:03d}" for i in range(101))
    assert errors_of(f"FROM debian:bookworm\nPACKAGES {many}\n") == [
        "line 2: PACKAGES lists 101 packages; at most 100 are allowed (their dependencies come with them)."
    ]
