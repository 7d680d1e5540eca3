"""Base image recipes: the small Dockerfile subset the portal builds images from without a
Docker engine or a registry (see imagebuild). Every message says what is wrong and what is
allowed, with the line it is on; all problems of a recipe are reported at once.

A recipe starts either from a Debian release with the packages it needs (`FROM debian:bookworm`,
`PACKAGES openjdk-17-jre-headless tomcat10`: the root filesystem is installed from Debian's
packages, see rootfs.debian_tar) or from one of the portal's built-in root filesystems
(`FROM scratch`, `ADD busybox /`). Whether the release and the packages exist is checked
against the distribution's lists elsewhere (packages.py): this module is only the grammar."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

MAX_CHARS = 20_000
MAX_LINES = 200

ALLOWED = (
    "Allowed: FROM debian:<release> with PACKAGES, or FROM scratch with ADD <rootfs> /; then ENV, CMD, "
    "ENTRYPOINT, WORKDIR, LABEL, EXPOSE, USER."
)
# The portal labels every image with its own reference (so each version has its own digest).
RESERVED_LABEL = "io.slipway.image"

ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")
USER_PART = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}"
USER = re.compile(rf"{USER_PART}(?::{USER_PART})?")
PORT = re.compile(r"(\d{1,5})(?:/([A-Za-z]+))?")
# Debian Policy 5.6.1 (package names) and 5.6.12 (versions), with an optional exact version pin.
PACKAGE = re.compile(r"([a-z0-9][a-z0-9+.-]+)(?:=([0-9][A-Za-z0-9.+~:-]*))?")
RELEASE = re.compile(r"[a-z][a-z0-9-]{1,31}")
MAX_PACKAGES = 100
# Docker continues a line that ends in a backslash, trailing blanks allowed.
CONTINUATION = re.compile(r"\\[ \t]*$")
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# A dollar sign Docker would expand: $NAME, ${NAME}, $1. A lone "$" stays literal there too.
VARIABLE_START = re.compile(r"[{A-Za-z0-9_]")

# Why the instructions a Dockerfile may hold are not in a recipe, for the message.
UNSUPPORTED = {
    "RUN": "the portal builds images without a Docker engine; to install Debian packages, list them "
    "after FROM debian:<release> with PACKAGES name ...",
    "COPY": "there is no build context; the image's files come from the root filesystem (ADD <rootfs> /)",
    "ARG": "recipes have no build arguments; write values out",
    "VOLUME": "the portal attaches volumes per app",
    "SHELL": "CMD and ENTRYPOINT take the exec form only, so no shell is involved",
    "HEALTHCHECK": "health checks are set per app in the portal",
    "STOPSIGNAL": "the portal stops containers the same way for every image",
    "ONBUILD": "recipes are not used as parents of other builds",
    "MAINTAINER": "use LABEL maintainer=... instead",
}


class RecipeError(ValueError):
    """All the problems of one recipe, each "line N: what is wrong. What is allowed"."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(self.errors))


@dataclass(frozen=True)
class Recipe:
    rootfs: str = ""  # a built-in root filesystem (FROM scratch), or
    release: str = ""  # a Debian release the root filesystem is installed from
    packages: tuple[str, ...] = ()  # "name" or "name=version", sorted, for that release
    env: tuple[tuple[str, str], ...] = ()
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    workdir: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    exposed: tuple[int, ...] = ()
    user: str = ""


class _Bad(Exception):
    """A problem with one instruction's arguments; the caller adds line and instruction."""


def parse(text: str, rootfs_names: Iterable[str]) -> Recipe:
    """The recipe in `text`, whose ADD must name one of `rootfs_names`; RecipeError otherwise."""
    parser = _Parser(sorted(set(rootfs_names)))
    return parser.parse(text)


def changes(recipe: Recipe) -> list[str]:
    """The same settings as `docker import --change` lines (for reference and comparison)."""
    lines = [f"ENV {key}={_quote(value)}" for key, value in recipe.env]
    if recipe.release:
        lines.insert(0, f"FROM debian:{recipe.release}")
    if recipe.entrypoint is not None:
        lines.append(f"ENTRYPOINT {json.dumps(list(recipe.entrypoint))}")
    if recipe.cmd is not None:
        lines.append(f"CMD {json.dumps(list(recipe.cmd))}")
    if recipe.workdir:
        lines.append(f"WORKDIR {_quote(recipe.workdir)}")
    lines.extend(f"LABEL {key}={_quote(value)}" for key, value in recipe.labels)
    lines.extend(f"EXPOSE {port}" for port in recipe.exposed)
    if recipe.user:
        lines.append(f"USER {recipe.user}")
    return lines


def _quote(value: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_./:,+@%=-]+", value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


class _Parser:
    def __init__(self, rootfs_names: list[str]) -> None:
        self.rootfs_names = rootfs_names
        self.errors: list[tuple[int, str]] = []
        self.first_line: int | None = None  # where the first instruction is
        self.add_line: int | None = None
        self.packages_line: int | None = None
        self.rootfs = ""
        self.release = ""
        self.packages: list[str] = []
        self.env: dict[str, str] = {}
        self.cmd: tuple[str, ...] | None = None
        self.entrypoint: tuple[str, ...] | None = None
        self.workdir = ""
        self.labels: dict[str, str] = {}
        self.exposed: list[int] = []
        self.user = ""
        self.handlers: dict[str, Callable[[int, str], None]] = {
            "FROM": self._do_from,
            "ADD": self._do_add,
            "PACKAGES": self._do_packages,
            "ENV": self._do_env,
            "CMD": self._do_cmd,
            "ENTRYPOINT": self._do_entrypoint,
            "WORKDIR": self._do_workdir,
            "LABEL": self._do_label,
            "EXPOSE": self._do_expose,
            "USER": self._do_user,
        }

    @property
    def rootfs_hint(self) -> str:
        names = ", ".join(self.rootfs_names) or "none yet"
        example = self.rootfs_names[0] if self.rootfs_names else "<rootfs>"
        return f"one of the root filesystems the portal builds ({names}), e.g. ADD {example} /"

    def error(self, line: int, message: str) -> None:
        self.errors.append((line, f"line {line}: {message}"))

    def parse(self, text: str) -> Recipe:
        physical = text.splitlines()
        self._check_size(text, physical)
        if self.errors:
            raise RecipeError([message for _, message in self.errors])
        for line, instruction, args in _instructions(physical):
            if self.first_line is None:
                self.first_line = line
                if instruction != "FROM":
                    self.error(
                        line,
                        f"the recipe must start with FROM debian:<release> or FROM scratch (found {instruction} first).",
                    )
            handler = self.handlers.get(instruction)
            if handler is not None:
                try:
                    handler(line, args)
                except _Bad as bad:
                    self.error(line, f"{instruction} {bad}")
            elif instruction in UNSUPPORTED:
                self.error(line, f"{instruction} is not supported: {UNSUPPORTED[instruction]}. {ALLOWED}")
            else:
                self.error(line, f"unknown instruction {instruction}. {ALLOWED}")
        if self.first_line is None:
            self.error(
                1,
                "the recipe is empty: it needs FROM debian:<release> (e.g. FROM debian:bookworm) with "
                "PACKAGES, or FROM scratch, then ADD with " + self.rootfs_hint,
            )
        elif self.release and self.add_line is not None:
            self.error(
                self.add_line,
                f"ADD is for FROM scratch: a recipe FROM debian:{self.release} gets its files from Debian's "
                "packages; list them with PACKAGES name ...",
            )
        elif not self.release and self.packages_line is not None:
            self.error(
                self.packages_line,
                "PACKAGES needs a Debian release to install from: start with FROM debian:<release>, "
                "e.g. FROM debian:bookworm.",
            )
        elif not self.release and self.add_line is None and not self._from_failed:
            self.error(max(len(physical), 1), f"the recipe ends without ADD: it needs {self.rootfs_hint}")
        if self.errors:
            self.errors.sort(key=lambda item: item[0])
            raise RecipeError([message for _, message in self.errors])
        return Recipe(
            rootfs=self.rootfs,
            release=self.release,
            packages=tuple(sorted(self.packages)),
            env=tuple(self.env.items()),
            cmd=self.cmd,
            entrypoint=self.entrypoint,
            workdir=self.workdir,
            labels=tuple(self.labels.items()),
            exposed=tuple(self.exposed),
            user=self.user,
        )

    def _check_size(self, text: str, physical: list[str]) -> None:
        if len(text) > MAX_CHARS:
            line = text.count("\n", 0, MAX_CHARS) + 1
            self.error(
                line,
                f"the recipe is {len(text):,} characters long; at most {MAX_CHARS:,} are allowed "
                "(a recipe only describes the image, its files come from the root filesystem).",
            )
        if len(physical) > MAX_LINES:
            self.error(
                MAX_LINES + 1, f"the recipe has {len(physical)} lines; at most {MAX_LINES} are allowed."
            )
        for number, raw in enumerate(physical, start=1):
            found = CONTROL.search(raw.rstrip("\r"))
            if found:
                self.error(
                    number,
                    f"contains the control character U+{ord(found.group()):04X}; a recipe is plain text.",
                )

    _from_failed = False  # a bad FROM is the one message: no "ends without ADD" after it

    def _do_from(self, line: int, args: str) -> None:
        if line != self.first_line:
            raise _Bad(
                f"must come once, as the first instruction (the recipe starts on line {self.first_line})."
            )
        self._from_failed = True
        allowed = "Allowed: FROM debian:<release> (e.g. FROM debian:bookworm) or FROM scratch."
        words = _words(args)
        if not words:
            raise _Bad(f"needs a base. {allowed}")
        if words[0].startswith("--") or len(words) > 1:
            raise _Bad(f"takes one word (no --platform, no AS name). {allowed}")
        base = words[0]
        if base.startswith("debian:"):
            release = base.removeprefix("debian:")
            if not RELEASE.fullmatch(release):
                raise _Bad(f"{base} does not name a Debian release by its code name. {allowed}")
            self.release = release
        elif base != "scratch":
            raise _Bad(
                f"{base} is not supported: the portal builds images from Debian's packages or its own "
                f"root filesystems, not from another image. {allowed}"
            )
        self._from_failed = False

    def _do_packages(self, line: int, args: str) -> None:
        example = "e.g. PACKAGES openjdk-17-jre-headless tomcat10, or name=version to pin one"
        if self.packages_line is None:
            self.packages_line = line
        words = _words(args)
        if not words:
            raise _Bad(f"needs at least one Debian package name, {example}.")
        for word in words:
            match = PACKAGE.fullmatch(word)
            if not match:
                raise _Bad(
                    f"{word!r} is not a Debian package name (lowercase letters, digits and '+', '-', '.', "
                    f"starting with a letter or digit, at least two characters), {example}."
                )
            name = match.group(1)
            if any(p.partition("=")[0] == name for p in self.packages):
                raise _Bad(f"lists {name} twice; list each package once.")
            self.packages.append(word)
        if len(self.packages) > MAX_PACKAGES:
            raise _Bad(
                f"lists {len(self.packages)} packages; at most {MAX_PACKAGES} are allowed (their dependencies "
                "come with them)."
            )

    def _do_add(self, line: int, args: str) -> None:
        if self.add_line is not None:
            raise _Bad(
                f"may appear only once: a recipe has one root filesystem (the first ADD is on line {self.add_line})."
            )
        self.add_line = line
        words = _words(args)
        options = [word for word in words if word.startswith("--")]
        if options:
            raise _Bad(
                f"takes no options ({options[0]}): the root filesystem is added as built. Allowed: ADD with {self.rootfs_hint}"
            )
        if len(words) != 2 or words[0] not in self.rootfs_names:
            raise _Bad(f"needs {self.rootfs_hint}")
        if words[1] != "/":
            raise _Bad(f"puts the root filesystem at /, not at {words[1]}: write ADD {words[0]} /")
        self.rootfs = words[0]

    def _do_env(self, line: int, args: str) -> None:
        example = "e.g. ENV LANG=C.UTF-8"
        words = _words(args)
        if not words:
            raise _Bad(f"needs KEY=VALUE, {example}.")
        if "=" in words[0]:
            pairs = _pairs(words, example)
        else:
            # The legacy form: ENV KEY the rest of the line is the value.
            parts = args.strip().split(maxsplit=1)
            if len(parts) < 2:
                raise _Bad(f"{words[0]} has no value: write KEY=VALUE, {example}.")
            pairs = [(parts[0], _words(parts[1], split=False)[0])]
        for key, value in pairs:
            if not ENV_KEY.fullmatch(key):
                raise _Bad(
                    f"name {key!r} is not allowed: use letters, digits and '_', not starting with a digit, "
                    f"{example}."
                )
            # Docker replaces a variable where it was first set; so do we.
            self.env[key] = value

    def _do_label(self, line: int, args: str) -> None:
        example = "e.g. LABEL io.slipway.base-image=busybox"
        words = _words(args)
        if not words:
            raise _Bad(f"needs key=value pairs, {example}.")
        for key, value in _pairs(words, example):
            if not LABEL_KEY.fullmatch(key):
                raise _Bad(
                    f"key {key!r} is not allowed: use letters, digits, '.', '-', '_' and '/', starting with "
                    f"a letter or digit, at most 128 characters, {example}."
                )
            if key == RESERVED_LABEL:
                raise _Bad(f"{key} is set by the portal to the image's reference; choose another key.")
            self.labels[key] = value

    def _do_cmd(self, line: int, args: str) -> None:
        self.cmd = _argv("CMD", args, '["/bin/sh"]')

    def _do_entrypoint(self, line: int, args: str) -> None:
        self.entrypoint = _argv("ENTRYPOINT", args, '["/usr/bin/python3", "-m", "http.server"]')

    def _do_workdir(self, line: int, args: str) -> None:
        path = _words(args.strip(), split=False)[0] if args.strip() else ""
        if not path.startswith("/"):
            got = f" (got {path!r})" if path else ""
            raise _Bad(f"needs an absolute path, e.g. WORKDIR /srv/app{got}.")
        self.workdir = path

    def _do_expose(self, line: int, args: str) -> None:
        example = "e.g. EXPOSE 8080 or EXPOSE 8080/tcp"
        words = _words(args)
        if not words:
            raise _Bad(f"needs a port, {example}.")
        for word in words:
            match = PORT.fullmatch(word)
            if not match or not 1 <= int(match.group(1)) <= 65535:
                raise _Bad(f"takes single ports from 1 to 65535, {example} (got {word!r}).")
            protocol = (match.group(2) or "tcp").lower()
            if protocol != "tcp":
                raise _Bad(f"{word} is not supported: only tcp ports, {example}.")
            port = int(match.group(1))
            if port not in self.exposed:
                self.exposed.append(port)

    def _do_user(self, line: int, args: str) -> None:
        user = _words(args.strip(), split=False)[0] if args.strip() else ""
        if not USER.fullmatch(user):
            got = f" (got {user!r})" if user else ""
            raise _Bad(
                f"takes a user name or numeric uid, optionally :group, e.g. USER nobody or USER 65534{got}."
            )
        self.user = user


def _instructions(physical: list[str]) -> Iterator[tuple[int, str, str]]:
    """(line the instruction starts on, upper-cased instruction, its arguments), joining
    continuation lines the way Docker does: the backslash goes, the next line is appended as
    it is, and blank or comment lines inside a continuation are skipped."""
    start: int | None = None
    buffer = ""
    for number, raw in enumerate(physical, start=1):
        text = raw.rstrip("\r")
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if start is None:
            start, buffer, text = number, "", text.lstrip()
        continued = CONTINUATION.search(text)
        if continued:
            buffer += text[: continued.start()]
            continue
        buffer += text
        yield _split(start, buffer)
        start = None
    if start is not None:
        yield _split(start, buffer)


def _split(line: int, text: str) -> tuple[int, str, str]:
    instruction, *rest = text.strip().split(maxsplit=1)
    return line, instruction.upper(), rest[0].strip() if rest else ""


def _words(text: str, *, split: bool = True) -> list[str]:
    """Docker's word rules: blanks separate words (unless split is False: one word), '...'
    is literal, "..." allows \\" \\\\ \\$, a backslash outside quotes escapes the next
    character. Variables are refused rather than expanded: the portal keeps no build state."""
    words: list[str] = []
    current: list[str] = []
    in_word = False
    i = 0
    while i < len(text):
        char = text[i]
        if split and char in " \t":
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
            i += 1
            continue
        in_word = True
        if char == "\\":
            current.append(text[i + 1] if i + 1 < len(text) else char)
            i += 2
        elif char == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise _Bad("has an unterminated single quote.")
            current.append(text[i + 1 : end])
            i = end + 1
        elif char == '"':
            i += 1
            while True:
                if i >= len(text):
                    raise _Bad("has an unterminated double quote.")
                char = text[i]
                if char == '"':
                    i += 1
                    break
                if char == "\\" and i + 1 < len(text) and text[i + 1] in '"\\$':
                    current.append(text[i + 1])
                    i += 2
                    continue
                _refuse_variable(text, i)
                current.append(char)
                i += 1
        else:
            _refuse_variable(text, i)
            current.append(char)
            i += 1
    if in_word or not split:
        words.append("".join(current))
    return words


def _refuse_variable(text: str, i: int) -> None:
    if text[i] == "$" and i + 1 < len(text) and VARIABLE_START.match(text[i + 1]):
        name = re.match(r"\$(\{[^}]*\}?|[A-Za-z0-9_]+)", text[i:])
        shown = name.group() if name else "$"
        raise _Bad(
            f"uses a variable ({shown}), which the portal does not expand: write the value out, "
            "or \\$ for a literal dollar sign."
        )


def _pairs(words: list[str], example: str) -> list[tuple[str, str]]:
    pairs = []
    for word in words:
        key, equals, value = word.partition("=")
        if not equals:
            raise _Bad(f"{word} has no value: write key=value pairs, {example}.")
        if not key:
            raise _Bad(f"has an empty name in {word!r}: write key=value pairs, {example}.")
        pairs.append((key, value))
    return pairs


def _argv(instruction: str, args: str, example: str) -> tuple[str, ...]:
    hint = f"e.g. {instruction} {example}"
    try:
        value = json.loads(args)
    except ValueError:
        value = None
    if not isinstance(value, list):
        why = (
            "is not a valid JSON array (strings take double quotes)"
            if args.startswith("[")
            else "in shell form is not supported: images may have no shell"
        )
        raise _Bad(f"{why}. Allowed: the exec form, a JSON array of strings, {hint}.")
    if not value:
        raise _Bad(f"needs at least one string, {hint}.")
    if not all(isinstance(item, str) and item and "\x00" not in item for item in value):
        raise _Bad(f"items must be non-empty strings, {hint}.")
    return tuple(value)
