"""The portal's client of an image registry (the Registry HTTP API v2): the check ops get when
they save its settings, and the push of a built version.

A push sends what the portal built (`imagebuild`'s `docker load` archive): each layer gzipped
deterministically (mtime 0, fixed level, no file name: the same layer gives the same blob), the
config as it is, then a schema 2 manifest under the version's tag. The image ID on the hosts is
the config's digest whichever way it travels, so it is the version's digest either way. Blobs the
registry has are not sent again, and a tag that already names this config is left as it is.

Every error is a RegistryError whose message names the registry and is safe to show: it never
holds the password, and no request or header is logged here.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode, urljoin, urlsplit

import requests

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
# Level 1: a layer of a few hundred MB is compressed in seconds, once per version; the pull
# on a LAN gains little from a smaller blob.
GZIP_LEVEL = 1
CHUNK = 1024 * 1024
# Where the save-time check asks to start an upload (then cancels it): a repository under the
# portal's own namespace.
CHECK_REPOSITORY = "slipway/registry-check"


class RegistryError(Exception):
    """A registry refused or could not be reached; the message says which and why. `field`: the
    setting to change (url, ca_pem, username or password)."""

    def __init__(self, message: str, field: str = "url") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Access:
    """How to reach the registry: its https URL, credentials (opened only here) and CA."""

    url: str
    username: str = ""
    password: str = field(default="", repr=False)
    ca_pem: str = ""

    @property
    def hostport(self) -> str:
        return urlsplit(self.url).netloc


@dataclass(frozen=True)
class Pushed:
    reference: str  # host:port/name:tag
    manifest_digest: str
    config_digest: str
    sent: int  # bytes uploaded (0 when the registry had everything)
    skipped: bool  # the tag named this config already


# --- errors, said plainly ------------------------------------------------------------------------


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (requests wraps urllib3, which wraps the OSError)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for inner in (
            getattr(current, "reason", None),
            current.__cause__,
            current.__context__,
            *current.args,
        ):
            if isinstance(inner, BaseException):
                todo.append(inner)


def _unreachable(exc: requests.RequestException, url: str, timeout: float) -> RegistryError:
    causes = list(_causes(exc))
    for cause in causes:
        if isinstance(cause, ssl.SSLCertVerificationError):
            why = cause.verify_message or cause.reason or "certificate verify failed"
            return RegistryError(
                f"{url}: TLS verification failed ({why}); give the CA certificate that signed the "
                "registry's certificate, and use the name or address the certificate is for",
                field="ca_pem",
            )
    if isinstance(exc, requests.exceptions.SSLError):
        return RegistryError(f"{url}: the TLS handshake failed ({_short(exc)}); is it https on that port?")
    if isinstance(exc, requests.exceptions.Timeout) or any(isinstance(c, TimeoutError) for c in causes):
        return RegistryError(f"{url} did not answer within {timeout:g} s")
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return RegistryError(
            f"cannot reach {url}: connection refused (is the registry running and listening there?)"
        )
    if any(isinstance(c, socket.gaierror) for c in causes):
        return RegistryError(f"cannot reach {url}: the name {urlsplit(url).hostname} does not resolve")
    return RegistryError(f"cannot reach {url}: {_short(exc)}")


def _short(exc: BaseException) -> str:
    deepest = [c for c in _causes(exc) if isinstance(c, OSError) and str(c)]
    text = str(deepest[-1] if deepest else exc)
    return re.sub(r"\s+", " ", text)[:200]


def _refused(response: requests.Response, doing: str, url: str) -> RegistryError:
    detail = ""
    with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
        detail = response.json()["errors"][0]["message"]
    said = f": {detail}" if detail else ""
    return RegistryError(f"{url} refused to {doing} (HTTP {response.status_code}{said})")


# --- the client ----------------------------------------------------------------------------------


class Client:
    """Requests to one registry, signed in as its registry asks: HTTP basic, or a bearer token
    from the realm its challenge names (the token service most company registries run)."""

    def __init__(self, access: Access, timeout: float) -> None:
        self.access = access
        self.base = access.url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy from the environment, no ~/.netrc credentials
        self._ca_dir: str | None = None
        if access.ca_pem.strip():
            self._ca_dir = tempfile.mkdtemp(prefix="slipway-registry-ca-")
            ca_file = Path(self._ca_dir) / "ca.crt"
            ca_file.write_text(access.ca_pem)
            self.session.verify = str(ca_file)
        self._basic = False
        self._tokens: dict[str, str] = {}

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()
        if self._ca_dir:
            shutil.rmtree(self._ca_dir, ignore_errors=True)

    def _send(self, method: str, url: str, scope: str, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        try:
            for _ in range(2):
                if scope in self._tokens:
                    headers["Authorization"] = f"Bearer {self._tokens[scope]}"
                auth = (self.access.username, self.access.password) if self._basic else None
                data = kwargs.get("data")
                if data is not None and hasattr(data, "seek"):
                    data.seek(0)  # a body sent again after the sign-in
                response = self.session.request(
                    method,
                    url,
                    headers=headers,
                    auth=auth,
                    timeout=self.timeout,
                    allow_redirects=True,
                    **kwargs,
                )
                if response.status_code != 401 or not self._sign_in(response, scope):
                    return response
            return response
        except requests.RequestException as exc:
            raise _unreachable(exc, self.access.url, self.timeout) from None

    def _sign_in(self, response: requests.Response, scope: str) -> bool:
        """Take up the registry's challenge once; False when there is nothing more to try."""
        challenge = response.headers.get("WWW-Authenticate", "")
        kind, _, params = challenge.partition(" ")
        if not self.access.username:
            return False
        if kind.lower() == "basic" and not self._basic:
            self._basic = True
            return True
        if kind.lower() == "bearer" and scope not in self._tokens:
            self._tokens[scope] = self._token(dict(re.findall(r'(\w+)="([^"]*)"', params)), scope)
            return True
        return False

    def _token(self, challenge: dict[str, str], scope: str) -> str:
        realm = challenge.get("realm", "")
        if not realm.startswith("https://"):
            raise RegistryError(
                f"{self.access.url} sends sign-in to {realm or 'nowhere'}, not an https address"
            )
        query = {"service": challenge.get("service", "")}
        if scope:
            query["scope"] = scope
        try:
            answer = self.session.get(
                f"{realm}?{urlencode(query)}",
                auth=(self.access.username, self.access.password),
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise _unreachable(exc, realm, self.timeout) from None
        if answer.status_code in (401, 403):
            raise RegistryError(self.rejected(), field="password")
        if answer.status_code != 200:
            raise _refused(answer, "sign in", realm)
        document = answer.json()
        token = document.get("token") or document.get("access_token")
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{realm} answered without a token")
        return token

    def rejected(self) -> str:
        return f"the registry {self.access.url} rejects the credentials for user {self.access.username}"

    # --- what the portal asks ------------------------------------------------------------------

    def ping(self) -> None:
        """GET /v2/: a registry that lets us in (anonymous, or with the credentials)."""
        response = self._send("GET", f"{self.base}/v2/", "")
        if response.status_code == 401:
            if not self.access.username:
                raise RegistryError(
                    f"the registry {self.access.url} asks for credentials: give a username and password",
                    field="username",
                )
            raise RegistryError(self.rejected(), field="password")
        if response.status_code != 200:
            raise RegistryError(
                f"{self.access.url} does not answer as a Docker registry "
                f"(HTTP {response.status_code} for /v2/; the URL is the registry's root, https://host:port)"
            )

    def check_push(self, repository: str = CHECK_REPOSITORY) -> None:
        """Start a blob upload and cancel it: the user may push (nothing is stored)."""
        scope = f"repository:{repository}:pull,push"
        response = self._send("POST", f"{self.base}/v2/{repository}/blobs/uploads/", scope)
        if response.status_code in (401, 403):
            raise RegistryError(
                f"user {self.access.username or '(anonymous)'} may not push to {self.access.url} "
                f"(HTTP {response.status_code} when starting an upload to {repository})",
                field="username",
            )
        if response.status_code != 202:
            raise _refused(response, f"start an upload to {repository}", self.access.url)
        location = response.headers.get("Location", "")
        if location:
            with contextlib.suppress(RegistryError):
                self._send("DELETE", urljoin(f"{self.base}/", location), scope)

    def has_blob(self, repository: str, digest: str) -> bool:
        scope = f"repository:{repository}:pull,push"
        response = self._send("HEAD", f"{self.base}/v2/{repository}/blobs/{digest}", scope)
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise _refused(response, f"say whether it has {digest} in {repository}", self.access.url)

    def put_blob(self, repository: str, digest: str, body: IO[bytes] | bytes, size: int) -> None:
        scope = f"repository:{repository}:pull,push"
        started = self._send("POST", f"{self.base}/v2/{repository}/blobs/uploads/", scope)
        if started.status_code != 202:
            raise _refused(started, f"start an upload to {repository}", self.access.url)
        location = urljoin(f"{self.base}/", started.headers.get("Location", ""))
        joiner = "&" if "?" in location else "?"
        done = self._send(
            "PUT",
            f"{location}{joiner}{urlencode({'digest': digest})}",
            scope,
            data=body,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        )
        if done.status_code != 201:
            raise _refused(done, f"take the blob {digest} for {repository}", self.access.url)

    def manifest(self, repository: str, tag: str) -> dict[str, Any] | None:
        scope = f"repository:{repository}:pull,push"
        response = self._send(
            "GET", f"{self.base}/v2/{repository}/manifests/{tag}", scope, headers={"Accept": MANIFEST_V2}
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise _refused(response, f"give the manifest of {repository}:{tag}", self.access.url)
        try:
            document = response.json()
        except ValueError:
            return None
        return {**document, "_digest": response.headers.get("Docker-Content-Digest", "")}

    def put_manifest(self, repository: str, tag: str, body: bytes) -> str:
        scope = f"repository:{repository}:pull,push"
        response = self._send(
            "PUT",
            f"{self.base}/v2/{repository}/manifests/{tag}",
            scope,
            data=body,
            headers={"Content-Type": MANIFEST_V2},
        )
        if response.status_code != 201:
            raise _refused(response, f"take the manifest of {repository}:{tag}", self.access.url)
        return response.headers.get("Docker-Content-Digest") or f"sha256:{hashlib.sha256(body).hexdigest()}"


def check(access: Access, timeout: float) -> None:
    """What ops hear at save time: the registry answers over TLS with the given CA, takes the
    credentials, and lets them push. RegistryError says what is wrong."""
    with Client(access, timeout) as client:
        client.ping()
        client.check_push()


# --- push ----------------------------------------------------------------------------------------


def _archive_parts(archive: tarfile.TarFile) -> tuple[bytes, list[str]]:
    """The config and the layer members of a `docker load` archive with one image."""
    member = archive.extractfile("manifest.json")
    if member is None:
        raise RegistryError("the image archive has no manifest.json")
    entries = json.loads(member.read())
    if not isinstance(entries, list) or len(entries) != 1:
        raise RegistryError("the image archive does not hold exactly one image")
    config_member = archive.extractfile(entries[0]["Config"])
    if config_member is None:
        raise RegistryError("the image archive has no config")
    return config_member.read(), list(entries[0]["Layers"])


class _HashingWriter:
    """Writes through to a file and hashes and counts what went by."""

    def __init__(self, into: IO[bytes]) -> None:
        self.into = into
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.into.write(data)

    def flush(self) -> None:
        self.into.flush()


def _gzip_layer(source: IO[bytes], into: IO[bytes]) -> tuple[str, int]:
    """The layer gzipped deterministically into `into`: (its digest, its size)."""
    sink = _HashingWriter(into)
    with gzip.GzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=sink, mtime=0) as zipped:
        while chunk := source.read(CHUNK):
            zipped.write(chunk)
    return f"sha256:{sink.digest.hexdigest()}", sink.size


def push(
    access: Access,
    archive_path: Path,
    repository: str,
    tag: str,
    *,
    timeout: float,
    work_dir: Path,
    on_progress: Callable[[str], None] | None = None,
) -> Pushed:
    """Push the version in `archive_path` as host:port/repository:tag; what was done."""
    said = on_progress or (lambda _: None)
    reference = f"{access.hostport}/{repository}:{tag}"
    with Client(access, timeout) as client, tarfile.open(archive_path, "r:") as archive:
        config, layer_names = _archive_parts(archive)
        config_digest = f"sha256:{hashlib.sha256(config).hexdigest()}"
        there = client.manifest(repository, tag)
        if there is not None and (there.get("config") or {}).get("digest") == config_digest:
            return Pushed(reference, str(there.get("_digest", "")), config_digest, 0, skipped=True)
        sent = 0
        layers: list[dict[str, Any]] = []
        for name in layer_names:
            source = archive.extractfile(name)
            if source is None:
                raise RegistryError(f"the image archive lacks its layer {name}")
            fd, tmp = tempfile.mkstemp(prefix=".layer-", suffix=".gz", dir=work_dir)
            try:
                with os.fdopen(fd, "w+b") as blob:
                    said(f"compressing layer {len(layers) + 1} of {len(layer_names)}")
                    digest, size = _gzip_layer(source, blob)
                    if client.has_blob(repository, digest):
                        said(f"the registry has layer {len(layers) + 1} already")
                    else:
                        said(f"sending layer {len(layers) + 1} ({size} bytes)")
                        blob.seek(0)
                        client.put_blob(repository, digest, blob, size)
                        sent += size
            finally:
                Path(tmp).unlink(missing_ok=True)
            layers.append({"mediaType": LAYER_GZIP, "size": size, "digest": digest})
        if not client.has_blob(repository, config_digest):
            client.put_blob(repository, config_digest, config, len(config))
            sent += len(config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_V2,
                "config": {"mediaType": CONFIG_V1, "size": len(config), "digest": config_digest},
                "layers": layers,
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        manifest_digest = client.put_manifest(repository, tag, manifest)
    return Pushed(reference, manifest_digest, config_digest, sent, skipped=False)
